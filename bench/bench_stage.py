"""Staging a dataset onto local disk: `clusterops stage run` against `cp -r` and `rsync -a` (from a
directory), and against s5cmd and `aws s3 sync` (from S3), same shards, same run.

Ours always checksums every byte on the way (CRC32C) and fsyncs every file; so that the peers are timed
for the same end state, each peer command is followed by `sync`, and the table also shows each peer plus
a checksum pass over its copy (what it costs them to give the same guarantee). Page caches are dropped
before every timed run when the kernel lets us; otherwise every tool reads from a warm cache.

The directory comparison runs onto two destinations. The first shares the source's disk (here a virtio
disk whose writes top out near 0.45 GB/s, so every tool waits on the same device). The second is the shape
staging exists for: a destination much faster than the source (a node's NVMe RAID 0 against a network
filesystem), stood in for by XFS on a loop device backed by RAM, a different filesystem from the source
as in production. It needs root, losetup and mkfs.xfs, and memory for the data; without them it is
skipped and says why.

    .venv/bin/python bench/bench_stage.py [--files 32 --file-mib 128 --repeats 3 --s3-repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
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
CLI = [sys.executable, "-m", "clusterops"]
BUCKET = "bench"
QUIET = "--only-show-errors"


def make_shards(root: Path, files: int, mib: int) -> Path:
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for i in range(files):
        with open(root / f"train_{i:05d}.ds", "wb") as f:
            for j in range(mib):
                f.write((i * 100003 + j).to_bytes(8, "little") + block[8:])
    return root


@contextlib.contextmanager
def ram_xfs(work: Path, size: int):
    """Yield the mount point of a fresh XFS on a loop device over a tmpfs file of `size` bytes (the fast
    local destination), or a reason (str) it cannot be made here; everything is torn down after."""
    missing = [t for t in ("losetup", "mkfs.xfs", "mount") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        yield "needs root" if not missing else f"{', '.join(missing)} not found"
        return
    if psutil.virtual_memory().available < 3 * size:
        yield f"needs {3 * size / 2**30:.1f} GiB of free memory"
        return
    ram, mnt = work / "ram", work / "fast"
    ram.mkdir()
    mnt.mkdir()
    undo: list[list[str]] = []
    reason = ""
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(ram)], check=True)
        undo.append(["umount", str(ram)])
        # Every page of the image allocated now: a first write to a block would otherwise also pay for
        # tmpfs allocating and zeroing its page, and the first tool to run would be slowed by it.
        fd = os.open(ram / "disk.img", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        loop = subprocess.run(
            ["losetup", "--find", "--show", str(ram / "disk.img")], check=True, capture_output=True, text=True
        ).stdout.strip()
        undo.append(["losetup", "-d", loop])
        subprocess.run(["mkfs.xfs", "-q", loop], check=True)
        subprocess.run(["mount", "-o", "noatime", loop, str(mnt)], check=True)
        undo.append(["umount", str(mnt)])
    except subprocess.CalledProcessError as e:
        reason = f"{' '.join(map(str, e.cmd))} failed ({e.returncode})"
    try:
        yield reason or mnt
    finally:
        for cmd in reversed(undo):
            subprocess.run(cmd, check=False)


def sh(cmd: str) -> list[str]:
    return ["sh", "-c", cmd]


def dir_tools(src: Path, dest: Path, manifest: Path) -> dict[str, list[list[str]]]:
    """Each tool is a list of commands timed together."""
    check = [*CLI, "stage", "manifest", str(dest), "-o", str(dest.parent / "check.json")]
    return {
        "clusterops stage run (verified, fsync)": [
            [*CLI, "stage", "run", str(manifest), "--dest", str(dest)]
        ],
        "cp -r + sync": [sh(f"cp -r '{src}' '{dest}' && sync")],
        "cp -r + sync + checksum pass": [sh(f"cp -r '{src}' '{dest}' && sync"), check],
        "rsync -a + sync": [sh(f"rsync -a '{src}/' '{dest}/' && sync")],
        "rsync -a + sync + checksum pass": [sh(f"rsync -a '{src}/' '{dest}/' && sync"), check],
    }


def s3_tools(manifest: Path, dest: Path, endpoint: str) -> dict[str, list[list[str]]]:
    url = f"s3://{BUCKET}/ds/"
    return {
        "clusterops stage run (verified, fsync)": [
            [*CLI, "stage", "run", str(manifest), "--source", url, "--dest", str(dest)]
        ],
        "s5cmd cp + sync": [
            sh(f"'{VENV_BIN / 's5cmd'}' --endpoint-url {endpoint} cp '{url}*' '{dest}/' && sync")
        ],
        "aws s3 sync + sync": [
            sh(f"'{VENV_BIN / 'aws'}' --endpoint-url {endpoint} s3 sync {url} '{dest}' {QUIET} && sync")
        ],
    }


def run_tool(cmds: list[list[str]], env, server=None) -> dict[str, float]:
    total: dict[str, float] = {}
    for argv in cmds:
        for k, v in run_measured(argv, env, server, cwd=REPO).items():
            total[k] = total.get(k, 0.0) + v
    return total


def same_tree(a: Path, b: Path) -> bool:
    for p in a.rglob("*"):
        if p.is_file():
            q = b / p.relative_to(a)
            if not q.is_file() or q.stat().st_size != p.stat().st_size:
                return False
    return True


def summarize(runs: list[dict[str, float]], gb: float) -> dict[str, float]:
    rate = [gb / r["wall_s"] for r in runs]
    out = {
        "gb_s_min": min(rate),
        "gb_s_median": statistics.median(rate),
        "gb_s_max": max(rate),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "client_cpu_s_per_gb": statistics.median(r["client_cpu_s"] / gb for r in runs),
        "client_side_cpu_s_per_gb": statistics.median(r["client_side_cpu_s"] / gb for r in runs),
    }
    if all("server_cpu_s" in r for r in runs):
        out["server_cpu_s_per_gb"] = statistics.median(r["server_cpu_s"] / gb for r in runs)
    return out


def bench(tools, dest: Path, repeats: int, env, gb: float, src: Path, server=None, cold=True) -> dict:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
    dropped = False
    for rep in range(repeats):
        order = list(tools) if rep % 2 == 0 else list(reversed(list(tools)))
        for name in order:
            shutil.rmtree(dest, ignore_errors=True)
            for meta in dest.parent.glob(f".{dest.name}.clusterops"):
                shutil.rmtree(meta)
            (dest.parent / "check.json").unlink(missing_ok=True)
            if cold:
                dropped = drop_caches()
            if not dropped:
                warm(src)
            if "s5cmd" in name or "aws" in name:
                dest.mkdir(parents=True)
            r = run_tool(tools[name], env, server)
            if not same_tree(src, dest):
                raise SystemExit(f"{name}: copy incomplete")
            results[name].append(r)
            print(f"  rep {rep + 1} {name}: {r['wall_s']:.2f}s ({gb / r['wall_s']:.3f} GB/s)", flush=True)
    return {
        "caches": "dropped" if dropped else "warm",
        # A run of one part keeps the other parts of stage.json, which may come from an earlier run.
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": results,
        "summary": {},
    }


def print_table(title: str, summary: dict[str, dict[str, float]], ours: str, unit: str) -> None:
    print(f"\n{title}")
    mult = 1000 if unit == "MB/s" else 1
    head = f"{'tool':42} {unit + ' min':>10} {'median':>9} {'max':>9}"
    head += f" {'cpu-s/GB':>9} {'side cpu-s/GB':>13} {'srv cpu-s/GB':>12} {'ours/peer':>9}"
    print(head)
    base = summary[ours]["gb_s_median"]
    for name, s in summary.items():
        ratio = base / s["gb_s_median"]
        srv = f"{s['server_cpu_s_per_gb']:.2f}" if "server_cpu_s_per_gb" in s else "-"
        print(
            f"{name:42} {s['gb_s_min'] * mult:10.3f} {s['gb_s_median'] * mult:9.3f}"
            f" {s['gb_s_max'] * mult:9.3f}"
            f" {s['client_cpu_s_per_gb']:9.2f} {s['client_side_cpu_s_per_gb']:13.2f} {srv:>12} {ratio:9.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--file-mib", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--s3-repeats", type=int, default=2)
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--skip-dir", action="store_true")
    ap.add_argument("--skip-aws", action="store_true", help="S3 part: leave out awscli (the slowest peer)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="co-bench-stage-", dir="/var/tmp"))
    (work / "none.toml").write_text("[staging]\nmax_workers = 8\n")
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(work / "none.toml"), "TMPDIR": str(work / "tmp")}
    (work / "tmp").mkdir()
    server_proc = None
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
        },
    }
    try:
        src = make_shards(work / "src", args.files, args.file_mib)
        total = sum(p.stat().st_size for p in src.iterdir())
        gb = total / 1e9
        manifest = work / "M.json"
        subprocess.run([*CLI, "stage", "manifest", str(src), "-o", str(manifest)], env=env, check=True)
        print(
            f"data: {args.files} x {args.file_mib} MiB shards = {total / 2**30:.2f} GiB in {src}", flush=True
        )
        report["data"] = {"files": args.files, "file_mib": args.file_mib, "bytes": total}
        versions = {
            "cp": subprocess.run(["cp", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "rsync": subprocess.run(
                ["rsync", "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
        }

        def dir_part(dest: Path, title: str) -> dict:
            print(title, flush=True)
            part = bench(dir_tools(src, dest, manifest), dest, args.repeats, env, gb, src)
            part["summary"] = {k: summarize(v, gb) for k, v in part["runs"].items()}
            print_table(
                f"{title} ({part['caches']} caches), GB/s",
                part["summary"],
                "clusterops stage run (verified, fsync)",
                "GB/s",
            )
            return part

        if not args.skip_dir:
            report["dir"] = dir_part(work / "dest", "directory -> the source's own disk")
            # XFS needs room beyond the data for its log and metadata.
            with ram_xfs(work, total + total // 4 + (256 << 20)) as fast:
                if isinstance(fast, str):
                    print(f"fast destination skipped: {fast}", flush=True)
                    report["dir_fast"] = {"skipped": fast}
                else:
                    title = "directory -> fast local filesystem (XFS on a RAM-backed loop device)"
                    report["dir_fast"] = dir_part(fast / "dest", title)

        if not args.skip_s3:
            import boto3

            port = free_port()
            endpoint = f"http://127.0.0.1:{port}"
            creds = {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            env = {**env, **creds, "AWS_ENDPOINT_URL": endpoint}
            server_proc = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            server = psutil.Process(server_proc.pid)
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            s3.create_bucket(Bucket=BUCKET)
            t0 = time.perf_counter()
            subprocess.run(
                [str(VENV_BIN / "s5cmd"), "--endpoint-url", endpoint, "cp", f"{src}/", f"s3://{BUCKET}/ds/"],
                env=env,
                check=True,
                capture_output=True,
            )
            print(f"uploaded to moto in {time.perf_counter() - t0:.1f}s", flush=True)
            versions["s5cmd"] = subprocess.run(
                [str(VENV_BIN / "s5cmd"), "version"], capture_output=True, text=True
            ).stdout.strip()
            versions["aws"] = (
                subprocess.run(
                    [str(VENV_BIN / "aws"), "--version"], capture_output=True, text=True
                ).stdout.strip()
                or "awscli v1"
            )
            print("S3 (moto on loopback) -> local disk", flush=True)
            s = bench(
                {
                    k: v
                    for k, v in s3_tools(manifest, work / "dest", endpoint).items()
                    if not (args.skip_aws and k.startswith("aws"))
                },
                work / "dest",
                args.s3_repeats,
                env,
                gb,
                src,
                server,
            )
            s["summary"] = {k: summarize(v, gb) for k, v in s["runs"].items()}
            report["s3"] = s
            print_table(
                f"S3 -> local ({s['caches']} caches), MB/s",
                s["summary"],
                "clusterops stage run (verified, fsync)",
                "MB/s",
            )
        report["versions"] = versions
        out = REPO / "bench" / "results" / "stage.json"
        out.parent.mkdir(exist_ok=True)
        if (args.skip_s3 or args.skip_dir) and out.exists():
            # A run of one part keeps the other part's last results.
            report = {**json.loads(out.read_text()), **report}
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {out}")
    finally:
        if server_proc:
            server_proc.terminate()
            server_proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
