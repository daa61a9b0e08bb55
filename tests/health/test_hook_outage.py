"""The hooks against a slurmctld that does not answer (a sandbox of this module's own, its controller
SIGSTOPped): the prolog never drains a node for Slurm's outage nor for a job's bad comment, reads the
job's comment from SLURM_JOB_COMMENT without any Slurm call, and `ckpt sync` needs no Slurm at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterops.telemetry import read_events
from tests.conftest import REPO, SLURM_VERSIONS, ctld_pid, own_sandbox, run_cli, wait_for

pytestmark = pytest.mark.sandbox

SLURM_COMMANDS = ("scontrol", "squeue", "sinfo", "scancel", "sbatch", "srun")
# Each hook's Slurm call gives up after this (CLUSTEROPS_SLURM__TIMEOUT_S), so an outage costs seconds.
TRY_S = 3


@pytest.fixture(scope="module", params=SLURM_VERSIONS)
def cluster(request):
    """24.11 hands the prolog SLURM_JOB_COMMENT; 22.05 does not, so there the gate asks scontrol."""
    with own_sandbox(f"hookout-{request.param}", 2, slurm=request.param) as (sb, env):
        yield sb, env


@contextlib.contextmanager
def controller_stopped(sb):
    """slurmctld hung (SIGSTOP): it holds its socket, so clients connect and then wait for nothing."""
    pid = ctld_pid(sb)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def recording(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """Environment whose Slurm commands (PATH and [slurm] bin_dir) log each call to a file, then run
    the real command; and that file."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    calls = tmp_path / "slurm-calls"
    search = ":".join(p for p in (env.get("CLUSTEROPS_SLURM__BIN_DIR", ""), env.get("PATH", os.defpath)) if p)
    for cmd in SLURM_COMMANDS:
        real = shutil.which(cmd, path=search)
        assert real, f"{cmd} not found in {search}"
        (bin_dir / cmd).write_text(f'#!/bin/sh\necho "{cmd} $*" >> {calls}\nexec {real} "$@"\n')
        (bin_dir / cmd).chmod(0o755)
    path = f"{bin_dir}:{env.get('PATH', os.defpath)}"
    return {"PATH": path, "CLUSTEROPS_SLURM__BIN_DIR": str(bin_dir)}, calls


def client_for(env: dict[str, str]):
    """A client that runs the sandbox's own Slurm commands (its bin_dir, when the sandbox has one)."""
    from clusterops.slurm import SlurmClient

    bin_dir = env.get("CLUSTEROPS_SLURM__BIN_DIR", "")
    extra = {"bin_dir": bin_dir} if bin_dir else {}
    return SlurmClient(env["SLURM_CONF"], timeout=15, **extra)


def hook_env(env: dict[str, str], tmp_path: Path, node: str, job_id: int, **extra: str) -> dict[str, str]:
    rec, _ = recording(tmp_path, env)
    return {
        **{k: v for k, v in env.items() if not k.startswith("SLURM_JOB_")},
        **rec,
        "CLUSTEROPS_SLURM__TIMEOUT_S": str(TRY_S),
        "SLURMD_NODENAME": node,
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_USER": "root",
        "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
        **extra,
    }


def node_events(sb, node: str, kind: str, job) -> list[dict]:
    log = sb.root / "nodes" / node / "log" / "health.ndjson"
    return [e for e in read_events(log) if e["event"] == kind and e.get("job") == str(job)]


