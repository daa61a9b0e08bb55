"""The slurm_hooks Ansible role, run for real against this machine into a temporary tree: wrappers that
exec `clusterops hook X`, and the slurm.conf block between blockinfile markers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.slow
def test_role_installs_wrappers_and_slurm_conf_lines(tmp_path):
    if not PLAYBOOK.exists():
        pytest.skip("ansible-core not installed in the venv")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=test\nHealthCheckInterval=0\n")
    play = tmp_path / "play.yml"
    play.write_text(f"""- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: {REPO}/playbooks/roles/slurm_hooks
      vars:
        slurm_hooks_bin_dir: {tmp_path}/bin
        slurm_hooks_slurm_conf: {conf}
        slurm_hooks_clusterops: {Path(sys.executable).parent}/clusterops
        slurm_hooks_reconfigure: false
""")
    (tmp_path / "bin").mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "HOME": str(tmp_path),
    }
    r = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", str(play)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    text = conf.read_text()
    assert "Prolog=" + str(tmp_path / "bin/clusterops-prolog") in text
    assert "HealthCheckProgram=" + str(tmp_path / "bin/clusterops-healthcheck") in text
    assert "PropagateResourceLimitsExcept=MEMLOCK" in text
    wrapper = (tmp_path / "bin/clusterops-healthcheck").read_text()
    assert wrapper.strip().endswith("clusterops hook healthcheck")
    assert f"SLURM_CONF={conf}" in wrapper
    assert shutil.which("sh")
