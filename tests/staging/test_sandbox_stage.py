"""In the sandbox (real Slurm 22.05, real S3 endpoint): the daemon, run as Slurm jobs on node1 and node2,
stages a dataset from S3 onto each node's local root; a job naming the dataset passes the gate only
where it is READY."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from clusterops.slurm import SlurmClient
from tests.conftest import REPO, run_cli, wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

DATASET = "sbfw"


def finished(client: SlurmClient, job_id: int) -> bool:
    return client.job(job_id).state in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT")


@pytest.fixture(scope="module")
def staged(sandbox, tmp_path_factory):
    """The dataset in S3 with its manifest; the daemon run once on node1 and node2 as Slurm jobs."""
    import boto3

    sb, env = sandbox
    tmp = tmp_path_factory.mktemp("sbstage")
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    files = {f"shard_{i:05d}.ds": os.urandom(200_000 + i) for i in range(4)}
    files["shard_00000.ds.index"] = os.urandom(800)
    for rel, data in files.items():
        s3.put_object(
            Bucket="clusterops", Key=f"datasets/{DATASET}/data/{rel}", Body=data, ChecksumAlgorithm="CRC32C"
        )
    manifest = tmp / "manifest.json"
    r = run_cli("stage", "manifest", f"s3://clusterops/datasets/{DATASET}/data", "-o", str(manifest), env=env)
    assert r.returncode == 0, r.stderr
    s3.put_object(Bucket="clusterops", Key=f"datasets/{DATASET}/manifest.json", Body=manifest.read_bytes())

    job_env = {
        **env,
        "CLUSTEROPS_STAGING__DATASETS": f"{DATASET}=s3://clusterops/datasets/{DATASET}/manifest.json",
    }
    client = SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"], timeout=10)
    client.cmd.env = job_env  # sbatch exports the submitting environment to the job
    jobs = {}
    for node in ("node1", "node2"):
        out = tmp / f"daemon-{node}.out"
        script = f"#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m clusterops stage daemon --once\n"
        jobs[node] = (client.submit(["-w", node, "-o", str(out), "-J", "stage-daemon"], script=script), out)
    for node, (job_id, out) in jobs.items():
        wait_for(lambda j=job_id: finished(client, j), 120, f"daemon job on {node}")
        assert client.job(job_id).state == "COMPLETED", out.read_text() if out.exists() else "no output"
    yield sb, env, client, files, tmp
    for node in ("node1", "node2"):
        dest = sb.layout.node(node) / "nvme" / "datasets" / DATASET
        if dest.exists():
            run_cli("stage", "evict", str(dest), env=env)


def test_daemon_stages_s3_dataset_onto_two_nodes(staged):
    sb, env, client, files, tmp = staged
    for node in ("node1", "node2"):
        dest = sb.layout.node(node) / "nvme" / "datasets" / DATASET
        for rel, data in files.items():
            assert (dest / rel).read_bytes() == data, (node, rel)
        r = run_cli("stage", "status", "--dest", str(dest), "--json", env=env)
        (entry,) = json.loads(r.stdout)["datasets"]
        assert entry["ready"] is True and entry["files_verified"] == len(files)
        node_state = json.loads((sb.layout.node(node) / "state" / "staging" / f"{DATASET}.json").read_text())
        assert node_state["ready"] is True and node_state["bytes_total"] == sum(map(len, files.values()))
        assert "READY" in (tmp / f"daemon-{node}.out").read_text()
    for node in ("node3", "node4"):
        assert not (sb.layout.node(node) / "nvme" / "datasets" / DATASET).exists()


def test_gate_passes_only_where_the_dataset_is_ready(staged):
    """The gate as the prolog calls it, against a real job record that names the dataset in --comment:
    inside the job on node1 (READY) it passes; asked for the same job on node3 (not staged) it refuses."""
    from clusterops import config as config_mod
    from clusterops.staging import gate

    sb, env, client, files, tmp = staged
    out = tmp / "gate-node1.out"
    script = f"#!/bin/sh\ncd {REPO}\n{sys.executable} -m clusterops stage gate\necho rc=$?\nsleep 5\n"
    job_id = client.submit(["-w", "node1", "-o", str(out), "--comment", f"datasets={DATASET}"], script=script)
    wait_for(lambda: out.exists() and "rc=" in out.read_text(), 60, "the gate inside the job on node1")
    ok_text = out.read_text()
    assert "rc=0" in ok_text and f"READY: {DATASET}" in ok_text, ok_text

    cfg = config_mod.load(env=env)
    for node, expect_ok in (("node1", True), ("node2", True), ("node3", False)):
        prolog_env = {"SLURM_JOB_ID": str(job_id), "SLURMD_NODENAME": node, "SLURM_CONF": env["SLURM_CONF"]}
        ok, msg = gate.check_job_datasets(cfg, prolog_env)
        assert ok is expect_ok, msg
        if not expect_ok:
            assert f"not READY: {DATASET} (not staged here)" in msg
    wait_for(lambda: finished(client, job_id), 60, "the gate job to end")


def _prolog_uses_gate() -> bool:
    hook = Path(REPO) / "clusterops" / "cli" / "hook_cmd.py"
    return "check_job_datasets" in hook.read_text()


@pytest.mark.skipif(
    not _prolog_uses_gate(), reason="the Prolog (issue 3's hook_cmd.py) does not call the gate yet"
)
def test_prolog_runs_a_job_only_where_its_dataset_is_ready(staged):
    sb, env, client, files, tmp = staged
    out = tmp / "needs-ok.out"
    job_ok = client.submit(
        ["-w", "node2", "-o", str(out), "--comment", f"datasets={DATASET}"], script="#!/bin/sh\nhostname\n"
    )
    wait_for(lambda: finished(client, job_ok), 60, "job on a READY node")
    assert client.job(job_ok).state == "COMPLETED" and out.read_text().strip() == "node2"

    refused_out = tmp / "needs-bad.out"
    job_bad = client.submit(
        ["-w", "node4", "-o", str(refused_out), "--comment", f"datasets={DATASET}"],
        script="#!/bin/sh\nhostname\n",
    )
    try:
        # Refused by the prolog: the job never runs its script on node4.
        wait_for(
            lambda: client.job(job_bad).state != "PENDING" or client.job(job_bad).reason, 30, "a verdict"
        )
        time.sleep(3)
        assert not refused_out.exists() or "node4" not in refused_out.read_text()
        assert client.job(job_bad).state != "COMPLETED"
    finally:
        client.cancel(job_bad)
        node = client.node("node4")
        if node.drained or "DRAIN" in str(node.state).upper():
            client.resume("node4")
