"""The live backend on this machine (no GPU, no EFA: the sandbox profile), on a built EFA sysfs tree,
and `health record` -> `health check --fixture` giving the same verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from clusterops.health.checks import CheckContext, efa
from clusterops.health.profile import EfaProfile, Profile
from clusterops.health.telemetry import LiveTelemetry
from clusterops.verdict import Status

CLI = str(Path(sys.executable).parent / "clusterops")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120, env=env)


def test_record_then_replay_gives_the_same_verdicts(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(f"""[cluster]
profile = "sandbox"
[paths]
state_dir = "{tmp_path}/state"
local_root = "{tmp_path}/nvme"
""")
    (tmp_path / "nvme").mkdir()
    (tmp_path / "state").mkdir()
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(conf), "CLUSTEROPS_NODE": "rec1"}
    rec = cli("health", "record", str(tmp_path / "rec1.json"), env=env)
    assert rec.returncode == 0, rec.stderr
    fixture = json.loads((tmp_path / "rec1.json").read_text())
    assert fixture["format"] == "clusterops-node-fixture/1" and "/proc/meminfo" in fixture["files"]
    assert str(tmp_path / "nvme") in fixture["writable"]
    live = json.loads(cli("health", "check", "--json", env=env).stdout)
    replay = cli("health", "check", "--json", "--fixture", str(tmp_path / "rec1.json"), env=env)
    again = json.loads(replay.stdout)
    assert replay.returncode == again["verdict"]
    assert [(c["name"], c["verdict"]) for c in again["checks"]] == [
        (c["name"], c["verdict"]) for c in live["checks"]
    ]


def build_efa(root: Path, n: int, counters: dict[str, int]) -> None:
    for i in range(n):
        dev = root / f"sys/class/infiniband/rdmap{i}s0"
        (dev / "device/infiniband_verbs" / f"uverbs{i}").mkdir(parents=True)
        (dev / "device/vendor").write_text("0x1d0f\n")
        (dev / "ports/1/hw_counters").mkdir(parents=True)
        (dev / "ports/1/state").write_text("4: ACTIVE\n")
        for name, value in counters.items():
            (dev / "ports/1/hw_counters" / name).write_text(f"{value}\n")
    (root / "sys/class/infiniband/mlx5_0/device").mkdir(parents=True)  # not Amazon: not EFA
    (root / "sys/class/infiniband/mlx5_0/device/vendor").write_text("0x15b3\n")


def test_efa_on_a_sysfs_tree_counts_amazon_devices_and_reads_counters(tmp_path):
    build_efa(tmp_path, 2, {"rx_drops": 10, "rdma_read_wr_err": 0})
    t = LiveTelemetry(root=str(tmp_path))
    prof = Profile(name="t", efa=EfaProfile(count=2, counters={"rx_drops": [5, 100], "*_err": [1, 0]}))
    first = efa.check(CheckContext(t, prof))
    # uverbs device nodes are looked up under the real /dev, where this machine has none.
    assert {f.item for f in first.findings} == {"uverbs"}
    assert efa.read_counters(t, "rdmap0s0") == {"rx_drops": 10, "rdma_read_wr_err": 0}
    (tmp_path / "sys/class/infiniband/rdmap1s0/ports/1/hw_counters/rx_drops").write_text("500\n")
    second = efa.check(CheckContext(t, prof, state=first.state))
    rise = [f for f in second.findings if f.item == "counters"]
    assert [(f.verdict, f.subject) for f in rise] == [(Status.CRITICAL, "rdmap1s0")]
    assert "rx_drops rose by 490" in rise[0].message
