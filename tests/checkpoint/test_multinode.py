"""Two sandbox nodes each hold half of a real 2-rank DCP save; each pushes what it holds from inside a
Slurm job on that node; S3 ends with one complete, verified checkpoint that pulls back whole."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterops.checkpoint import layout
from clusterops.slurm import SlurmClient
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.sandbox
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def dcp_save(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcp") / "step-200"
    subprocess.run([sys.executable, str(HERE / "dcp_save_2ranks.py"), str(out)], check=True, timeout=240)
    return out


def _run_on(client: SlurmClient, node: str, commands: list[str], out: Path, env: dict[str, str]) -> str:
    exports = "".join(f"export {k}='{env[k]}'\n" for k in ("CLUSTEROPS_CONFIG", "AWS_ENDPOINT_URL"))
    script = f"#!/bin/sh\nset -e\ncd {REPO}\n{exports}" + "".join(
        f"{sys.executable} -m clusterops {c}\n" for c in commands
    )
    job = client.submit(["-N", "1", "-w", node, "-o", str(out)], script=script)
    deadline = time.monotonic() + 120
    while client.job(job).state not in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT"):
        assert time.monotonic() < deadline, f"job {job} on {node} did not finish"
        time.sleep(0.5)
    text = out.read_text()
    assert client.job(job).state == "COMPLETED", text
    return text


def test_two_nodes_each_holding_half_a_dcp_checkpoint_make_one_verified_s3_checkpoint(
    sandbox, dcp_save, tmp_path
):
    sb, env = sandbox
    client = SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"], timeout=10)
    roots = {n: sb.layout.nodes / n / "nvme" / "checkpoints" for n in ("node1", "node2")}
    holds = {"node1": [".metadata", "__0_0.distcp"], "node2": ["__1_0.distcp"]}
    for node, names in holds.items():
        step = roots[node] / "step-200"
        shutil.rmtree(step, ignore_errors=True)
        step.mkdir(parents=True)
        for name in names:
            shutil.copy2(dcp_save / name, step / name)

    # node2 first: its part alone is not a checkpoint, so no manifest and no latest yet.
    commit2 = f"ckpt commit {roots['node2'] / 'step-200'} --step 200"
    out2 = _run_on(client, "node2", [commit2, "ckpt push"], tmp_path / "n2.out", env)
    assert "waiting for other nodes" in out2
    st = json.loads(run_cli("ckpt", "status", "--local", str(roots["node2"]), "--json", env=env).stdout)
    assert st["remote_latest"] is None

    commit1 = f"ckpt commit {roots['node1'] / 'step-200'} --step 200"
    out1 = _run_on(client, "node1", [commit1, "ckpt push"], tmp_path / "n1.out", env)
    assert "step 200: complete and verified" in out1

    for node in ("node1", "node2"):
        st = json.loads(run_cli("ckpt", "status", "--local", str(roots[node]), "--json", env=env).stdout)
        assert st["remote_latest"] == 200
        assert [(e["step"], e["uploaded"], e["verified"]) for e in st["local"]] == [(200, True, True)]

    dest = tmp_path / "pulled"
    run_cli("ckpt", "pull", "--dest", str(dest), env=env, check=True)
    pulled = layout.read_manifest(dest / "step-200")
    assert pulled.complete and pulled.parts == 2
    assert [f.path for f in pulled.files] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp"):
        assert (dest / "step-200" / name).read_bytes() == (dcp_save / name).read_bytes()
    assert layout.verify(dest / "step-200").ok
