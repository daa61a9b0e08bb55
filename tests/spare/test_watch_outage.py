"""The spare watcher against a Slurm that misbehaves, on a sandbox of this module's own: answers it
cannot read (injected below the client, by wrapping the real Slurm commands), a hung slurmctld
(SIGSTOP) and a restarted one. It acts on nothing it has not read whole, alerts, backs off, keeps
running, and fails over once Slurm is back."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from clusterops.errors import ClusteropsError
from clusterops.slurm import SlurmError
from clusterops.spare.manager import SpareManager
from clusterops.spare.warmth import Warmth
from clusterops.telemetry import read_events
from tests.conftest import ctld_pid, own_sandbox, wait_for

pytestmark = pytest.mark.sandbox

ACTIONS = ("failure_detected", "drained", "marked_down", "spare_swapped_in", "requeued", "spare_added")

# Runs the real command; when a mode file names this command, spoils its --json answer the way a
# version the parser does not know, a cut pipe, or a half-read would.
WRAPPER = """#!{python}
import json, os, subprocess, sys
real, modes = {real!r}, {modes!r}
r = subprocess.run([real, *sys.argv[1:]], capture_output=True, text=True)
path = os.path.join(modes, os.path.basename(real))
mode = open(path).read().strip() if os.path.exists(path) else ""
out = r.stdout
if mode and "--json" in sys.argv and r.returncode == 0:
    if mode == "truncate":
        out = out[: len(out) // 2]
    else:
        d = json.loads(out)
        for k in ("nodes", "sinfo", "jobs"):
            if isinstance(d.get(k), list):
                d[k] = [] if mode == "empty" else {{"unexpected": 1}}
        out = json.dumps(d)
sys.stdout.write(out)
sys.stderr.write(r.stderr)
sys.exit(r.returncode)
"""


@pytest.fixture(scope="module")
def sb_env():
    with own_sandbox("spareout", 3) as sb_env:
        yield sb_env


@pytest.fixture
def cluster(sb_env, tmp_path):
    """train-t = node1,node2; spare node3 (cold); a client whose Slurm commands go through WRAPPER."""
    sb, env = sb_env
    from clusterops.slurm import SlurmClient

    real_bin = env.get("CLUSTEROPS_SLURM__BIN_DIR", "")
    search = ":".join(p for p in (real_bin, env.get("PATH", os.defpath)) if p)
    bin_dir, modes = tmp_path / "bin", tmp_path / "modes"
    bin_dir.mkdir()
    modes.mkdir()
    for cmd in ("sinfo", "squeue", "scontrol", "sbatch", "scancel"):
        real = shutil.which(cmd, path=search)
        assert real, f"{cmd} not in {search}"
        (bin_dir / cmd).write_text(WRAPPER.format(python=sys.executable, real=real, modes=str(modes)))
        (bin_dir / cmd).chmod(0o755)
    client = SlurmClient(env["SLURM_CONF"], timeout=3, **({"bin_dir": str(bin_dir)} if real_bin else {}))
    if not real_bin:
        client.cmd.env["PATH"] = f"{bin_dir}:{client.cmd.env.get('PATH', os.defpath)}"
    mgr = SpareManager(
        client,
        "train-t",
        "",
        tmp_path / "state",
        tmp_path / "events.ndjson",
        tmp_path / "textfile",
        min_spares=1,
        warm_command=[sys.executable, "-c", "pass"],
    )
    client.create_reservation("train-t", ["node1", "node2"])
    mgr.add("node3", warm=False)
    # Warm already (as a finished warm-up publishes it), so the watcher submits no warm jobs here.
    now = time.time()
    warm = Warmth(state="warm", datasets_ready=True, ckpt_step=7, health=0, updated=now, warm_since=now)
    client.set_extra("node3", warm.encode())
    yield sb, client, mgr, tmp_path, modes
    for f in modes.iterdir():
        f.unlink()
    with contextlib.suppress(ClusteropsError):
        sb.up(nodes=3, timeout=1)  # idempotent: restarts a slurmctld a test left stopped
    wait_for(lambda: _answers(client), 30, "slurmctld answering")
    for j in client.jobs():
        if j.active:
            client.cancel(j.job_id)
    for r in client.reservations():
        client.delete_reservation(r.name)
    for n in client.nodes():
        if n.drained:
            client.resume(n.name)
        if n.extra:
            client.set_extra(n.name, "")
    wait_for(lambda: all(n.usable and n.state == "idle" for n in client.nodes()), 30, "all nodes idle again")


def _answers(client) -> bool:
    try:
        return bool(client.nodes())
    except ClusteropsError:
        return False


def events(tmp, *kinds):
    return [e for e in read_events(tmp / "events.ndjson") if e["event"] in {f"spare.{k}" for k in kinds}]


def start_watch(mgr):
    stop, errors = threading.Event(), []
    t = threading.Thread(
        target=mgr.watch,
        kwargs={"stop": stop.is_set, "poll_s": 0.5, "on_error": errors.append, "max_backoff_s": 2.0},
        daemon=True,
    )
    t.start()
    return t, stop, errors


@pytest.mark.parametrize("command, mode", [("squeue", "truncate"), ("squeue", "mistype"), ("sinfo", "empty")])
def test_watcher_does_nothing_on_an_answer_it_cannot_read(cluster, command, mode):
    sb, client, mgr, tmp, modes = cluster
    client.drain("node1", "test failure")  # a failure the watcher would act on, were its view whole
    (modes / command).write_text(mode)
    if command == "sinfo":
        (modes / "scontrol").write_text(mode)  # where the client reads nodes with scontrol --json
    with pytest.raises(SlurmError):
        mgr.tick()
    assert not events(tmp, *ACTIONS[:-1])
    assert sorted(client.reservation("train-t").nodes) == ["node1", "node2"]
    # The loop: each failed tick is an alert event; it keeps going; nothing is done.
    t, stop, errors = start_watch(mgr)
    try:
        wait_for(lambda: len(events(tmp, "watch_error")) >= 2, 30, "two alert events")
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    errs = events(tmp, "watch_error")
    assert all(e["alert"] is True for e in errs) and errs[-1]["failures"] >= 2
    assert all(isinstance(e, SlurmError) for e in errors), errors  # never a TypeError / KeyError
    assert not events(tmp, *ACTIONS[:-1])
    assert sorted(client.reservation("train-t").nodes) == ["node1", "node2"]
    # Answers readable again: the same failure is acted on.
    for f in modes.iterdir():
        f.unlink()
    mgr.tick()

    def members():
        res = client.reservation("train-t")
        return sorted(res.nodes) if res else None

    # Read until Slurm shows the swap (a reservation update is not always visible to the very next read).
    try:
        wait_for(lambda: members() == ["node2", "node3"], 15, "node3 swapped into train-t")
    except AssertionError as e:
        raise AssertionError(
            f"{e}; train-t now {members()}; events {[x['event'] for x in read_events(tmp / 'events.ndjson')]}"
        ) from None


def test_watcher_survives_a_hung_and_a_restarted_slurmctld_then_fails_over(cluster):
    sb, client, mgr, tmp, modes = cluster
    t, stop, errors = start_watch(mgr)
    try:
        wait_for(lambda: os.path.exists(tmp / "textfile" / "clusterops_spare.prom"), 30, "a good tick")
        # Hung: connections are accepted, nothing answers.
        pid = ctld_pid(sb)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: len(events(tmp, "watch_error")) >= 2, 60, "alerts while slurmctld hangs")
            assert t.is_alive()
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: events(tmp, "watch_recovered"), 30, "a good tick after the hang")
        # Restarted: gone (connection refused) for a while, then started again.
        before = len(events(tmp, "watch_error"))
        psutil.Process(pid).terminate()
        psutil.Process(pid).wait(15)
        wait_for(lambda: len(events(tmp, "watch_error")) >= before + 2, 60, "alerts while slurmctld is down")
        assert t.is_alive()
        sb.up(nodes=3, timeout=90)
        wait_for(lambda: len(events(tmp, "watch_recovered")) >= 2, 60, "a good tick after the restart")
        assert not events(tmp, *ACTIONS[:-1]), "acted during or right after the outage"
        kinds = {e["cause"] for e in events(tmp, "watch_error")}
        assert "unavailable" in kinds, kinds
        assert all(e["alert"] is True for e in events(tmp, "watch_error"))
        assert all(isinstance(e, ClusteropsError) for e in errors), errors
        # Back to normal: a failure is handled as ever.
        client.drain("node1", "test failure after the outage")
        wait_for(
            lambda: sorted(client.reservation("train-t").nodes) == ["node2", "node3"], 30, "node3 swapped in"
        )
    finally:
        stop.set()
        t.join(20)
    assert not t.is_alive()


def test_watcher_survives_an_unexpected_error_but_not_ctrl_c(cluster):
    sb, client, mgr, tmp, modes = cluster
    # The state directory becomes a file: every tick's save fails with an OSError (not a Slurm error).
    state_dir = tmp / "state"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.write_text("not a directory")
    t, stop, errors = start_watch(mgr)
    try:
        wait_for(lambda: len(events(tmp, "watch_error")) >= 2, 30, "alerts for the unexpected error")
        assert t.is_alive()
        (ev, *_) = events(tmp, "watch_error")
        assert ev["cause"] == "unexpected" and ev["alert"] is True and "Error" in ev["traceback"], ev
        state_dir.unlink()
        wait_for(lambda: events(tmp, "watch_recovered"), 30, "a good tick once the state dir is back")
    finally:
        stop.set()
        t.join(10)
    # KeyboardInterrupt (and SystemExit) still end the loop.
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.5)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            mgr.watch(poll_s=0.5)
        assert time.monotonic() - t0 < 10
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert Path(tmp / "state" / "spare-watch.json").exists()
