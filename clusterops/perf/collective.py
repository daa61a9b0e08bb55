"""All-reduce bus bandwidth with torch.distributed: gloo on CPUs, NCCL on GPUs.

Bus bandwidth follows nccl-tests: algorithm bandwidth x 2(n-1)/n, so figures compare across sizes.
"""

from __future__ import annotations

import os
import socket
import time


def bus_bandwidth(nbytes: int, seconds: float, world: int) -> float:
    return nbytes / seconds * 2 * (world - 1) / world / 1e9


def measure(backend: str, nbytes: int, iters: int = 10) -> float:
    """In an initialised process group: seconds per all-reduce of `nbytes` (max over ranks)."""
    import torch
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dist.all_reduce(x)
    if backend == "nccl":
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x)
    if backend == "nccl":
        torch.cuda.synchronize()
    t = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _worker(rank: int, world: int, backend: str, port: int, nbytes: int, out) -> None:
    import torch
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=__import__("datetime").timedelta(seconds=60),
    )
    try:
        t = measure(backend, nbytes)
        if rank == 0:
            out.put(t)
    finally:
        dist.destroy_process_group()


def run_local(backend: str, world: int, nbytes: int) -> tuple[float, str]:
    """Spawn `world` ranks on this node and return (bus GB/s, detail)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(
        _worker, args=(world, backend, port, nbytes, out), nprocs=world, join=True, start_method="spawn"
    )
    t = out.get()
    return bus_bandwidth(nbytes, t, world), f"{backend} all-reduce {nbytes >> 20} MiB x {world} ranks"


def across_nodes(
    slurm,
    nodes: int,
    nbytes: int,
    out_dir,
    nodelist: str = "",
    reservation: str = "",
    partition: str = "",
    timeout: float = 600.0,
    python: str = "",
) -> dict:
    """An all-reduce across `nodes` nodes as a Slurm job (one rank per node); the job's JSON result.

    Slurm places and launches the ranks; torch.distributed (NCCL on GPUs, gloo on CPUs) does the rest.
    """
    import json
    import random
    import shlex
    import sys
    from pathlib import Path

    from clusterops.errors import UsageError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        python or sys.executable,
        "-m",
        "clusterops",
        "doctor",
        "allreduce-worker",
        "--bytes",
        str(nbytes),
    ]
    script = (
        "#!/bin/sh\n"
        f"export MASTER_PORT={random.randrange(20000, 29000)}\n"
        "exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 " + " ".join(shlex.quote(a) for a in argv) + "\n"
    )
    args = [
        "-N",
        str(nodes),
        "--ntasks-per-node=1",
        "-J",
        "clusterops-nccl",
        "-o",
        str(out_dir / "nccl-%j.out"),
    ]
    for flag, value in (("--nodelist", nodelist), ("--reservation", reservation), ("--partition", partition)):
        if value:
            args.append(f"{flag}={value}")
    job = slurm.submit(args, script=script)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = slurm.job(job).state
        if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            break
        time.sleep(1)
    else:
        slurm.cancel(job)
        raise UsageError(f"bench nccl: job {job} did not finish within {timeout:g}s (cancelled)")
    text = (out_dir / f"nccl-{job}.out").read_text() if (out_dir / f"nccl-{job}.out").exists() else ""
    for line in text.splitlines():
        if line.startswith("{"):
            return {"job_id": job, "nodes": slurm.job(job).nodes, **json.loads(line)}
    raise UsageError(f"bench nccl: job {job} ended {state} without a result: {text.strip()[-300:]!r}")
