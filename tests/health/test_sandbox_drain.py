"""Done-when, on a real Slurm cluster (a 2-node sandbox of our own, so we may change its config):
the periodic HealthCheckProgram drains exactly the node whose fixture shows a pending row remap,
with a tagged `clusterops: gpu:` reason; `health undrain` resumes it once healthy and leaves a node drained by
hand alone; a prolog failure requeues the job and drains the node with our reason."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from clusterops import config as config_mod
from clusterops.fsutil import atomic_write_json, atomic_write_text
from clusterops.health.fixture import FORMAT
from tests.conftest import SLURM_VERSIONS, _sandbox_possible, run_cli, wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"


def play(fx: Path, node: str, fixture: str) -> None:
    """Make `node`'s hardware look like tests/fixtures/nodes/<fixture>.json from its next run on."""
    atomic_write_json(fx / f"{node}.json", {"format": FORMAT, "base": str(NODES / f"{fixture}.json")})


def set_health(sb, **fields) -> None:
    path = sb.layout.clusterops_conf
    cfg = config_mod.load(path, env={})
    for key, value in fields.items():
        setattr(cfg.health, key, value)
    atomic_write_text(path, config_mod.dumps_toml(cfg), mode=0o600)


@pytest.fixture(scope="module", params=SLURM_VERSIONS)
def hsb(request):
    """A 2-node sandbox per Slurm version: drains and undrain are in the 22.05 compatibility subset."""
    reason = _sandbox_possible(request.param)
    if reason:
        pytest.fail(f"sandbox tests cannot run: {reason}")
    from clusterops.sandbox.cluster import Sandbox

    root = Path(tempfile.mkdtemp(prefix=f"co-health-{request.param}-", dir="/var/tmp"))
    sb = Sandbox(root)
    try:
        state = sb.up(nodes=2, timeout=90, slurm=request.param)
        fx = root / "fixtures"
        fx.mkdir()
        for node in ("node1", "node2"):
            play(fx, node, "healthy_p5")
        set_health(
            sb, profile="p5.48xlarge", fixture=f"{fx}/{{node}}.json", check_timeout_s=10.0, budget_s=20.0
        )
        env = {**os.environ, **sb.exports(state)}
        env.pop("SLURMD_NODENAME", None)
        yield sb, env, fx
    finally:
        sb.down()
        shutil.rmtree(root, ignore_errors=True)


def nodes(sb):
    return {n.name: n for n in sb._client().nodes()}


