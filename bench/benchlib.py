"""What the benchmarks share: a free loopback port, the page cache in the same state before each run, and
the machine's CPU counter."""

from __future__ import annotations

import socket
import subprocess
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
