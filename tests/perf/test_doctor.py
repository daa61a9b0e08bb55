"""`doctor throughput` on real sandbox jobs: it names storage when the data sits off local NVMe, the
loader when the loader is throttled, and the one node whose (fixture) GPU is throttled; `--act` drains
that node and the spare watcher moves the job onto the spare."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from clusterops import config as config_mod
from clusterops.fsutil import atomic_write_json, atomic_write_text
from clusterops.health.fixture import FORMAT
from clusterops.slurm import SlurmClient
from clusterops.spare.manager import SpareManager
from clusterops.spare.warmth import Warmth
from tests.conftest import REPO, own_sandbox, run_cli

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"
CONFIG = REPO / "configs" / "demo.toml"


@pytest.fixture(scope="module")
def dsb():
    with own_sandbox("doctor", 3) as (sb, env):
        fx = sb.root / "fixtures"
        fx.mkdir()
        for node, fixture in (("node1", "healthy_p5"), ("node2", "warn_sw_thermal"), ("node3", "healthy_p5")):
            atomic_write_json(fx / f"{node}.json", {"format": FORMAT, "base": str(NODES / f"{fixture}.json")})
        cfg = config_mod.load(sb.layout.clusterops_conf, env={})
        cfg.health.profile = "p5.48xlarge"
        cfg.health.fixture = f"{fx}/{{node}}.json"
        atomic_write_text(sb.layout.clusterops_conf, config_mod.dumps_toml(cfg), mode=0o600)
        # The demo corpus tokenized once, then staged (verified, READY) onto every node's local root.
        corpus = sb.root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": f"doc {i} " + "abc " * 80}) + "\n" for i in range(60)))
        netfs = sb.root / "netfs" / "demo"
        run_cli("data", "prepare", str(corpus), "-o", str(netfs), "--name", "demo", env=env, check=True)
        run_cli("stage", "manifest", str(netfs), "-o", str(sb.root / "demo.json"), env=env, check=True)
        for node in ("node1", "node2", "node3"):
            dest = sb.layout.node(node) / "nvme" / "datasets" / "demo"
            run_cli("stage", "run", str(sb.root / "demo.json"), "--dest", str(dest), env=env, check=True)
        yield sb, env


def submit(sb, env, data: str, name: str) -> int:
    r = run_cli(
        "train",
        "submit",
        str(CONFIG),
        "--checkpoint-dir",
        str(sb.root / "ck" / name),
        "--data",
        data,
        "--steps",
        "100000",
        "--output",
        str(sb.root / f"{name}-%j.out"),
        "--json",
        env=env,
        check=True,
    )
    job = int(json.loads(r.stdout)["job_id"])
    deadline = time.monotonic() + 120
    out = sb.root / f"{name}-{job}.out"
    while time.monotonic() < deadline:  # running and past its first step
        if out.exists() and "step=" in out.read_text():
            return job
        time.sleep(1)
    raise AssertionError(f"job {job} never reached its first step: {out.read_text() if out.exists() else ''}")


def doctor(env, job: int, *extra: str) -> tuple[int, dict]:
    r = run_cli(
        "doctor", "throughput", "--job", str(job), "--seconds", "1", "--json", *extra, env=env, timeout=400
    )
    assert r.stdout.strip().startswith("{"), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_storage_is_named_when_the_data_is_off_local_nvme(dsb):
    sb, env = dsb
    job = submit(sb, env, str(sb.root / "netfs" / "demo"), "netfs")
    try:
        rc, diag = doctor(env, job)
    finally:
        SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"]).cancel(job)
    assert rc == 1 and diag["bottleneck"] == "storage"
    storage = next(f for f in diag["findings"] if f["stage"] == "storage")
    assert sorted(storage["evidence"]["off_local_nvme"]) == ["node1", "node2"]
    assert all(p["storage"]["read_gibps"] > 0 for p in diag["probes"])


def test_loader_then_the_throttled_node_and_act_moves_the_job_to_the_spare(dsb, tmp_path):
    sb, env = dsb
    client = SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"])
    client.create_reservation("training", ["node1", "node2"])
    mgr = SpareManager(client, "training", "", tmp_path / "state", tmp_path / "events.ndjson", min_spares=0)
    mgr.add("node3", warm=False)
    client.set_extra("node3", Warmth(state="warm", health=0, datasets_ready=True).encode())
    data = str(sb.layout.nodes / "{node}" / "nvme" / "datasets" / "demo")
    r = run_cli(
        "train",
        "submit",
        str(CONFIG),
        "--checkpoint-dir",
        str(sb.root / "ck" / "{node}"),
        "--data",
        data,
        "--steps",
        "100000",
        "--reservation",
        "training",
        "--output",
        str(sb.root / "local-%j.out"),
        "--json",
        env=env,
        check=True,
    )
    job = int(json.loads(r.stdout)["job_id"])
    try:
        deadline = time.monotonic() + 120
        while client.job(job).state != "RUNNING" and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(5)
        # A loader throttled to 1 batch per 10 s, and node2 playing a GPU in SW thermal slowdown. The
        # doctor's model step shares the 2 CI cores with both ranks of the job and the other node's
        # probe: a step measured ~2.9 s there, so a 2 s delay did not always make the loader the slower.
        rc, diag = doctor({**env, "CLUSTEROPS_FAULT_LOADER_DELAY_S": "10"}, job, "--act")
        assert rc == 1
        steps = {p["node"]: (p["loader"], p["step"]) for p in diag["probes"]}
        assert diag["bottleneck"] == "loader", (steps, diag["findings"])
        storage = next(f for f in diag["findings"] if f["stage"] == "storage")
        assert not storage["bottleneck"]
        assert diag["outlier"] == "node2" and diag["acted"] == "drained node2"
        node = next(f for f in diag["findings"] if f["stage"] == "node")
        assert "gpu" in node["summary"]
        assert client.node("node2").reason.startswith("clusterops: doctor:")
        assert not client.node("node1").drained
        # The watcher sees the drained node, swaps the spare in and requeues the job onto it.
        stop = threading.Event()
        t = threading.Thread(target=mgr.watch, kwargs={"stop": stop.is_set, "poll_s": 0.5})
        t.start()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                j = client.job(job)
                if j.state == "RUNNING" and sorted(j.nodes) == ["node1", "node3"]:
                    break
                time.sleep(1)
        finally:
            stop.set()
            t.join(30)
        assert sorted(client.job(job).nodes) == ["node1", "node3"] and client.job(job).restart_count >= 1
    finally:
        client.cancel(job)
        for res in client.reservations():
            client.delete_reservation(res.name)
        client.resume("node2")


def test_doctor_refuses_a_job_that_is_not_running(dsb):
    sb, env = dsb
    r = run_cli("doctor", "throughput", "--job", "999999", env=env)
    assert r.returncode == 2 and "999999" in r.stderr and r.stderr.count("\n") == 1


def test_the_trainers_throughput_drop_runs_the_doctor(dsb):
    sb, env = dsb
    # Any step a hair below the median counts as a drop here: the watchdog fires right after its warm-up.
    text = CONFIG.read_text().replace(
        'on_drop = "off"', 'on_drop = "report"\nfraction = 0.999\npatience = 1\nwarmup_steps = 2\nwindow = 3'
    )
    config = sb.root / "drop.toml"
    config.write_text(text)
    ck = sb.root / "ck" / "drop"
    r = run_cli(
        "train",
        "submit",
        str(config),
        "--checkpoint-dir",
        str(ck),
        "--data",
        str(sb.layout.nodes / "{node}" / "nvme" / "datasets" / "demo"),
        "--steps",
        "100000",
        "--json",
        env=env,
        check=True,
    )
    job = int(json.loads(r.stdout)["job_id"])
    client = SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"])
    try:
        deadline = time.monotonic() + 240
        found = None
        while time.monotonic() < deadline and found is None:
            for p in ck.glob(f"doctor-{job}-*.json"):
                text = p.read_text()
                if text.strip().endswith("}"):
                    found = json.loads(text)
            time.sleep(2)
    finally:
        client.cancel(job)
    assert found is not None, "no doctor report next to the job's events"
    assert found["job_id"] == job and [f["stage"] for f in found["findings"]][:2] == ["storage", "loader"]
    events = [json.loads(line) for line in (ck / "events.ndjson").read_text().splitlines()]
    assert any(e["event"] == "throughput_drop" for e in events)
