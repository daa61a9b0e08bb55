"""Checkpoint push and pull: `clusterops ckpt` against s5cmd and `aws s3 cp --recursive`, same endpoint, same
data, same run. A DCP-like directory (a few large files, many small ones, a `.metadata`) of >= 2 GiB.

Reports wall MB/s, client CPU-seconds per GB and the S3 server's CPU-seconds, min/median/max over the
repeats; writes bench/results/ckpt.json. Client CPU is given two ways: the tool's own (its processes'
rusage), and the client side's (the whole machine's busy CPU during the run less the server's), which also
counts what the tool leaves to the kernel, such as the writeback of a buffered writer's page cache. The
endpoint is moto's server (GIL-bound, the bottleneck here), which is why client and server CPU are
reported next to the wall figures.

    .venv/bin/python bench/bench_ckpt.py [--large 4 --large-mib 384 --small 256 --small-mib 2 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from benchlib import drop_caches, free_port, run_measured, warm

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BUCKET = "bench"


def make_data(root: Path, large: int, large_mib: int, small: int, small_mib: int) -> Path:
    step = root / "L" / "step-1000"
    step.mkdir(parents=True)
    (step / ".metadata").write_bytes(os.urandom(64 << 10))
    for i in range(large):
        _random_file(step / f"__{i}_0.distcp", large_mib << 20)
    for i in range(small):
        _random_file(step / f"__{large + i}_0.distcp", small_mib << 20)
    return step


def _random_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            # Distinct blocks so nothing dedups or compresses; cheap to make.
            f.write(i.to_bytes(8, "little") + block[8:])


def settle(*paths: Path) -> None:
    """The same page-cache state before every measured run: write back and drop the caches (as root),
    then read `paths` back in. Without it the state the previous run left behind moved a tool's system
    time by up to 2x (a 2 GiB pull: 1.1 vs 2.5 system s/GB in back-to-back runs)."""
    drop_caches()  # not root: the caches stay as they are
    for path in paths:
        warm(path)


def delete_prefix(client, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


def commands(tool: str, direction: str, src: Path, dest: Path, prefix: str, endpoint: str) -> list[str]:
    """The tool's command line. A peer's pull is followed by `sync`: ours ends with the checkpoint on
    disk (committed locally), so theirs must too for the same work."""
    argv = _commands(tool, direction, src, dest, prefix, endpoint)
    if tool != "clusterops" and direction == "pull":
        return ["sh", "-c", f"{shlex.join(argv)} && sync"]
    return argv


def _commands(tool: str, direction: str, src: Path, dest: Path, prefix: str, endpoint: str) -> list[str]:
    url = f"s3://{BUCKET}/{prefix}"
    if tool == "clusterops":
        base = [sys.executable, "-m", "clusterops", "ckpt"]
        if direction == "push":
            return [*base, "push", "--local", str(src.parent), "--remote", url]
        return [*base, "pull", "--remote", url, "--dest", str(dest)]
    if tool == "s5cmd":
        base = [str(VENV_BIN / "s5cmd"), "--endpoint-url", endpoint]
        if direction == "push":
            return [*base, "cp", f"{src}/", f"{url}/step-1000/"]
        return [*base, "cp", f"{url}/step-1000/*", f"{dest}/step-1000/"]
    base = [
        str(VENV_BIN / "aws"),
        "--endpoint-url",
        endpoint,
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
    ]
    if direction == "push":
        return [*base, str(src), f"{url}/step-1000/"]
    return [*base, f"{url}/step-1000/", str(dest / "step-1000")]


def summarize(runs: list[dict[str, float]], gb: float) -> dict[str, float]:
    mbps = [gb * 1000 / r["wall_s"] for r in runs]
    cpu = [r["client_cpu_s"] / gb for r in runs]
    srv = [r["server_cpu_s"] / gb for r in runs]
    side = [r["client_side_cpu_s"] / gb for r in runs]
    return {
        "mb_s_min": min(mbps),
        "mb_s_median": statistics.median(mbps),
        "mb_s_max": max(mbps),
        "client_cpu_s_per_gb_median": statistics.median(cpu),
        "client_cpu_s_per_gb_min": min(cpu),
        "client_cpu_s_per_gb_max": max(cpu),
        "server_cpu_s_per_gb_median": statistics.median(srv),
        "client_side_cpu_s_per_gb_median": statistics.median(side),
        "client_side_cpu_s_per_gb_min": min(side),
        "client_side_cpu_s_per_gb_max": max(side),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--large-mib", type=int, default=384)
    ap.add_argument("--small", type=int, default=256)
    ap.add_argument("--small-mib", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", default="clusterops,s5cmd,aws")
    args = ap.parse_args()
    tools = args.tools.split(",")

    import boto3

    work = Path(tempfile.mkdtemp(prefix="co-bench-ckpt-", dir="/var/tmp"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CLUSTEROPS_CONFIG": str(work / "none.toml"),
        "TMPDIR": str(work / "moto-tmp"),
    }
    (work / "none.toml").write_text("")
    (work / "moto-tmp").mkdir()
    server_proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        server = psutil.Process(server_proc.pid)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        client.create_bucket(Bucket=BUCKET)

        src = make_data(work, args.large, args.large_mib, args.small, args.small_mib)
        total = sum(p.stat().st_size for p in src.iterdir())
        subprocess.run(
            [sys.executable, "-m", "clusterops", "ckpt", "commit", str(src), "--step", "1000"],
            env=env,
            check=True,
            capture_output=True,
        )
        gb = total / 1e9
        files = len(list(src.iterdir())) - 1
        print(
            f"data: {files} files, {total / 2**30:.2f} GiB ({args.large} x {args.large_mib} MiB, "
            f"{args.small} x {args.small_mib} MiB, .metadata); endpoint moto {endpoint}",
            flush=True,
        )

        results: dict[str, dict[str, list[dict[str, float]]]] = {t: {"push": [], "pull": []} for t in tools}
        for rep in range(args.repeats):
            for tool in tools:
                prefix = f"{tool}-{rep}"
                settle(src)  # push reads the checkpoint from the page cache
                push = commands(tool, "push", src, work / "D", prefix, endpoint)
                r = run_measured(push, env, server, timeout=1800)
                results[tool]["push"].append(r)
                dest = work / f"D-{tool}-{rep}"
                dest.mkdir()
                settle(work / "moto-tmp")  # the server's copies of large objects, served from memory
                pull = commands(tool, "pull", src, dest, prefix, endpoint)
                r2 = run_measured(pull, env, server, timeout=1800)
                results[tool]["pull"].append(r2)
                pulled = dest / "step-1000"
                same = (
                    subprocess.run(
                        ["cmp", "-s", str(src / "__0_0.distcp"), str(pulled / "__0_0.distcp")]
                    ).returncode
                    == 0
                )
                if not same:
                    raise SystemExit(f"{tool}: pulled data differs")
                shutil.rmtree(dest)
                delete_prefix(client, prefix)
                print(
                    f"rep {rep} {tool:>10}: push {gb * 1000 / r['wall_s']:6.0f} MB/s "
                    f"cpu {r['client_cpu_s'] / gb:5.2f} s/GB | pull {gb * 1000 / r2['wall_s']:6.0f} MB/s "
                    f"cpu {r2['client_cpu_s'] / gb:5.2f} s/GB | client side: push "
                    f"{r['client_side_cpu_s'] / gb:5.2f} pull {r2['client_side_cpu_s'] / gb:5.2f} s/GB",
                    flush=True,
                )

        table = []
        for direction in ("push", "pull"):
            for tool in tools:
                s = summarize(results[tool][direction], gb)
                table.append({"direction": direction, "tool": tool, **s})
        ours = {row["direction"]: row for row in table if row["tool"] == "clusterops"}
        print()
        print(
            f"{'workload':<8} {'tool':<11} {'MB/s min/med/max':>22} {'cpu s/GB':>9} {'side s/GB':>9} "
            f"{'server s/GB':>11} {'ours/peer MB/s':>14} {'ours/peer cpu':>13} {'ours/peer side':>14}"
        )
        for row in table:
            o = ours.get(row["direction"])
            ratio = f"{o['mb_s_median'] / row['mb_s_median']:.2f}" if o else "-"
            cratio = (
                f"{o['client_cpu_s_per_gb_median'] / row['client_cpu_s_per_gb_median']:.2f}" if o else "-"
            )
            side = "client_side_cpu_s_per_gb_median"
            sratio = f"{o[side] / row[side]:.2f}" if o else "-"
            row["ours_over_peer_mb_s"] = float(ratio) if o else None
            row["ours_over_peer_cpu"] = float(cratio) if o else None
            row["ours_over_peer_client_side_cpu"] = float(sratio) if o else None
            mbs = f"{row['mb_s_min']:.0f}/{row['mb_s_median']:.0f}/{row['mb_s_max']:.0f}"
            print(
                f"{row['direction']:<8} {row['tool']:<11} {mbs:>22} {row['client_cpu_s_per_gb_median']:9.2f} "
                f"{row[side]:9.2f} {row['server_cpu_s_per_gb_median']:11.2f} {ratio:>14} {cratio:>13}"
                f" {sratio:>14}"
            )
        out = {
            "bench": "ckpt",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": {
                "cores": os.cpu_count(),
                "mem_gib": round(psutil.virtual_memory().total / 2**30),
                "platform": platform.platform(),
            },
            "data": {"bytes": total, "files": files + 1},
            "repeats": args.repeats,
            "caches": "dropped before every run; then the source (push) or the server's files (pull) read in",
            "table": table,
            "raw": results,
        }
        (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (REPO / "bench" / "results" / "ckpt.json").write_text(json.dumps(out, indent=2) + "\n")
    finally:
        server_proc.terminate()
        try:
            server_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server_proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
