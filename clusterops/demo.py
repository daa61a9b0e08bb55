"""The end-to-end demo on the sandbox: stage data, warm a spare, train on 2 nodes, checkpoint to S3,
crash a node, watch the spare take its place and the job resume from the checkpoint.

Everything goes through the same commands an operator runs (`clusterops stage`, `spare`, `ckpt`,
`train`) against the real local Slurm; the demo only orders them and times what happens.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clusterops import config as config_mod
from clusterops.errors import ClusteropsError
from clusterops.fsutil import atomic_write_text
from clusterops.proc import poll_until
from clusterops.telemetry import read_events

CLI = [sys.executable, "-m", "clusterops"]
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TRAIN_NODES = ["node1", "node2"]
SPARE = "node3"
VICTIM = "node2"
DATASET = "demo"
FAILURE_FILE = "demo-failure.txt"  # written under the root when a run fails; the teardown keeps it


class DemoError(ClusteropsError):
    pass


@dataclass
class Timeline:
    marks: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, what: str, at: float | None = None) -> None:
        self.marks.append((what, at if at is not None else time.time()))


@dataclass
class DemoResult:
    timeline: Timeline
    resumed_from: int | None
    last_step_before_failure: int | None
    final_loss: float | None
    first_loss: float | None
    job_id: int
    remote: str
    local_checkpoints: dict[str, list[str]]
    failover_seconds: float | None
    events: list[dict]
    committed_steps: list[int] = field(default_factory=list)  # "checkpoint committed" in the job's log
    spare: str = SPARE
    spare_restaged: bool | None = None  # the spare's READY marker changed after the failure
    job_nodes_after: list[str] = field(default_factory=list)


def _corpus(path: Path, docs: int = 400) -> Path:
    """A small JSONL corpus with learnable structure (the model should drive its loss down)."""
    import json
    import random

    rng = random.Random(7)
    words = ["node", "spare", "checkpoint", "slurm", "shard", "stage", "verify", "drain", "requeue", "resume"]
    lines = []
    for i in range(docs):
        start = rng.randrange(len(words))
        body = " ".join(words[(start + k) % len(words)] for k in range(rng.randrange(20, 60)))
        lines.append(json.dumps({"text": f"doc {i}: {body}."}))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


class Demo:
    def __init__(self, root: Path, say: Callable[[str], None], steps: int = 240, keep: bool = False) -> None:
        self.root = root.resolve()
        self.say = say
        self.steps = steps
        self.keep = keep
        self.timeline = Timeline()

    # ------------------------------------------------------------------ helpers
    def cli(self, *args: str, node: str | None = None, timeout: float = 600, check: bool = True):
        env = dict(self.env)
        if node:
            env["CLUSTEROPS_NODE"] = node
        r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]
            raise DemoError(f"clusterops {' '.join(args[:3])} failed: {' | '.join(tail)}")
        return r

    def wait(self, predicate, timeout: float, what: str, step: float = 1.0):
        ok, value = poll_until(predicate, timeout, step)
        if not ok:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        return value

    # ------------------------------------------------------------------ the run
    def run(self) -> DemoResult:
        from clusterops.sandbox.cluster import Sandbox

        sb = Sandbox(self.root)
        if sb.layout.state_file.exists():
            self.say("demo: an earlier demo sandbox is here; taking it down first")
            sb.down()
        self.say(f"demo: starting a 4-node sandbox in {self.root}")
        state = sb.up(nodes=4, timeout=90)
        # Jobs inherit the submitter's environment: the sandbox's exports must reach them (CLUSTEROPS_CONFIG).
        saved_env = dict(os.environ)
        os.environ.update(sb.exports(state))
        self.env = dict(os.environ)
        self.sandbox = sb
        self.slurm = sb.client(timeout=15)
        watcher = None
        self.job_id: int | None = None
        stop_sync = threading.Event()
        try:
            remote = self.remote = self._configure(state.endpoint_url)
            self._data()
            self._stage(TRAIN_NODES)
            self.slurm.create_reservation("training", TRAIN_NODES)
            self.say(f"demo: reservation 'training' = {', '.join(TRAIN_NODES)}; warming spare {SPARE}")
            self.cli("spare", "add", SPARE)
            self.wait(
                lambda: self._warmth(SPARE).state in ("warm", "failed"), 300, f"spare {SPARE} to warm up"
            )
            if self._warmth(SPARE).state != "warm":
                raise DemoError(f"spare {SPARE} failed its warm-up: {self._warmth(SPARE).detail}")
            self.say(f"demo: spare {SPARE} warm (data READY, health {self._warmth(SPARE).health})")
            watcher = self._start_watcher()
            sync = threading.Thread(target=self._sync_loop, args=(stop_sync,), daemon=True)
            sync.start()
            job_id = self.job_id = self._submit()
            self.say(f"demo: training job {job_id} submitted on {', '.join(TRAIN_NODES)}")
            step = self.wait(
                lambda: self._remote_latest(), 600, "a checkpoint committed and verified in S3", 2
            )
            self.say(f"demo: checkpoint step {step} verified in S3; waiting for the spare to hold it")
            self.wait(lambda: (self._warmth(SPARE).ckpt_step or -1) >= step, 300, "the spare to pull it", 2)
            last = self._last_step(job_id)
            self.say(f"demo: killing {VICTIM} (slurmd and every process of the job) at step {last}")
            self.timeline.mark("failure: slurmd killed", time.time())
            marker_before = self._ready_stamp(SPARE)
            sb.kill_node(VICTIM)
            self.wait(lambda: self._resumed(job_id) is not None, 600, "the job to resume on the spare", 2)
            self.timeline.mark("first step after resume", time.time())
            self.say(f"demo: job resumed from step {self._resumed(job_id)} on {self.slurm.job(job_id).nodes}")
            self.wait(
                lambda: self.slurm.job(job_id).state in ("COMPLETED", "FAILED", "CANCELLED"),
                900,
                "the job to finish",
                2,
            )
            if self.slurm.job(job_id).state != "COMPLETED":
                raise DemoError(f"job {job_id} ended {self.slurm.job(job_id).state}; see {self._log(job_id)}")
            stop_sync.set()
            self.cli("ckpt", "sync", node=self.slurm.job(job_id).nodes[0], check=False)
            result = self._result(job_id, remote, last)
            result.job_nodes_after = self.slurm.job(job_id).nodes
            result.spare_restaged = self._ready_stamp(SPARE) != marker_before
            return result
        except BaseException as e:  # a timeout's signal too: record what the sandbox looked like first
            self._record_failure(e)
            raise
        finally:
            stop_sync.set()
            if watcher is not None:
                watcher.terminate()
                watcher.wait(10)
            if not self.keep:
                self.say("demo: taking the sandbox down (use --keep to leave it up)")
                sb.down()
            os.environ.clear()
            os.environ.update(saved_env)

    def _record_failure(self, error: BaseException) -> None:
        """Write what an operator would look at first (the demo's own lines, the job's state and log, the
        watcher's log and events, slurmctld's log) to FAILURE_FILE under the root, which the sandbox's
        teardown leaves in place."""
        parts = [f"demo failed: {type(error).__name__}: {error}"]
        start = self.timeline.marks[0][1] if self.timeline.marks else time.time()
        marks = [(what, round(at - start, 1)) for what, at in self.timeline.marks]
        parts.append(f"timeline (s after the first mark): {marks}")

        def section(title: str, fetch: Callable[[], str], tail: int = 60) -> None:
            try:
                text = fetch()
            except Exception as exc:  # noqa: BLE001 - a diagnostic must not hide the failure
                text = f"(unavailable: {exc})"
            parts.append(f"----- {title}\n" + "\n".join(text.splitlines()[-tail:]))

        layout = self.sandbox.layout
        section(
            "jobs",
            lambda: "\n".join(
                f"{j.job_id} {j.name} {j.state} {j.reason} {j.nodes}" for j in self.slurm.jobs()
            ),
        )
        section(
            "nodes",
            lambda: "\n".join(
                f"{n.name} {n.state} {n.flags} {n.reason!r} {n.extra}" for n in self.slurm.nodes()
            ),
        )
        if self.job_id is not None:
            section(f"train log {self._log(self.job_id)}", lambda: self._log_text(self.job_id), 80)
        section("spare watcher log", lambda: (self.root / "spare-watch.log").read_text(errors="replace"))
        section("head events", lambda: (layout.node("head") / "log" / "events.ndjson").read_text(), 40)
        section("slurmctld log", lambda: (layout.ctld / "slurmctld.log").read_text(errors="replace"), 80)
        atomic_write_text(self.root / FAILURE_FILE, "\n".join(parts) + "\n")

    def _configure(self, endpoint: str) -> str:
        cfg = config_mod.load(self.sandbox.layout.clusterops_conf, env={})
        remote = f"s3://{cfg.s3.bucket}/checkpoints/demo"
        cfg.staging.datasets = [f"{DATASET}=s3://{cfg.s3.bucket}/datasets/{DATASET}/"]
        cfg.spare.reservation = "training"
        cfg.spare.min_spares = 1
        cfg.spare.remote = remote
        cfg.spare.poll_s = 1.0
        cfg.checkpoint.s3_prefix = "checkpoints/demo"
        atomic_write_text(self.sandbox.layout.clusterops_conf, config_mod.dumps_toml(cfg), mode=0o600)
        return remote

    def _data(self) -> None:
        from clusterops import s3

        work = self.root / "demo-data"
        corpus = _corpus(work / "corpus.jsonl")
        shards = work / "shards"
        self.cli("data", "prepare", str(corpus), "-o", str(shards), "--name", DATASET)
        cfg = config_mod.load(self.sandbox.layout.clusterops_conf, env={})
        client = s3.client(cfg.s3)
        n = 0
        for f in sorted(shards.iterdir()):
            if f.is_file():
                with open(f, "rb") as body:
                    client.put_object(Bucket=cfg.s3.bucket, Key=f"datasets/{DATASET}/{f.name}", Body=body)
                n += 1
        self.say(
            f"demo: tokenized corpus into {n} shard files, uploaded to s3://{cfg.s3.bucket}/datasets/{DATASET}/"
        )

    def _stage(self, nodes: list[str]) -> None:
        job = self.slurm.submit(
            [
                "-N",
                str(len(nodes)),
                "-w",
                ",".join(nodes),
                "-J",
                "clusterops-stage",
                "-o",
                str(self.root / "stage-%j.out"),
            ],
            script="#!/bin/sh\nexec srun --ntasks-per-node=1 " + " ".join(CLI) + " stage daemon --once\n",
        )
        self.wait(lambda: self.slurm.job(job).state in ("COMPLETED", "FAILED", "CANCELLED"), 300, "staging")
        if self.slurm.job(job).state != "COMPLETED":
            raise DemoError(f"staging job {job} {self.slurm.job(job).state}; see {self.root}/stage-{job}.out")
        import json

        for node in nodes:
            dest = self.sandbox.layout.node(node) / "nvme" / "datasets" / DATASET
            r = self.cli("stage", "status", "--dest", str(dest), "--json", check=False)
            entries = json.loads(r.stdout).get("datasets", []) if r.stdout.strip().startswith("{") else []
            if not entries or not all(e.get("ready") for e in entries):
                out = (self.root / f"stage-{job}.out").read_text()[-500:]
                raise DemoError(f"dataset '{DATASET}' not READY on {node} after staging job {job}: {out!r}")
        self.say(f"demo: dataset '{DATASET}' staged and READY on {', '.join(nodes)}")

    def _start_watcher(self) -> subprocess.Popen:
        log = open(self.root / "spare-watch.log", "ab")  # noqa: SIM115 - lives as long as the watcher
        env = {**self.env, "CLUSTEROPS_NODE": "head"}
        self.say("demo: spare watcher running (clusterops spare watch)")
        return subprocess.Popen([*CLI, "spare", "watch"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def _sync_loop(self, stop: threading.Event) -> None:
        """What the two-hourly systemd timer does on every node, every few seconds here."""
        while not stop.wait(3.0):
            try:
                res = self.slurm.reservation("training")
                for node in res.nodes if res else []:
                    self.cli("ckpt", "sync", node=node, check=False, timeout=120)
            except Exception:  # the watcher may be editing the reservation; try again next round
                continue

    def _submit(self) -> int:
        import json

        ckpt = str(self.sandbox.layout.nodes / "{node}" / "nvme" / "checkpoints")
        data = str(self.sandbox.layout.nodes / "{node}" / "nvme" / "datasets" / DATASET)
        r = self.cli(
            "train",
            "submit",
            str(REPO_CONFIGS / "demo.toml"),
            "--checkpoint-dir",
            ckpt,
            "--data",
            data,
            "--steps",
            str(self.steps),
            "--remote",
            self.remote,
            "--reservation",
            "training",
            "--output",
            str(self.root / "train-%j.out"),
            "--json",
        )
        return int(json.loads(r.stdout)["job_id"])

    # ------------------------------------------------------------------ observations
    def _ready_stamp(self, node: str) -> tuple[int, int] | None:
        """The dataset's READY marker on `node` (inode, mtime): a restaging writes a new one."""
        from clusterops.staging import state as staging_state

        path = staging_state.ready_path(self.sandbox.layout.node(node) / "nvme" / "datasets" / DATASET)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _warmth(self, node: str):
        from clusterops.spare.warmth import Warmth

        return Warmth.decode(self.slurm.node(node).extra)

    def _remote_latest(self) -> int | None:
        r = self.cli("ckpt", "status", "--json", node="head", check=False)
        try:
            import json

            return json.loads(r.stdout).get("remote_latest")
        except ValueError:
            return None

    def _log(self, job_id: int) -> Path:
        return self.root / f"train-{job_id}.out"

    def _log_text(self, job_id: int) -> str:
        try:
            return self._log(job_id).read_text()
        except FileNotFoundError:
            return ""

    def _last_step(self, job_id: int) -> int | None:
        steps = [int(m) for m in re.findall(r"step=(\d+)", self._log_text(job_id))]
        return max(steps) if steps else None

    def _resumed(self, job_id: int) -> int | None:
        m = re.findall(r"resumed from .*?\(step (\d+)", self._log_text(job_id))
        return int(m[-1]) if m else None

    def _result(self, job_id: int, remote: str, last_before: int | None) -> DemoResult:
        text = self._log_text(job_id)
        losses = [float(x) for x in re.findall(r"loss=([0-9.]+)", text)]
        events = [e for e in read_events(self.sandbox.layout.node("head") / "log" / "events.ndjson")]
        for e in events:
            label = {
                "spare.failure_detected": f"detected: {e.get('node')} {e.get('why', '')}",
                "spare.drained": f"drained {e.get('node')}",
                "spare.spare_swapped_in": f"spare {e.get('node')} swapped in for {e.get('replaces')}",
                "spare.job_running": f"job running again on {','.join(e.get('nodes', []))}",
            }.get(e["event"])
            if label:
                self.timeline.mark(label, e["ts"])
        running = [e for e in events if e["event"] == "spare.job_running"]
        local = {}
        for node in ("node1", "node2", "node3", "node4"):
            d = self.sandbox.layout.node(node) / "nvme" / "checkpoints"
            local[node] = (
                sorted(p.name for p in d.iterdir() if p.name.startswith("step-")) if d.is_dir() else []
            )
        return DemoResult(
            timeline=Timeline(sorted(self.timeline.marks, key=lambda m: m[1])),
            resumed_from=self._resumed(job_id),
            last_step_before_failure=last_before,
            final_loss=losses[-1] if losses else None,
            first_loss=losses[0] if losses else None,
            job_id=job_id,
            remote=remote,
            local_checkpoints=local,
            failover_seconds=running[-1].get("seconds_from_detection") if running else None,
            events=events,
            committed_steps=[int(m) for m in re.findall(r"checkpoint committed: \S*?step-(\d+)", text)],
        )
