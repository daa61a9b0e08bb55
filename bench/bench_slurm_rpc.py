"""How hard clusterops leans on slurmctld: RPCs per spare-watcher tick and per job() look-up, counted by
slurmctld itself (sdiag's per-message-type counters), with 1 and with 50 jobs in the queue, on Slurm 24.11
and 22.05 sandboxes.

    .venv/bin/python bench/bench_slurm_rpc.py [--repeats 5] [--versions 24.11,22.05]

The peer is what a script would otherwise run for the same answers: `squeue --json` for one job (every
job, filtered by the caller) and the nodes, jobs and reservations a watcher needs each tick. The target
(issue 16): the count per tick does not grow with the number of jobs. Results: bench/results/slurm_rpc.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterops.sandbox.cluster import Sandbox  # noqa: E402
from clusterops.spare.manager import SpareManager  # noqa: E402

# sdiag's own request, and what slurmd and slurmstepd send on their own schedule: not ours to count.
IGNORED = re.compile(r"^(REQUEST_STATS_INFO|MESSAGE_|REQUEST_COMPLETE_|REQUEST_STEP_COMPLETE|REQUEST_HEALTH)")
LINE = re.compile(r"^\s+([A-Z_]+)\s+\(\s*\d+\)\s+count:(\d+)")


def rpc_counts(env: dict[str, str]) -> dict[str, int]:
    """slurmctld's RPC counts by message type (sdiag's 'by message type' section)."""
    out = subprocess.run(["sdiag"], env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    counts: dict[str, int] = {}
    section = False
    for line in out.splitlines():
        if line.startswith("Remote Procedure Call statistics by message type"):
            section = True
            continue
        if line.startswith("Remote Procedure Call statistics by user"):
            break
        m = LINE.match(line) if section else None
        if m:
            counts[m.group(1)] = int(m.group(2))
    if not counts:
        raise SystemExit(f"sdiag printed no RPC statistics:\n{out[:400]}")
    return counts


def counted(env: dict[str, str], fn) -> tuple[dict[str, int], float]:
    """Run fn(); the RPCs it cost slurmctld by type (sdiag's own excluded), and its wall seconds."""
    before = rpc_counts(env)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    after = rpc_counts(env)
    diff = {
        k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) and not IGNORED.match(k)
    }
    return diff, wall


def measure(version: str, repeats: int) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix=f"co-bench-rpc-{version}-", dir="/var/tmp"))
    sb = Sandbox(root)
    rows = []
    work: Path | None = None
    try:
        state = sb.up(nodes=2, mode="ports", timeout=90, slurm=version)
        env = {**__import__("os").environ, **sb.exports(state)}
        client = sb.client(timeout=15)
        client.create_reservation("train-b", ["node1"])
        work = Path(tempfile.mkdtemp(prefix="co-bench-rpc-mgr-"))
        mgr = SpareManager(
            client, "train-b", "", work / "state", work / "events.ndjson", work / "textfile", min_spares=0
        )
        jobs: list[int] = []
        for target in (1, 50):
            while len(jobs) < target:
                jobs.append(client.submit(["--hold", "-N1", "-o", "/dev/null", "--wrap", "true"]))
            mgr.tick()  # first tick of this queue: any one-off work out of the way
            for what, fn, peer in (
                ("watcher tick", mgr.tick, ["squeue", "--json"]),
                ("job(id)", lambda: client.job(jobs[0]), ["squeue", "--json"]),
            ):
                ours = [counted(env, fn) for _ in range(repeats)]
                theirs = [
                    counted(env, lambda a=peer: subprocess.run(a, env=env, capture_output=True, timeout=30))
                    for _ in range(repeats)
                ]
                rows.append(
                    {
                        "slurm": sb.slurm_version(),
                        "jobs": len(jobs),
                        "what": what,
                        "rpcs": [sum(d.values()) for d, _ in ours],
                        "by_type": ours[-1][0],
                        "wall_s": [round(w, 4) for _, w in ours],
                        "peer": " ".join(peer),
                        "peer_rpcs": [sum(d.values()) for d, _ in theirs],
                        "peer_wall_s": [round(w, 4) for _, w in theirs],
                    }
                )
        for j in jobs:
            client.cancel(j)
    finally:
        sb.down()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--versions", default="24.11,22.05")
    args = ap.parse_args()
    rows = []
    for version in args.versions.split(","):
        rows += measure(version, args.repeats)
    print(f"{'slurm':9} {'jobs':>4}  {'what':13} {'RPCs (min/med/max)':>19}  {'ms med':>7}  by type")
    for r in rows:
        rp = r["rpcs"]
        print(
            f"{r['slurm']:9} {r['jobs']:>4}  {r['what']:13} "
            f"{min(rp):>5}/{statistics.median(rp):>5g}/{max(rp):<5}"
            f"  {statistics.median(r['wall_s']) * 1e3:7.0f}  {r['by_type']}"
        )
    print()
    print("peer (one `squeue --json`, what a script reads for one job):")
    for r in rows:
        if r["what"] == "job(id)":
            print(
                f"{r['slurm']:9} {r['jobs']:>4}  {r['peer']:13} RPCs {statistics.median(r['peer_rpcs']):g}, "
                f"{statistics.median(r['peer_wall_s']) * 1e3:.0f} ms; ours "
                f"{statistics.median(r['wall_s']) * 1e3:.0f} ms"
            )
    out = REPO / "bench" / "results" / "slurm_rpc.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats, "rows": rows}, indent=1)
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
