"""The Ansible playbooks and systemd units we ship, checked with the tools an operator would run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
UNITS = sorted(p for p in (REPO / "systemd").glob("*") if p.suffix in (".service", ".timer"))


def _env():
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1"}


def test_playbook_syntax():
    r = subprocess.run(
        [BIN / "ansible-playbook", "-i", "localhost,", "--syntax-check", "site.yml"],
        cwd=REPO / "playbooks",
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ansible_lint_offline():
    r = subprocess.run(
        [BIN / "ansible-lint", "--offline", "--nocolor", "site.yml"],
        cwd=REPO / "playbooks",
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_there_are_units_to_verify():
    # Every daemon and timer clusterops ships must be verified below; an empty list would hide that.
    assert UNITS, "systemd/ holds no units"


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit_verifies(unit, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze missing (apt-get install systemd)")
    # Units point at the installed command; verify them against this checkout's command instead.
    for u in UNITS:
        text = u.read_text().replace("/opt/clusterops/.venv/bin/clusterops", str(BIN / "clusterops"))
        (tmp_path / u.name).write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        ln for ln in (r.stdout + r.stderr).splitlines() if str(tmp_path) in ln or "error" in ln.lower()
    ]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
