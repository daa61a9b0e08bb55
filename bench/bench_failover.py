"""Failover with a warm spare vs warming a cold node, on the sandbox (real Slurm, real S3 endpoint).

Trials (5 each by default):
  drain  : a health-check-style drain of a training node -> the job RUNNING on the spare (s)
  kill   : SIGKILL of a node's slurmd and job processes  -> the job RUNNING on the spare (s),
           and the step the trainer resumed from vs the newest checkpoint committed before the kill
  cold   : what a cold replacement costs instead: stage the dataset + pull the newest checkpoint on an
           empty node (the warm job's own steps), measured the same way (wall s)

    .venv/bin/python bench/bench_failover.py [--trials 5] [--slurm 24.11|22.05]

Prints one table (min / median / max) and writes bench/results/failover-<slurm>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterops import config as config_mod  # noqa: E402
from clusterops.fsutil import atomic_write_text  # noqa: E402
from clusterops.proc import poll_until  # noqa: E402
from clusterops.sandbox.cluster import Sandbox  # noqa: E402
from clusterops.spare.manager import SpareManager  # noqa: E402
from clusterops.spare.warmth import Warmth  # noqa: E402

CLI = [sys.executable, "-m", "clusterops"]
CONFIG = REPO / "configs" / "demo.toml"


def cli(env, *args, node=None, check=True, timeout=600):
    e = dict(env)
    if node:
        e["CLUSTEROPS_NODE"] = node
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=e, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"clusterops {' '.join(args[:3])}: {r.stderr.strip()[-300:]}")
    return r


def wait(pred, timeout, what, step=0.2):
    ok, value = poll_until(pred, timeout, step)
    if not ok:
        raise RuntimeError(f"timed out waiting for {what}")
    return value


class Bench:
    def __init__(self, root: Path, slurm: str) -> None:
        self.sb = Sandbox(root)
        state = self.sb.up(nodes=4, timeout=90, slurm=slurm)
        self.slurmd_timeout, self.message_timeout = state.slurmd_timeout, state.message_timeout
        os.environ.update(self.sb.exports(state))
        self.env = dict(os.environ)
        self.slurm = self.sb.client(timeout=15)
        cfg = config_mod.load(self.sb.layout.clusterops_conf, env={})
        self.remote = f"s3://{cfg.s3.bucket}/checkpoints/bench"
        cfg.staging.datasets = [f"demo=s3://{cfg.s3.bucket}/datasets/demo/"]
        cfg.checkpoint.s3_prefix = "checkpoints/bench"
        atomic_write_text(self.sb.layout.clusterops_conf, config_mod.dumps_toml(cfg), mode=0o600)
        from clusterops import s3
        from clusterops.demo import _corpus

        work = self.sb.root / "data"
        _corpus(work / "corpus.jsonl", docs=2000)
        cli(
            self.env,
            "data",
            "prepare",
            str(work / "corpus.jsonl"),
            "-o",
            str(work / "shards"),
            "--name",
            "demo",
        )
        client = s3.client(cfg.s3)
        for f in sorted((work / "shards").iterdir()):
            with open(f, "rb") as body:
                client.put_object(Bucket=cfg.s3.bucket, Key=f"datasets/demo/{f.name}", Body=body)
        for node in ("node1", "node2", "node3", "node4"):
            cli(self.env, "stage", "daemon", "--once", node=node)

    def manager(self, tmp: Path) -> SpareManager:
        return SpareManager(self.slurm, "training", "", tmp / "state", tmp / "events.ndjson", min_spares=0)

    def reset(self) -> None:
        for j in self.slurm.jobs():
            if j.active:
                self.slurm.cancel(j.job_id)
        wait(lambda: not any(j.active for j in self.slurm.jobs()), 60, "jobs gone")
        for r in self.slurm.reservations():
            self.slurm.delete_reservation(r.name)
        for n in self.slurm.nodes():
            if not n.responding or n.state == "down":
                self.sb.revive_node(n.name)
        for n in self.slurm.nodes():
            if n.drained:
                self.slurm.resume(n.name)
        wait(lambda: all(n.usable and n.state == "idle" for n in self.slurm.nodes()), 60, "nodes idle")

    def trial(self, kind: str, tmp: Path) -> dict:
        self.reset()
        self.slurm.create_reservation("training", ["node1", "node2"])
        mgr = self.manager(tmp)
        mgr.add("node3", warm=False)
        self.slurm.set_extra("node3", Warmth(state="warm", health=0, datasets_ready=True).encode())
        ckpt = str(self.sb.layout.nodes / "{node}" / "nvme" / "ck" / tmp.name)
        data = str(self.sb.layout.nodes / "{node}" / "nvme" / "datasets" / "demo")
        out = tmp / "train-%j.out"
        r = cli(
            self.env,
            "train",
            "submit",
            str(CONFIG),
            "--checkpoint-dir",
            ckpt,
            "--data",
            data,
            "--steps",
            "100000",
            "--remote",
            f"{self.remote}/{tmp.name}",
            "--reservation",
            "training",
            "--output",
            str(out),
            "--json",
        )
        job = int(json.loads(r.stdout)["job_id"])
        log = Path(str(out).replace("%j", str(job)))
        stop_sync = threading.Event()

        def sync():
            while not stop_sync.wait(2):
                for node in ("node1", "node2"):
                    cli(
                        self.env,
                        "ckpt",
                        "sync",
                        "--remote",
                        f"{self.remote}/{tmp.name}",
                        "--local",
                        str(self.sb.layout.node(node) / "nvme" / "ck" / tmp.name),
                        node=node,
                        check=False,
                    )

        threading.Thread(target=sync, daemon=True).start()

        def committed() -> list[int]:
            text = log.read_text() if log.exists() else ""
            return [int(s) for s in re.findall(r"checkpoint committed: \S+/step-(\d+)", text)]

        wait(lambda: len(committed()) >= 1, 300, "a checkpoint committed")
        # A replacement resumes from what S3 holds whole (a survivor keeps only its own part locally).
        wait(lambda: self._newest_pushed(tmp.name), 300, "a checkpoint verified in S3", step=1)
        stop = threading.Event()
        t = threading.Thread(target=mgr.watch, kwargs={"stop": stop.is_set, "poll_s": 0.5})
        t.start()
        newest_before = self._newest_pushed(tmp.name)
        started = time.monotonic()
        timeline: list[tuple[float, str]] = []
        watching = threading.Event()
        threading.Thread(target=self._timeline, args=(job, started, timeline, watching), daemon=True).start()
        if kind == "drain":
            self.slurm.drain("node2", "clusterops: gpu: row remap pending (bench)")
        else:
            self.sb.kill_node("node2")
        wait(
            lambda: (j := self.slurm.job(job)).state == "RUNNING" and "node3" in j.nodes, 300, "job on spare"
        )
        seconds = time.monotonic() - started
        watching.set()
        resumed = wait(lambda: re.findall(r"resumed from .*?\(step (\d+)", log.read_text()), 300, "resume")
        stop.set()
        stop_sync.set()
        t.join(30)
        newest_pushed = self._newest_pushed(tmp.name)
        return {
            "seconds": seconds,
            "resumed_from": int(resumed[-1]),
            "newest_committed_before": newest_before,
            "newest_in_s3": newest_pushed,
            "timeline": timeline,
        }

    def _timeline(self, job: int, started: float, out: list, stop: threading.Event) -> None:
        """What Slurm showed, as it changed, from the fault on: where the seconds to RUNNING went."""
        last = None
        while not stop.is_set():
            try:
                j = self.slurm.job(job)
                n = {x.name: x for x in self.slurm.nodes()}.get("node2")
                now = (
                    f"job {j.state} {j.reason or '-'} on {','.join(j.nodes) or '-'}; "
                    f"node2 {n.state if n else '?'}{'' if n is None or n.responding else ' NOT_RESPONDING'}"
                )
            except Exception as e:  # noqa: BLE001 - a slow controller is part of the timeline
                now = f"slurm: {type(e).__name__}"
            if now != last:
                out.append((round(time.monotonic() - started, 2), now))
                last = now
            stop.wait(0.25)

    def _newest_pushed(self, name: str):
        r = cli(
            self.env,
            "ckpt",
            "status",
            "--remote",
            f"{self.remote}/{name}",
            "--json",
            node="head",
            check=False,
        )
        try:
            return json.loads(r.stdout).get("remote_latest")
        except ValueError:
            return None

    def cold(self, tmp: Path) -> float:
        """Stage + pull on node4 from empty: what a replacement without a warm spare waits for."""
        local = self.sb.layout.node("node4") / "nvme"
        for sub in ("datasets", ".datasets", "checkpoints"):
            subprocess.run(["rm", "-rf", str(local / sub)], check=False)
        for p in local.glob(".*clusterops*"):
            subprocess.run(["rm", "-rf", str(p)], check=False)
        started = time.monotonic()
        cli(self.env, "stage", "daemon", "--once", node="node4")
        cli(
            self.env,
            "ckpt",
            "pull",
            "--remote",
            f"{self.remote}/{tmp.name}",
            "--dest",
            str(local / "checkpoints"),
            node="node4",
        )
        return time.monotonic() - started


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--kinds", default="drain,kill", help="which failure trials to run, comma-separated")
    ap.add_argument("--slurm", default="24.11", help="the sandbox's Slurm: 24.11 or 22.05")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="co-bench-failover-", dir="/var/tmp"))
    bench = Bench(root, args.slurm)
    version = bench.sb.slurm_version()
    print(f"Slurm {version}", flush=True)
    results = {"drain": [], "kill": [], "cold": []}
    try:
        for i in range(args.trials):
            for kind in args.kinds.split(","):
                tmp = root / f"{kind}{i}"
                tmp.mkdir()
                results[kind].append(bench.trial(kind, tmp))
                r = results[kind][-1]
                print(f"{kind} trial {i}: { ({k: v for k, v in r.items() if k != 'timeline'}) }", flush=True)
                for at, what in r["timeline"]:
                    print(f"    +{at:6.2f}s  {what}", flush=True)
            results["cold"].append(bench.cold(root / f"kill{i}"))
            print(f"cold trial {i}: {results['cold'][-1]:.1f}s", flush=True)
    finally:
        bench.reset()
        bench.sb.down()
        # The trials' own directories (data, per-trial logs) go too; nothing is mounted below root.
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for kind in [k for k in ("drain", "kill") if results[k]]:
        s = spread([r["seconds"] for r in results[kind]])
        lost = [r["newest_committed_before"] - r["resumed_from"] for r in results[kind]]
        rows.append((kind, s, max(lost)))
    cold = spread(results["cold"])
    print()
    print(f"{'workload':<34} {'min':>7} {'median':>7} {'max':>7}   extra")
    labels = {"drain": "health drain -> RUNNING on spare", "kill": "slurmd killed -> RUNNING on spare"}
    for kind, s, lost in rows:
        print(
            f"{labels[kind]:<34} {s['min']:7.1f} {s['median']:7.1f} {s['max']:7.1f}   "
            f"resumed behind the newest checkpoint in S3 by: {max(0, lost)} steps (max over trials)"
        )
    print(f"{'cold node: stage + pull':<34} {cold['min']:7.1f} {cold['median']:7.1f} {cold['max']:7.1f}")
    for kind, s, _ in rows:
        print(f"ratio cold/{kind}: {cold['median'] / s['median']:.2f}x (median)")
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "slurm": version,
        "slurmd_timeout_s": bench.slurmd_timeout,
        "message_timeout_s": bench.message_timeout,
        "trials": results,
        "summary": {k: spread([r["seconds"] for r in results[k]]) for k in ("drain", "kill") if results[k]}
        | {"cold": cold},
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    dest = REPO / "bench" / "results" / f"failover-{args.slurm}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
