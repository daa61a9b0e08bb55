"""The runner's bounds (a hung check is killed inside the budget and named), and state across runs:
counter windows, XID de-duplication, stuck processes; hook environment validation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from clusterops import config as config_mod
from clusterops.cli.hook_cmd import job_env
from clusterops.health import counters, runner, service
from clusterops.health.checks import CheckContext
from clusterops.health.fixture import FORMAT, FixtureTelemetry
from clusterops.health.model import Outcome
from clusterops.health.profile import load as load_profile
from clusterops.verdict import Status

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"


def ctx(t=None) -> CheckContext:
    return CheckContext(
        t or FixtureTelemetry.from_file(NODES / "healthy_p5.json"), load_profile("p5.48xlarge")
    )


def hangs(c: CheckContext) -> Outcome:
    c.t.progress("statvfs /fsx")
    time.sleep(60)
    return Outcome()


def fine(c: CheckContext) -> Outcome:
    return Outcome(summary="fine")


def dies(c: CheckContext) -> Outcome:
    os._exit(9)


def raises(c: CheckContext) -> Outcome:
    raise KeyError("nvmlDeviceGetUUID")


def test_a_hung_check_is_killed_within_the_budget_and_named():
    started = time.monotonic()
    out = runner.run(
        {"storage": hangs, "gpu": fine, "efa": dies, "xid": raises},
        {n: ctx() for n in ("storage", "gpu", "efa", "xid")},
        timeout=20,
        budget=1.5,
    )
    assert time.monotonic() - started < 5
    hung = out["storage"].result
    assert hung.verdict == Status.CRITICAL
    assert hung.detail == "hung: no answer within 1.5s in statvfs /fsx; check killed"
    assert out["gpu"].result.verdict == Status.OK and out["gpu"].result.detail == "fine"
    # Our own crashes say nothing about the node: UNKNOWN, never a drain.
    assert out["efa"].result.verdict == Status.UNKNOWN and "exited 9" in out["efa"].result.detail
    assert out["xid"].result.verdict == Status.UNKNOWN and "KeyError" in out["xid"].result.detail
    assert list(out) == ["storage", "gpu", "efa", "xid"]


def test_counter_rise_uses_the_oldest_checkpoint_in_the_window_and_survives_resets():
    d, span, s = counters.rise(None, {"rx_drops": 5}, now=1000, window=3600)
    assert d == {"rx_drops": 0} and span == 0
    d, span, s = counters.rise(s, {"rx_drops": 9}, now=1100, window=3600)
    assert d == {"rx_drops": 4} and span == 100  # too soon for a new checkpoint
    d, span, s = counters.rise(s, {"rx_drops": 20}, now=2000, window=3600)
    d, span, s = counters.rise(s, {"rx_drops": 21}, now=2100, window=3600)
    assert d == {"rx_drops": 16}  # every run in the window sees the whole rise
    d, _, s = counters.rise(s, {"rx_drops": 3}, now=2200, window=3600)
    assert d == {"rx_drops": 0}  # went down: the driver reloaded, start again
    d, _, s = counters.rise(s, {"rx_drops": 50}, now=9000, window=3600)
    assert d == {"rx_drops": 0}  # the old rise is outside the window
    assert counters.level(16, [1, 1000]) == 1 and counters.level(1000, [1, 1000]) == 2
    assert counters.level(10**6, [1, 0]) == 1 and counters.level(0, [1, 1]) == 0


def node_config(tmp_path, fixture: Path) -> config_mod.Config:
    cfg = config_mod.Config()
    cfg.paths.state_dir = str(tmp_path / "{node}")
    cfg.health.profile = "p5.48xlarge"
    cfg.health.fixture = str(fixture)
    cfg.health.isolation = "inline"
    return cfg


def test_xids_are_deduplicated_on_disk_and_age_out(tmp_path):
    line = {
        "seq": 77,
        "ts": 1764300000.0 - 120,
        "msg": "NVRM: Xid (PCI:0000:97:00): 79, GPU has fallen off the bus.",
    }
    fx = tmp_path / "n.json"
    fx.write_text(
        json.dumps({"format": FORMAT, "base": str(NODES / "healthy_p5.json"), "kernel_log": [line]})
    )
    cfg = node_config(tmp_path, fx)
    first, _ = service.evaluate(cfg, node="n1", only=["xid"])
    second, _ = service.evaluate(cfg, node="n1", only=["xid"])
    assert first.verdict == second.verdict == Status.CRITICAL
    assert [x["new"] for x in first.checks[0].data["xids"]] == [True]
    assert [x["new"] for x in second.checks[0].data["xids"]] == [False]
    # The ring buffer wrapped: the line is gone from the kernel log, the XID still counts in its window.
    fx.write_text(json.dumps({"format": FORMAT, "base": str(NODES / "healthy_p5.json")}))
    third, _ = service.evaluate(cfg, node="n1", only=["xid"])
    assert third.verdict == Status.CRITICAL
    # ... and not after it: one old XID does not keep a node drained forever.
    cfg.health.xid_window_s = 60
    later, _ = service.evaluate(cfg, node="n1", only=["xid"])
    assert later.verdict == Status.OK
    state = json.loads((tmp_path / "n1" / "health-state.json").read_text())
    assert state["xid"]["recent"] == {}


def test_a_process_is_stuck_only_when_seen_in_d_state_on_two_runs(tmp_path):
    procs = [
        {"pid": 7100 + k, "comm": "python", "start": 5_000_000 + k, "wchan": "nfs_wait"} for k in range(5)
    ]
    fx = tmp_path / "n.json"
    fx.write_text(
        json.dumps(
            {
                "format": FORMAT,
                "base": str(NODES / "healthy_p5.json"),
                "blocked_processes": procs,
                "state": None,
            }
        )
    )
    cfg = node_config(tmp_path, fx)
    first, _ = service.evaluate(cfg, node="n2", only=["system"])
    second, _ = service.evaluate(cfg, node="n2", only=["system"])
    assert first.verdict == Status.OK
    assert second.verdict == Status.CRITICAL and "5 processes stuck in D state" in second.checks[0].detail


def test_hook_environment_is_validated_before_use(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    env = job_env(
        {"SLURMD_NODENAME": "node1", "SLURM_JOB_ID": "42", "SLURM_JOB_USER": "alice", "SLURM_CONF": str(conf)}
    )
    assert (env.node, env.job_id, env.user, env.problems) == ("node1", "42", "alice", [])
    bad = job_env(
        {
            "SLURMD_NODENAME": "node1 State=RESUME",
            "SLURM_JOB_ID": "1; rm -rf /",
            "SLURM_JOB_USER": "$(id)",
            "SLURM_CONF": "relative/slurm.conf",
        }
    )
    assert (bad.node, bad.job_id, bad.user, bad.slurm_conf) == ("", "", "", "")
    assert len(bad.problems) == 4 and all("ignored" in p for p in bad.problems)


def test_selecting_and_disabling_checks():
    cfg = config_mod.Config()
    cfg.health.disabled = ["xid"]
    cfg.health.prolog_checks = ["gpu", "xid"]
    assert service.select_checks(cfg, "prolog") == (["gpu"], ["xid"])
    assert service.select_checks(cfg, "check", ["efa,storage"]) == (["efa", "storage"], [])
    assert service.select_checks(cfg, "healthcheck")[0] == ["gpu", "efa", "storage", "system"]
