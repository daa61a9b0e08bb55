"""The warm-spare manager against the real sandbox cluster: real drains, reservations, requeues."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from clusterops.slurm import SlurmClient
from clusterops.spare.manager import Recovery, SpareManager, WatchState
from clusterops.spare.warmth import Warmth
from clusterops.telemetry import read_events
from tests.conftest import wait_for

pytestmark = pytest.mark.sandbox

# The warm command the tests use: publish a finished, healthy warm-up (the real warm-here needs the
# staging, checkpoint and health commands; its own test covers it).
FAKE_WARM = (
    "import os, time, json, subprocess;"
    "n=os.environ['SLURMD_NODENAME'];"
    "w='clusterops-warmth '+json.dumps({'state':'warm','datasets_ready':True,'ckpt_step':7,'health':0,"
    "'updated':time.time(),'warm_since':time.time()});"
    "subprocess.run(['scontrol','update','NodeName='+n,'Extra='+w],check=True)"
)


@pytest.fixture
def cluster(request, tmp_path):
    """The session sandbox (Slurm 24.11) with a training reservation; `sandbox_2205` by indirect
    parametrisation for the compatibility failover."""
    sb, env = request.getfixturevalue(getattr(request, "param", "sandbox"))
    client = SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"], timeout=15)
    mgr = SpareManager(
        client,
        "train-t",
        "",
        tmp_path / "state",
        tmp_path / "events.ndjson",
        tmp_path / "textfile",
        min_spares=1,
        warm_command=[sys.executable, "-c", FAKE_WARM],
    )
    client.create_reservation("train-t", ["node1", "node2"])
    yield sb, client, mgr, tmp_path
    for j in client.jobs():
        if j.active:
            client.cancel(j.job_id)
    for r in client.reservations():
        client.delete_reservation(r.name)
    for n in client.nodes():
        if not n.responding or n.state == "down":
            sb.revive_node(n.name)
    for n in client.nodes():
        if n.drained:
            client.resume(n.name)
        if n.extra:
            client.set_extra(n.name, "")
    wait_for(lambda: all(n.usable and n.state == "idle" for n in client.nodes()), 30, "all nodes idle again")


def submit_protected(client, tmp_path) -> int:
    script = (
        "#!/bin/sh\necho start $SLURM_RESTART_COUNT $SLURM_JOB_NODELIST\n"
        "srun sh -c 'echo up $SLURMD_NODENAME; exec sleep 300'\n"
    )
    job = client.submit(
        [
            "-N",
            "2",
            "--reservation=train-t",
            "-J",
            "train",
            "-o",
            str(tmp_path / "job.out"),
            "--open-mode=append",
        ],
        script=script,
    )
    # RUNNING comes at allocation; a node killed before the step reaches it fails the launch (and the
    # script), which is not the failure under test. Wait for the step's tasks on both nodes.
    out = tmp_path / "job.out"
    wait_for(lambda: client.job(job).state == "RUNNING", 30, "job running")
    wait_for(lambda: out.exists() and out.read_text().count("up node") >= 2, 30, "the step on both nodes")
    return job


def run_watch(mgr, until, timeout):
    stop = threading.Event()
    errors = []
    t = threading.Thread(
        target=mgr.watch, kwargs={"stop": stop.is_set, "poll_s": 0.5, "on_error": errors.append}
    )
    t.start()
    try:
        return wait_for(until, timeout, "watcher outcome")
    finally:
        stop.set()
        t.join(30)


def events(tmp_path, kind):
    return [e for e in read_events(tmp_path / "events.ndjson") if e["event"] == f"spare.{kind}"]


@pytest.mark.parametrize("cluster", ["sandbox", "sandbox_2205"], indirect=True)
def test_dead_node_swapped_for_warm_spare_and_job_runs_on_it(cluster):
    sb, client, mgr, tmp = cluster
    mgr.add("node3")
    wait_for(lambda: Warmth.decode(client.node("node3").extra).state == "warm", 30, "node3 warm")
    job = submit_protected(client, tmp)
    wait_for(lambda: client.job(job).state == "RUNNING", 30, "job running")
    sb.kill_node("node2")
    run_watch(mgr, lambda: events(tmp, "job_running"), 90)
    running = client.job(job)
    assert running.state == "RUNNING" and sorted(running.nodes) == ["node1", "node3"]
    assert running.restart_count >= 1
    node2 = client.node("node2")
    assert node2.drained and node2.reason.startswith("clusterops: spare:")
    assert sorted(client.reservation("train-t").nodes) == ["node1", "node3"]
    (ev,) = events(tmp, "job_running")
    assert ev["on_spare"] and ev["seconds_from_detection"] > 0
    # A new spare is taken from the idle pool and warmed: node4 is the only idle node left.
    wait_for(
        lambda: (
            client.reservation("train-t-spare") and client.reservation("train-t-spare").nodes == ["node4"]
        ),
        30,
        "node4 becomes the new spare",
    )
    prom = (tmp / "textfile" / "clusterops_spare.prom").read_text()
    assert "clusterops_spare_failovers_total 1" in prom
    # The dead node was marked DOWN at once (Slurm stops waiting on it) and drained as well, so when
    # its slurmd registers again it stays out of service until someone clears it.
    (down,) = events(tmp, "marked_down")
    assert down["node"] == "node2" and down["reason"].startswith("clusterops: spare:")
    sb.revive_node("node2")
    back = client.node("node2")
    assert back.responding and back.drained and back.reason.startswith("clusterops: spare:"), back


def test_health_drain_then_second_failure_uses_the_rewarmed_spare(cluster):
    sb, client, mgr, tmp = cluster
    mgr.add("node3")
    wait_for(lambda: Warmth.decode(client.node("node3").extra).state == "warm", 30, "node3 warm")
    job = submit_protected(client, tmp)
    wait_for(lambda: client.job(job).state == "RUNNING", 30, "job running")
    client.drain("node1", "clusterops: gpu: row remap pending on GPU 3")
    run_watch(mgr, lambda: events(tmp, "job_running"), 60)
    assert sorted(client.job(job).nodes) == ["node2", "node3"]
    # The watcher warmed node4 as the next spare; a second failure swaps it in.
    wait_for(lambda: Warmth.decode(client.node("node4").extra).state == "warm", 60, "node4 warm")
    client.drain("node2", "clusterops: efa: rx_drops rising")
    run_watch(mgr, lambda: len(events(tmp, "job_running")) == 2, 60)
    assert sorted(client.job(job).nodes) == ["node3", "node4"]
    assert (
        client.node("node1").reason == "clusterops: gpu: row remap pending on GPU 3"
    )  # kept, not overwritten


def test_spare_that_failed_health_is_skipped(cluster):
    sb, client, mgr, tmp = cluster
    mgr.add("node3", warm=False)
    mgr.add("node4", warm=False)
    client.set_extra("node3", Warmth(state="failed", health=2, detail="health: gpu: ecc").encode())
    client.set_extra("node4", Warmth(state="warm", health=0, datasets_ready=True, ckpt_step=5).encode())
    spare = mgr.replace("node2", "maintenance")
    assert spare == "node4"
    mgr.tick()
    assert client.node("node3").drained  # a spare that fails its health check is not a spare
    assert client.reservation("train-t-spare") is None
    assert sorted(client.reservation("train-t").nodes) == ["node1", "node4"]


def test_no_spare_alerts_and_still_requeues(cluster):
    sb, client, mgr, tmp = cluster
    mgr.min_spares = 0
    client.create_reservation("other", ["node3", "node4"])  # nothing idle to warm
    job = submit_protected(client, tmp)
    wait_for(lambda: client.job(job).state == "RUNNING", 30, "job running")
    client.drain("node2", "clusterops: xid: 79")
    mgr.tick()
    assert events(tmp, "no_spare_available") and events(tmp, "no_spare_available")[0]["alert"]
    wait_for(lambda: client.job(job).restart_count >= 1, 30, "job requeued")
    assert client.reservation("train-t").nodes == ["node1"]


def test_spare_still_warming_is_swapped_in_one_pass(cluster):
    """A failure while the spare's (re-)warm job runs: the watcher cancels it and swaps the spare in in
    the same pass. The warm job keeps the spare reservation "in use" for a moment after its cancel;
    that used to fail the failover (watch_error) and redo it a tick later."""
    sb, client, mgr, tmp = cluster
    mgr.add("node3")
    wait_for(lambda: Warmth.decode(client.node("node3").extra).state == "warm", 30, "node3 warm")
    job = submit_protected(client, tmp)
    # A warm-up that takes its time to stop (as `spare warm-here` does mid-pull): Slurm's KillWait passes
    # before it is gone, and the reservation stays "in use" meanwhile.
    slow_to_stop = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    mgr.warm_command = [sys.executable, "-c", slow_to_stop]
    rewarm = mgr.warm("node3")
    wait_for(lambda: client.job(rewarm).state == "RUNNING", 30, "the re-warm job running on node3")
    queued = mgr.warm("node3")  # a second re-warm, pending behind the first: it holds the reservation too
    wait_for(lambda: client.job(queued).state == "PENDING", 30, "the second re-warm queued")
    sb.kill_node("node2")
    run_watch(mgr, lambda: events(tmp, "job_running"), 90)
    assert sorted(client.job(job).nodes) == ["node1", "node3"]
    assert not client.job(rewarm).active and not client.job(queued).active
    assert events(tmp, "watch_error") == []
    assert len(events(tmp, "failure_detected")) == 1


def test_job_the_failure_ended_is_requeued_and_runs_again(cluster):
    """A recovery whose job the failure already ended (FAILED: its batch script exited when srun lost the
    node, before Slurm's requeue held): the watcher requeues the finished job and it runs again. The
    recovery comes from the watcher's saved state, as after a watcher restart mid-failover."""
    sb, client, mgr, tmp = cluster
    client.set_reservation_nodes("train-t", ["node1"])
    # The first run exits 1 (as a batch script does when srun loses a node); a rerun stays up.
    script = (
        '#!/bin/sh\necho start "${SLURM_RESTART_COUNT:-0}"\n'
        '[ -n "$SLURM_RESTART_COUNT" ] || exit 1\nexec sleep 300\n'
    )
    opts = [
        "-N",
        "1",
        "--reservation=train-t",
        "-J",
        "train",
        "-o",
        str(tmp / "job.out"),
        "--open-mode=append",
    ]
    job = client.submit(opts, script=script)
    wait_for(lambda: client.job(job).state == "FAILED", 30, "the first run to fail")
    mgr._save(WatchState(recoveries=[Recovery(job, "node2", None, time.time())]))
    run_watch(mgr, lambda: events(tmp, "job_running"), 60)
    again = client.job(job)
    assert again.state == "RUNNING" and again.nodes == ["node1"] and again.restart_count >= 1
    assert [e["after"] for e in events(tmp, "requeued")] == ["FAILED"]
    # RUNNING comes before the script's first line: wait for the rerun's own words.
    wait_for(
        lambda: (tmp / "job.out").read_text().split() == ["start", "0", "start", "1"],
        30,
        "the rerun's output after the first run's",
    )
    assert events(tmp, "recovery_ended") == []


def test_a_node_slurm_calls_not_responding_for_a_moment_is_not_failed_over(cluster):
    """Slurm's own 'Not responding' DOWN on a node that does answer: Slurm 24.11 returns it on a
    ping's answer, as after its sub-second flips (22.05 keeps such a node DOWN, and then it is failed
    over on the second read). The watcher reads it again confirm_s later and leaves it be. (A node
    that stays silent is failed over: the dead-node test above.)"""
    sb, client, mgr, tmp = cluster
    mgr.min_spares = 0
    # Slurm returns it on a ping's answer, and pings a node not heard from for SlurmdTimeout/3 s: a
    # confirm read a whole SlurmdTimeout later comes after that. (Its own flips last under a second.)
    mgr.confirm_s = float(sb.state().slurmd_timeout)
    client.down("node2", "Not responding")
    assert client.node("node2").state == "down"
    mgr.tick()
    assert [e["node"] for e in events(tmp, "failure_suspected")] == ["node2"]
    assert [e["node"] for e in events(tmp, "failure_dismissed")] == ["node2"]
    assert not events(tmp, "failure_detected")
    assert sorted(client.reservation("train-t").nodes) == ["node1", "node2"]
    assert client.node("node2").usable


@pytest.mark.parametrize("cluster", ["sandbox", "sandbox_2205"], indirect=True)
def test_a_person_s_drain_is_kept_when_the_watcher_marks_the_dead_node_down(cluster):
    """Issue 17: a node drained by hand (a reason that merely looks like ours) whose slurmd then dies is
    failed over and marked DOWN, and keeps the person's reason word for word: nothing of ours to undo."""
    sb, client, mgr, tmp = cluster
    mgr.min_spares = 0
    client.drain("node2", "clusterops:x by hand")
    sb.kill_node("node2")
    wait_for(lambda: not client.node("node2").responding, 60, "Slurm sees node2 not responding", step=0.5)
    mgr.tick()
    assert sorted(client.reservation("train-t").nodes) == ["node1"]
    (down,) = events(tmp, "marked_down")
    assert down["node"] == "node2" and down["reason"] == "clusterops:x by hand"
    node2 = client.node("node2")
    assert node2.state == "down" and node2.drained and node2.reason == "clusterops:x by hand", node2
