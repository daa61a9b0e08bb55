"""What the benchmarks share: a free loopback port, the page cache in the same state before each run, and
one timed run of a tool with its CPU counted three ways (its processes, the client side, the server)."""

from __future__ import annotations

import resource
import socket
import subprocess
import time
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_caches() -> bool:
    """Write back, then drop the page cache; False where we may not (not root)."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def warm(path: Path) -> None:
    """Read every file under `path` once, so the page cache serves every tool alike."""
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(8 << 20):
                    pass


def machine_cpu_s() -> float:
    """CPU-seconds the whole machine has been busy: every process, the kernel's own threads, interrupts.
    Taken around a run, it also counts the work a tool leaves to the kernel, which the tool's rusage does
    not show: writing back the page cache it dirtied (flusher threads), loopback network processing."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def run_measured(
    argv: list[str],
    env: dict[str, str],
    server: psutil.Process | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
) -> dict[str, float]:
    """Run a tool to completion (a non-zero exit ends the benchmark with its stderr) and return its wall
    seconds, its processes' CPU (rusage of children), the client side's CPU (the machine's busy CPU less
    the server's) and, given the server's process, the server's CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = server.cpu_times() if server else None
    m0 = machine_cpu_s()
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    wall = time.perf_counter() - t0
    m1 = machine_cpu_s()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    out = {
        "wall_s": wall,
        "client_cpu_s": user + system,
        "client_user_s": user,
        "client_sys_s": system,
        "client_side_cpu_s": m1 - m0,
    }
    if server and s0:
        s1 = server.cpu_times()
        out["server_cpu_s"] = (s1.user - s0.user) + (s1.system - s0.system)
        out["client_side_cpu_s"] -= out["server_cpu_s"]
    return out