def run_prolog(env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "clusterops", "hook", "prolog"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r, time.monotonic() - t0


def test_prolog_with_job_comment_makes_no_slurm_call(cluster, tmp_path):
    sb, env = cluster
    penv = hook_env(env, tmp_path, "node1", 90001, SLURM_JOB_COMMENT="run 7; no data needed")
    calls = tmp_path / "slurm-calls"
    with controller_stopped(sb):
        r, seconds = run_prolog(penv)
    assert r.returncode == 0, r.stderr
    # Any Slurm call would have waited out its timeout against the hung controller.
    assert seconds < TRY_S, f"prolog took {seconds:.1f}s: it waited on Slurm"
    assert not calls.exists(), calls.read_text()
    (ev,) = node_events(sb, "node1", "staging_gate", 90001)
    assert ev["ok"] and ev["outcome"] == "pass" and ev["comment_from"] == "env" and ev["slurm_calls"] == 0


def test_prolog_during_outage_without_comment_starts_the_job_and_alerts(cluster, tmp_path):
    """22.05's prolog has no SLURM_JOB_COMMENT: the gate must ask slurmctld, which is hung. One try,
    one retry, then exit 0 (a non-zero prolog would drain the node) with an alert event."""
    sb, env = cluster
    penv = hook_env(env, tmp_path, "node1", 90002)
    with controller_stopped(sb):
        r, seconds = run_prolog(penv)
    assert r.returncode == 0, r.stderr
    assert seconds < 2 * TRY_S + 1 + 10, seconds  # two bounded tries, a pause, start-up
    (ev,) = node_events(sb, "node1", "staging_gate", 90002)
    assert ev["outcome"] == "unknown" and ev["alert"] is True and ev["slurm_calls"] == 2, ev
    assert "job allowed to start unchecked" in r.stderr
    calls = (tmp_path / "slurm-calls").read_text().splitlines()
    assert calls == ["scontrol show job -o 90002"] * 2, calls
    assert not node_events(sb, "node1", "drain", 90002)


def test_prolog_drains_nothing_when_the_controller_hangs_mid_prolog(cluster, tmp_path):
    """End to end: slurmd runs the real prolog; slurmctld hangs while it runs; the job still runs and
    the node stays in service."""
    sb, env = cluster
    client = client_for(env)
    prolog = sb.root / "bin" / "prolog"
    original = prolog.read_text()
    hold, waiting = tmp_path / "hold", tmp_path / "waiting"
    hold.touch()
    # The same prolog, made to wait until the test has stopped the controller (only while `hold` exists).
    prolog.write_text(
        original.replace(
            "exec ",
            f"export CLUSTEROPS_SLURM__TIMEOUT_S={TRY_S}\n"
            f"if [ -e {hold} ]; then touch {waiting}; while [ -e {hold} ]; do sleep 0.1; done; fi\n"
            "unset SLURM_JOB_COMMENT\n"  # as on 22.05, whatever this sandbox runs
            "exec ",
            1,
        )
    )
    out = tmp_path / "job.out"
    try:
        job = client.submit(
            ["-w", "node2", "-o", str(out)], script="#!/bin/sh\necho ran on $SLURMD_NODENAME\n"
        )
        wait_for(waiting.exists, 60, "the prolog to start")
        with controller_stopped(sb):
            hold.unlink()
            wait_for(lambda: node_events(sb, "node2", "staging_gate", job), 60, "the gate's verdict")
        (ev,) = node_events(sb, "node2", "staging_gate", job)
        assert ev["outcome"] == "unknown" and ev["alert"] is True, ev
        wait_for(lambda: client.job(job).state == "COMPLETED", 60, "the job to run and complete")
        # The job's own output first; Slurm may add its note that the prolog took long
        # ("slurmstepd-node2: error: Prolog hung on node node2"), which is no drain.
        assert out.read_text().splitlines()[0] == "ran on node2", out.read_text()
        node = client.node("node2")
        assert not node.drained and node.usable, node
    finally:
        hold.unlink(missing_ok=True)
        prolog.write_text(original)


def test_a_bad_dataset_comment_fails_the_job_not_the_node(cluster, tmp_path):
    sb, env = cluster
    client = client_for(env)
    out = tmp_path / "bad.out"
    job = client.submit(
        ["-w", "node1", "-o", str(out), "--comment", "datasets=../etc"], script="#!/bin/sh\necho ran\n"
    )
    wait_for(lambda: client.job(job).state == "CANCELLED", 60, "the job to be cancelled by the prolog")
    (ev,) = node_events(sb, "node1", "job_failed", job)
    assert ev["job"] == str(job) and "dataset name '../etc' is not valid" in ev["reason"], ev
    time.sleep(1)
    node = client.node("node1")
    assert not node.drained and node.usable, node
    assert not out.exists() or "ran" not in out.read_text()
    shown = client.cmd.scontrol("show", "job", "-o", str(job))
    assert "AdminComment=clusterops prolog on node1" in shown, shown


def test_ckpt_sync_runs_through_a_slurm_outage(cluster, s3, tmp_path):
    """The checkpoint sync makes no Slurm call: with the controller hung it pushes as usual."""
    from clusterops.checkpoint import layout

    sb, env = cluster
    step = tmp_path / "L" / "step-5"
    step.mkdir(parents=True)
    (step / ".metadata").write_bytes(os.urandom(3000))
    (step / "__0_0.distcp").write_bytes(os.urandom(200_000))
    layout.commit(step, 5)
    conf = tmp_path / "c.toml"
    conf.write_text(
        f'[paths]\nstate_dir = "{tmp_path}/state"\nlog_dir = "{tmp_path}/log"\n'
        f'[checkpoint]\nlocal_root = "{tmp_path}/L"\n[s3]\nbucket = "test"\n'
    )
    rec, calls = recording(tmp_path, env)
    cenv = {
        **os.environ,
        **rec,
        "SLURM_CONF": env["SLURM_CONF"],
        "CLUSTEROPS_CONFIG": str(conf),
        "CLUSTEROPS_NODE": "node1",
    }
    with controller_stopped(sb):
        r = run_cli("ckpt", "sync", "--remote", "s3://test/outage", env=cenv, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "step 5: complete and verified" in r.stdout, r.stdout
    assert not calls.exists(), calls.read_text()
