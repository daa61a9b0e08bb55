"""Parsing a staging manifest: 10k, 100k and 1M entries, against a bare `json.load` of the same file.

`json.load` is the floor any reader of a JSON manifest pays; ours adds the checks that make the
manifest a typed, trusted record (every path, size and checksum; duplicates; a file that is also a
directory; the fingerprint recomputed over the whole set). Parsing used to be quadratic (20,000 entries
took 20 s); the target now is 1M entries in under 10 s on a 2-core machine. The last column is the
daemon's second look at an unchanged manifest (ManifestCache: a stat, no parse).

    .venv/bin/python bench/bench_manifest.py [--repeats 3] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clusterops.staging import manifest as mf  # noqa: E402 - after the path above
from clusterops.staging.daemon import ManifestCache  # noqa: E402

TARGET_1M_S = 10.0


def build(path: Path, n: int) -> int:
    """A manifest of n files in 256 directories, as `stage manifest` writes it; returns its size."""
    files = [
        mf.FileEntry(
            f"shards/{i % 256:03d}/part-{i:08d}.ds", 100_000_000 + i, f"{(i * 2654435761) % 2**32:08x}"
        )
        for i in range(n)
    ]
    mf.Manifest(source="s3://bucket/datasets/fw/", files=files, name="fw").save(path)
    return path.stat().st_size


def timed(fn) -> tuple[float, float]:
    gc.collect()
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def json_load(path: Path) -> None:
    with open(path, "rb") as f:
        json.load(f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="co-manifest-bench-") as d:
        for n in sizes:
            path = Path(d) / f"m{n}.json"
            nbytes = build(path, n)
            json_load(path)  # one untimed read: the page cache serves both tools alike
            tools = {
                "json.load (peer)": lambda p=path: json_load(p),
                "clusterops manifest.load": lambda p=path: mf.load(p),
            }
            samples: dict[str, list[tuple[float, float]]] = {k: [] for k in tools}
            for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
                for name, fn in tools.items():
                    samples[name].append(timed(fn))
            cache = ManifestCache()
            cache.load(str(path))
            cached = [timed(lambda c=cache, p=path: c.load(str(p)))[0] for _ in range(args.repeats)]
            assert cache.parses == 1
            peer = statistics.median(w for w, _ in samples["json.load (peer)"])
            for name, runs in samples.items():
                walls = [w for w, _ in runs]
                med = statistics.median(walls)
                rows.append(
                    {
                        "workload": f"{n} entries ({nbytes / 1e6:.1f} MB)",
                        "entries": n,
                        "bytes": nbytes,
                        "tool": name,
                        "runs": len(runs),
                        "wall_min_s": round(min(walls), 4),
                        "wall_median_s": round(med, 4),
                        "wall_max_s": round(max(walls), 4),
                        "cpu_median_s": round(statistics.median(c for _, c in runs), 4),
                        "entries_per_s": round(n / med),
                        "this_vs_json_load": round(med / peer, 2),
                        "unchanged_reload_s": round(statistics.median(cached), 6)
                        if "clusterops" in name
                        else None,
                    }
                )
            path.unlink()
    print(
        f"{'workload':26} {'tool':26} {'min s':>7} {'median':>7} {'max s':>7} {'cpu s':>7}"
        f" {'entries/s':>10} {'x json':>7} {'reload':>8}"
    )
    for r in rows:
        reload = f"{r['unchanged_reload_s'] * 1000:6.2f}ms" if r["unchanged_reload_s"] is not None else ""
        print(
            f"{r['workload']:26} {r['tool']:26} {r['wall_min_s']:7.3f} {r['wall_median_s']:7.3f}"
            f" {r['wall_max_s']:7.3f} {r['cpu_median_s']:7.3f} {r['entries_per_s']:10d}"
            f" {r['this_vs_json_load']:7.2f} {reload:>8}"
        )
    one_m = [r for r in rows if r["entries"] == 1_000_000 and "clusterops" in r["tool"]]
    if one_m:
        verdict = "meets" if one_m[0]["wall_median_s"] < TARGET_1M_S else "misses"
        print(
            f"\n1M entries: median {one_m[0]['wall_median_s']:.2f} s:"
            f" {verdict} the {TARGET_1M_S:.0f} s target"
        )
    out = REPO / "bench" / "results" / "manifest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "staging manifest parse",
                "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "kernel": platform.release(),
                    "loadavg_at_end": os.getloadavg(),
                },
                "target_1m_s": TARGET_1M_S,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