def undrain(env, *args):
    r = run_cli("health", "undrain", "--json", *args, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return {n["node"]: n for n in json.loads(r.stdout)["nodes"]}


def test_periodic_check_drains_only_the_bad_node_and_undrain_spares_manual_drains(hsb):
    sb, env, fx = hsb
    slurm = sb._client()
    assert all(n.usable for n in nodes(sb).values())
    play(fx, "node1", "row_remap_pending")
    # Nobody runs the hook here: slurmd's HealthCheckProgram (every 30 s) must find and drain node1.
    n1 = wait_for(
        lambda: (n := nodes(sb)["node1"]).drained and n, 90, "node1 drained by the periodic check", step=1
    )
    assert n1.reason.startswith("clusterops: gpu: GPU 3"), n1.reason
    assert "row remap pending" in n1.reason
    assert not nodes(sb)["node2"].drained
    events = [
        json.loads(line)
        for line in (sb.layout.node("node1") / "log" / "health.ndjson").read_text().splitlines()
    ]
    assert any(
        e["event"] == "drain" and e["hook"] == "healthcheck" and e["action"] == "drained" for e in events
    )

    slurm.drain("node2", "by hand: reseat the EFA cable")
    # Still failing: not resumed. Drained by hand: not even considered.
    assert undrain(env) == {"node1": undrain(env)["node1"]}
    assert undrain(env)["node1"]["action"] == "failing"
    assert undrain(env, "node2")["node2"]["action"] == "not-ours"

    play(fx, "node1", "healthy_p5")
    done = undrain(env)
    assert done["node1"]["action"] == "resumed", done
    after = nodes(sb)
    assert not after["node1"].drained
    assert after["node2"].drained and after["node2"].reason == "by hand: reseat the EFA cable"
    slurm.resume("node2")


def test_prolog_failure_requeues_the_job_and_drains_the_node(hsb):
    sb, env, fx = hsb
    slurm = sb._client()
    wait_for(lambda: all(n.usable for n in nodes(sb).values()), 30, "both nodes usable", step=1)
    # The periodic check looks only at `system` now, so the prolog is the one that finds the lost GPU.
    set_health(sb, healthcheck_checks=["system"])
    play(fx, "node2", "gpu_lost")
    job = slurm.submit(["-w", "node2", "-o", "/dev/null", "--wrap", "sleep 1"])
    try:
        n2 = wait_for(
            lambda: (n := nodes(sb)["node2"]).drained and n, 60, "node2 drained by the prolog", step=1
        )
        assert n2.reason.startswith("clusterops: gpu: GPU 5"), n2.reason
        # Slurm requeues it and holds it (launch_failed_requeued_held) until someone releases it.
        wait_for(
            lambda: (j := slurm.job(job)).restart_count >= 1 and j.state == "PENDING" and j,
            30,
            "job requeued",
            step=1,
        )
        events = (sb.layout.node("node2") / "log" / "health.ndjson").read_text()
        assert '"hook": "prolog"' in events and '"drained"' in events
    finally:
        slurm.cancel(job)
        play(fx, "node2", "healthy_p5")
        set_health(sb, healthcheck_checks=[])
    assert undrain(env)["node2"]["action"] == "resumed"


def set_staging(sb, **fields) -> None:
    path = sb.layout.clusterops_conf
    cfg = config_mod.load(path, env={})
    for key, value in fields.items():
        setattr(cfg.staging, key, value)
    atomic_write_text(path, config_mod.dumps_toml(cfg), mode=0o600)


def test_undrain_resumes_only_a_drain_clusterops_set_itself(hsb):
    """Checked after landing, exactly so: acting as node1 with a healthy fixture, a node drained by hand
    with reason `clusterops:x by hand` stays drained after `clusterops health undrain node1`, while a
    drain that `clusterops hook healthcheck` itself set on a failing fixture is resumed."""
    sb, env, fx = hsb
    slurm = sb._client()
    as_node1 = {**env, "SLURMD_NODENAME": "node1"}
    wait_for(lambda: all(n.usable for n in nodes(sb).values()), 30, "both nodes usable", step=1)
    play(fx, "node1", "healthy_p5")
    slurm.drain("node1", "clusterops:x by hand")
    try:
        done = undrain(as_node1, "node1")
        assert done["node1"]["action"] == "not-ours", done
        n1 = nodes(sb)["node1"]
        assert n1.drained and n1.reason == "clusterops:x by hand", n1
        # The hook, on a failing node already drained by a person, keeps the person's reason too.
        play(fx, "node1", "row_remap_pending")
        assert run_cli("hook", "healthcheck", env=as_node1, timeout=120).returncode == 2
        assert nodes(sb)["node1"].reason == "clusterops:x by hand"
    finally:
        play(fx, "node1", "healthy_p5")
        slurm.resume("node1")

    play(fx, "node1", "row_remap_pending")
    assert run_cli("hook", "healthcheck", env=as_node1, timeout=120).returncode == 2
    n1 = nodes(sb)["node1"]
    assert n1.drained and n1.reason.startswith("clusterops: gpu: GPU 3") and " #co1." in n1.reason, n1
    play(fx, "node1", "healthy_p5")
    done = undrain(as_node1, "node1")
    assert done["node1"]["action"] == "resumed", done
    assert not nodes(sb)["node1"].drained


def test_prolog_cancels_a_job_for_its_own_mistake_and_drains_only_for_the_node_s_fault(hsb):
    """A job naming a dataset nobody knows, or naming datasets badly, is cancelled with the reason in its
    AdminComment and the node stays up; a known dataset not READY on the node drains that node."""
    sb, env, fx = hsb
    slurm = sb._client()
    wait_for(lambda: all(n.usable for n in nodes(sb).values()), 30, "both nodes usable", step=1)
    set_staging(sb, datasets=["known=/nonexistent/known/manifest.json"])
    try:
        for comment, why in (
            ("datasets=nosuch", "names unknown dataset(s) nosuch"),
            ("datasets=../etc", "not valid"),
        ):
            job = slurm.submit(
                ["-w", "node1", "-o", "/dev/null", f"--comment={comment}", "--wrap", "sleep 30"]
            )
            wait_for(
                lambda j=job: slurm.job(j).state == "CANCELLED", 60, f"job with {comment} cancelled", step=1
            )
            record = slurm.cmd.scontrol("show", "job", "-o", str(job))
            assert f"AdminComment=clusterops prolog on node1: dataset gate: job {job}" in record
            assert why in record
            n1 = nodes(sb)["node1"]
            assert not n1.drained and n1.usable, n1

        job = slurm.submit(
            ["-w", "node2", "-o", "/dev/null", "--comment=datasets=known", "--wrap", "sleep 1"]
        )
        try:
            n2 = wait_for(
                lambda: (n := nodes(sb)["node2"]).drained and n, 60, "node2 drained by the prolog", step=1
            )
            assert n2.reason.startswith("clusterops: staging: dataset gate:") and " #co1." in n2.reason, n2
            assert "known (not staged here)" in n2.reason
        finally:
            slurm.cancel(job)
    finally:
        set_staging(sb, datasets=[])
    assert undrain(env, "node2")["node2"]["action"] == "resumed"
