"""Node acceptance: measure what this node delivers and compare it with what its hardware should.

Each figure is measured, set against the instance profile's expectation, and given a verdict. A figure
the node cannot produce (no GPU here) is reported as unavailable with the reason, never as zero and never
invented. fio measures the local NVMe where it is installed; torch measures GPUs and the collectives.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterops import proc
from clusterops.verdict import Status

GIB = 1 << 30


@dataclass(frozen=True)
class Expectation:
    value: float
    unit: str
    # Ratios of measured/expected below which the figure warns or fails; None: informational only.
    warn_below: float | None = 0.9
    fail_below: float | None = 0.75


# Reference figures: H100 p5.48xlarge from the SmolLM3 report and the playbook (DESIGN.md); the sandbox
# floor is what one shared 2-core VM gives, so a sandbox node passes unless something is really wrong.
PROFILES: dict[str, dict[str, Expectation]] = {
    "p5.48xlarge": {
        "gpu_bf16_matmul_tflops": Expectation(714.0, "TFLOP/s per GPU"),
        "gpu_hbm_copy_gbps": Expectation(2600.0, "GB/s per GPU"),
        "h2d_copy_gbps": Expectation(14.2, "GB/s per GPU"),
        "nccl_allreduce_busbw_gbps": Expectation(360.0, "GB/s"),
        "cpu_fp32_matmul_gflops": Expectation(500.0, "GFLOP/s", 0.5, 0.25),
        "host_memcpy_gbps": Expectation(10.0, "GB/s", 0.5, 0.25),
        "nvme_seq_read_gibps": Expectation(26.59, "GiB/s"),
        "nvme_randread_4k_kiops": Expectation(337.0, "kIOPS"),
        "netfs_seq_read_gibps": Expectation(4.21, "GiB/s", None, None),
        "gloo_allreduce_busbw_gbps": Expectation(2.0, "GB/s", 0.5, 0.25),
        # EFA point to point (SmolLM3 report); `bench nccl` across nodes.
        "internode_allreduce_busbw_gbps": Expectation(42.0, "GB/s"),
    },
    "sandbox": {
        "cpu_fp32_matmul_gflops": Expectation(5.0, "GFLOP/s", 0.5, 0.2),
        "host_memcpy_gbps": Expectation(1.0, "GB/s", 0.5, 0.2),
        "nvme_seq_read_gibps": Expectation(0.2, "GiB/s", 0.5, 0.2),
        "nvme_randread_4k_kiops": Expectation(2.0, "kIOPS", 0.5, 0.2),
        "netfs_seq_read_gibps": Expectation(0.2, "GiB/s", None, None),
        "gloo_allreduce_busbw_gbps": Expectation(0.05, "GB/s", 0.5, 0.2),
        "internode_allreduce_busbw_gbps": Expectation(0.02, "GB/s", 0.5, 0.2),
    },
}
GPU_FIGURES = ("gpu_bf16_matmul_tflops", "gpu_hbm_copy_gbps", "h2d_copy_gbps", "nccl_allreduce_busbw_gbps")


@dataclass
class Figure:
    name: str
    measured: float | None
    expected: float | None
    unit: str
    ratio: float | None
    verdict: int
    detail: str = ""
    available: bool = True


@dataclass
class NodeReport:
    node: str
    profile: str
    verdict: int
    figures: list[Figure] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "profile": self.profile,
            "verdict": self.verdict,
            "figures": [asdict(f) for f in self.figures],
        }

    @property
    def fit(self) -> bool:
        """Fit to be a spare or join the reservation: nothing critical among what could be measured."""
        return self.verdict != Status.CRITICAL


class Unavailable(Exception):
    """This node cannot produce the figure (no GPU, no fio, nothing to read)."""


def judge(name: str, measured: float | None, expect: Expectation | None, detail: str = "") -> Figure:
    if measured is None:
        return Figure(
            name,
            None,
            expect.value if expect else None,
            expect.unit if expect else "",
            None,
            int(Status.UNKNOWN),
            detail,
            available=False,
        )
    if expect is None:
        return Figure(name, measured, None, "", None, int(Status.OK), detail or "no expectation in profile")
    ratio = measured / expect.value if expect.value else None
    verdict = Status.OK
    if ratio is not None and expect.fail_below is not None and ratio < expect.fail_below:
        verdict = Status.CRITICAL
    elif ratio is not None and expect.warn_below is not None and ratio < expect.warn_below:
        verdict = Status.WARNING
    return Figure(
        name,
        round(measured, 3),
        expect.value,
        expect.unit,
        round(ratio, 3) if ratio is not None else None,
        int(verdict),
        detail,
    )


def run_node_bench(
    profile: str,
    local_root: Path,
    netfs_root: Path | None = None,
    size_mib: int = 512,
    seconds: float = 5.0,
    only: list[str] | None = None,
    node: str = "",
) -> NodeReport:
    expectations = PROFILES.get(profile, {})
    measures: dict[str, Callable[[], tuple[float, str]]] = {
        "gpu_bf16_matmul_tflops": gpu_matmul_tflops,
        "gpu_hbm_copy_gbps": gpu_hbm_copy_gbps,
        "h2d_copy_gbps": h2d_copy_gbps,
        "nccl_allreduce_busbw_gbps": nccl_allreduce_busbw,
        "cpu_fp32_matmul_gflops": cpu_matmul_gflops,
        "host_memcpy_gbps": host_memcpy_gbps,
        "nvme_seq_read_gibps": lambda: fio_read(local_root, "read", "1M", size_mib, seconds),
        "nvme_randread_4k_kiops": lambda: fio_read(local_root, "randread", "4k", size_mib, seconds),
        "netfs_seq_read_gibps": lambda: netfs_read(netfs_root, size_mib),
        "gloo_allreduce_busbw_gbps": gloo_allreduce_busbw,
    }
    figures = []
    for name, measure in measures.items():
        if only and name not in only:
            continue
        expect = expectations.get(name)
        try:
            value, detail = measure()
        except Unavailable as e:
            figures.append(judge(name, None, expect, f"unavailable: {e}"))
            continue
        except Exception as e:  # a broken measurement is a finding, not a crash of the whole run
            figures.append(judge(name, None, expect, f"failed: {type(e).__name__}: {e}"))
            continue
        figures.append(judge(name, value, expect, detail))
    judged = {n for n, e in expectations.items() if e.fail_below is not None or e.warn_below is not None}
    counted = [Status(f.verdict) for f in figures if f.available and f.name in judged]
    # Figures the profile holds the node to but that could not be measured make the verdict unknown.
    missing = [f for f in figures if not f.available and f.name in judged]
    verdict = Status.worst(counted + ([Status.UNKNOWN] if missing else []))
    return NodeReport(node, profile, int(verdict), figures)


# ---------------------------------------------------------------------- GPU (torch, CUDA)
def _cuda():
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed (install the `train` extra)") from None
    if not torch.cuda.is_available():
        raise Unavailable("no CUDA GPU on this node")
    return torch


def _cuda_time(torch, fn, iters: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def gpu_matmul_tflops() -> tuple[float, str]:
    torch = _cuda()
    results = []
    for dev in range(torch.cuda.device_count()):
        with torch.cuda.device(dev):
            n = 8192
            a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            t = _cuda_time(torch, lambda a=a, b=b: a @ b, 50)
            results.append(2 * n**3 / t / 1e12)
    return min(results), f"min over {len(results)} GPUs: " + ", ".join(f"{r:.0f}" for r in results)


def gpu_hbm_copy_gbps() -> tuple[float, str]:
    torch = _cuda()
    results = []
    for dev in range(torch.cuda.device_count()):
        with torch.cuda.device(dev):
            src = torch.empty(2 * GIB, dtype=torch.uint8, device="cuda")
            dst = torch.empty_like(src)
            t = _cuda_time(torch, lambda s=src, d=dst: d.copy_(s), 20)
            results.append(2 * src.numel() / t / 1e9)  # read + write
    return min(results), f"min over {len(results)} GPUs"


def h2d_copy_gbps() -> tuple[float, str]:
    torch = _cuda()
    results = []
    for dev in range(torch.cuda.device_count()):
        with torch.cuda.device(dev):
            host = torch.empty(GIB, dtype=torch.uint8).pin_memory()
            devbuf = torch.empty(GIB, dtype=torch.uint8, device="cuda")
            t = _cuda_time(torch, lambda h=host, d=devbuf: d.copy_(h, non_blocking=True), 10)
            results.append(host.numel() / t / 1e9)
    return min(results), f"pinned, min over {len(results)} GPUs"


def nccl_allreduce_busbw() -> tuple[float, str]:
    torch = _cuda()
    if torch.cuda.device_count() < 2:
        raise Unavailable("fewer than 2 GPUs on this node")
    from clusterops.perf import collective

    return collective.run_local("nccl", torch.cuda.device_count(), 256 << 20)


# ---------------------------------------------------------------------- CPU and memory
def cpu_matmul_gflops() -> tuple[float, str]:
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed") from None
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        a @ b
        iters += 1
    t = (time.perf_counter() - start) / iters
    return 2 * n**3 / t / 1e9, f"fp32 {n}x{n}, {torch.get_num_threads()} threads"


def host_memcpy_gbps() -> tuple[float, str]:
    size = 256 << 20
    src = bytearray(os.urandom(1 << 20)) * 256
    dst = bytearray(size)
    view_src, view_dst = memoryview(src), memoryview(dst)
    view_dst[:] = view_src
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        view_dst[:] = view_src
        iters += 1
    t = (time.perf_counter() - start) / iters
    return 2 * size / t / 1e9, "256 MiB memoryview copy, read + write"


# ---------------------------------------------------------------------- storage (fio)
def fio_read(root: Path, rw: str, bs: str, size_mib: int, seconds: float) -> tuple[float, str]:
    if not root.is_dir():
        raise Unavailable(f"local root {root} does not exist")
    import shutil

    if not shutil.which("fio"):
        raise Unavailable("fio is not installed")
    work = Path(tempfile.mkdtemp(prefix=".bench-", dir=root))
    try:
        for direct in (1, 0):
            argv = [
                "fio",
                "--name=clusterops",
                f"--directory={work}",
                f"--rw={rw}",
                f"--bs={bs}",
                f"--size={size_mib}M",
                f"--runtime={seconds:g}",
                "--time_based",
                "--ioengine=libaio",
                f"--direct={direct}",
                f"--iodepth={32 if rw == 'randread' else 16}",
                f"--numjobs={min(4, os.cpu_count() or 1)}",
                "--group_reporting",
                "--output-format=json",
                "--invalidate=1",
            ]
            r = proc.run(argv, timeout=seconds * 4 + size_mib / 50 + 60, check=False)
            if r.returncode == 0:
                break
        else:
            raise Unavailable(f"fio failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        job = json.loads(r.stdout[r.stdout.index("{") :])["jobs"][0]["read"]
        mode = "O_DIRECT" if direct else "buffered (O_DIRECT refused)"
        if rw == "randread":
            return job["iops"] / 1000, f"fio 4k randread, {mode}"
        return job["bw_bytes"] / GIB, f"fio 1M seq read, {mode}"
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def netfs_read(root: Path | None, size_mib: int) -> tuple[float, str]:
    """Read from the network filesystem the data comes from, for contrast with local NVMe."""
    if root is None or not root.is_dir():
        raise Unavailable("no network filesystem source configured (staging.source_root)")
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    if not files:
        raise Unavailable(f"{root} holds no files to read")
    budget, done = size_mib << 20, 0
    buf = bytearray(8 << 20)
    start = time.perf_counter()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read from the server, not our cache
            with os.fdopen(fd, "rb", buffering=0) as fh:
                while done < budget and (n := fh.readinto(buf)):
                    done += n
        except OSError:
            os.close(fd)
            raise
        if done >= budget:
            break
    t = time.perf_counter() - start
    return done / t / GIB, f"{done >> 20} MiB sequential from {root}"


# ---------------------------------------------------------------------- collectives (CPU, gloo)
def gloo_allreduce_busbw() -> tuple[float, str]:
    from clusterops.perf import collective

    return collective.run_local("gloo", 2, 16 << 20)
