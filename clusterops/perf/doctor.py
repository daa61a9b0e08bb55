"""`doctor throughput`: why is a running job slow, and which node is dragging it down?

It walks the playbook's order, on every node of the job, through Slurm itself (an overlapping srun step,
no RPC of ours): storage (is the data on local NVMe and READY, read GB/s and 4k latency now), the loader
alone, the model step alone on synthetic data, then communication (an all-reduce across the job's nodes).
It also holds the nodes against each other (step speed, GPU clocks and their event reasons, temperatures,
EFA counters, disk latency) and names the outlier with its evidence; `--act` drains it so the spare
watcher swaps it out.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterops import config as config_mod
from clusterops import proc
from clusterops.errors import UsageError

CLI = [sys.executable, "-m", "clusterops"]
LOADER_FAULT_ENV = "CLUSTEROPS_FAULT_LOADER_DELAY_S"  # fault injection: seconds added per loader batch
OUTLIER_RATIO = 0.75  # a node whose step speed is below this fraction of the median is an outlier
LATENCY_RATIO = 3.0  # ... or whose 4k read latency is this many times the median


@dataclass
class JobCard:
    """What the job runs, read back from Slurm (`scontrol write batch_script`)."""

    job_id: int
    nodes: list[str]
    config: str
    data: str


@dataclass
class Finding:
    stage: str  # storage | loader | model | communication | node
    bottleneck: bool
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Diagnosis:
    job_id: int
    nodes: list[str]
    bottleneck: str | None
    outlier: str | None
    findings: list[Finding]
    probes: list[dict[str, Any]]
    acted: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- reading the job
def job_card(slurm, job_id: int) -> JobCard:
    job = slurm.job(job_id)
    if job.state != "RUNNING":
        raise UsageError(f"job {job_id} is {job.state}; doctor throughput needs a running job")
    script = slurm.cmd.scontrol("write", "batch_script", str(job_id), "-")
    for line in script.splitlines():
        argv = shlex.split(line) if "clusterops" in line and " train run " in f" {line} " else []
        if "run" in argv and "train" in argv:
            i = argv.index("run")
            config = argv[i + 1] if i + 1 < len(argv) else ""
            data = argv[argv.index("--data") + 1] if "--data" in argv else ""
            return JobCard(job_id, job.nodes, config, data)
    raise UsageError(
        f"job {job_id}: its batch script runs no `clusterops train run` (not a clusterops trainer job)"
    )


# ---------------------------------------------------------------------- the per-node probe
def probe(cfg: config_mod.Config, train_config: str, data: str, seconds: float = 2.0) -> dict[str, Any]:
    """Measure this node in the playbook's order; runs on every node of the job (srun --overlap)."""
    from clusterops.train import config as train_config_mod

    node = config_mod.node_name()
    tcfg = train_config_mod.load(train_config)
    data_path = (
        Path(str(config_mod.node_path(data or tcfg.data.path, node))) if (data or tcfg.data.path) else None
    )
    out: dict[str, Any] = {"node": node, "data_path": str(data_path) if data_path else ""}
    out["storage"] = _storage(cfg, data_path, node)
    out["loader"] = _loader(tcfg, data_path, seconds)
    out["step"] = _step(tcfg, seconds)
    out["health"] = _health(cfg, node)
    return out


def _storage(cfg, data_path: Path | None, node: str) -> dict[str, Any]:
    if data_path is None:
        return {"on_local_nvme": None, "ready": None, "detail": "synthetic data: nothing to read"}
    local_root = config_mod.node_path(cfg.paths.local_root, node).resolve()
    resolved = data_path.resolve()
    on_local = resolved == local_root or local_root in resolved.parents
    ready, detail = None, ""
    try:
        from clusterops.staging import state as staging_state

        r = staging_state.check_ready(resolved, deep=False)
        ready, detail = r.ready, r.reason
    except Exception as e:  # not a staged dataset at all
        ready, detail = False, f"not a staged dataset: {e}"
    files = sorted(resolved.rglob("*.ds")) if resolved.is_dir() else []
    read = _read_speed(files) if files else {"read_gibps": None, "lat_p50_ms": None, "lat_p99_ms": None}
    return {"on_local_nvme": on_local, "ready": ready, "detail": detail, **read}


def _read_speed(files: list[Path], budget: int = 64 << 20, samples: int = 200) -> dict[str, Any]:
    """Sequential GiB/s from cold pages, and 4k random-read latency; the page cache is dropped per file."""
    done, buf = 0, bytearray(4 << 20)
    start = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while done < budget and (n := fh.readinto(buf)):
                done += n
        if done >= budget:
            break
    seq = time.perf_counter() - start
    lat = []
    rng = random.Random(0)
    for _ in range(samples):
        f = rng.choice(files)
        size = f.stat().st_size
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            off = rng.randrange(0, max(1, size - 4096)) & ~4095
            t = time.perf_counter()
            os.pread(fd, 4096, off)
            lat.append((time.perf_counter() - t) * 1000)
        finally:
            os.close(fd)
    lat.sort()
    return {
        "read_gibps": round(done / seq / (1 << 30), 4) if seq > 0 else None,
        "lat_p50_ms": round(lat[len(lat) // 2], 4),
        "lat_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 4),
    }


def _loader(tcfg, data_path: Path | None, seconds: float) -> dict[str, Any]:
    from clusterops.train.data import TokenLoader

    if data_path is None:
        return {"tokens_per_s": None, "detail": "synthetic data"}
    delay = float(os.environ.get(LOADER_FAULT_ENV, "0") or 0)
    try:
        loader = TokenLoader(data_path, tcfg.data.seq_len, tcfg.data.micro_batch, seed=tcfg.data.seed)
    except (OSError, ValueError) as e:
        return {"tokens_per_s": None, "detail": f"loader cannot open the data: {e}"}
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loader.next_batch()
        if delay:
            time.sleep(delay)
        tokens += tcfg.data.seq_len * tcfg.data.micro_batch
    return {"tokens_per_s": round(tokens / (time.perf_counter() - start), 1), "fault_delay_s": delay}


def _step(tcfg, seconds: float) -> dict[str, Any]:
    import torch

    from clusterops.train.model import Transformer

    torch.manual_seed(0)
    model = Transformer(tcfg.model)
    model.attn_impl = "flex" if torch.cuda.is_available() else "sdpa"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, s = tcfg.data.micro_batch, tcfg.data.seq_len
    x = torch.randint(0, tcfg.model.vocab_size, (b, s + 1))

    def one() -> None:
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one()  # first-step allocations
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        one()
        steps += 1
    return {"tokens_per_s": round(steps * b * s / (time.perf_counter() - start), 1), "steps": steps}


def _health(cfg, node: str) -> dict[str, Any]:
    from clusterops.health import service

    try:
        report, _ = service.evaluate(cfg, hook="check", node=node, only=["gpu", "efa", "storage"])
    except Exception as e:
        return {"verdict": 3, "checks": [], "detail": f"health checks failed to run: {e}"}
    data = report.to_dict()
    checks = [
        {"name": c.get("name"), "verdict": c.get("verdict"), "detail": c.get("detail", "")}
        for c in data.get("checks", [])
    ]
    return {"verdict": data.get("verdict"), "checks": checks}


# ---------------------------------------------------------------------- the head-node side
def _step_argv(card: JobCard, *command: str) -> list[str]:
    """An extra job step on every node of the running job, one task each, beside the training step."""
    return [
        "srun", f"--jobid={card.job_id}", "--overlap", f"-N{len(card.nodes)}", "--ntasks-per-node=1",
        f"--nodelist={','.join(card.nodes)}", *CLI, *command,
    ]  # fmt: skip


def run_probes(slurm, card: JobCard, seconds: float, timeout: float = 300.0) -> list[dict[str, Any]]:
    argv = _step_argv(card, "doctor", "probe", card.config, "--data", card.data, "--seconds", str(seconds))
    r = proc.run(argv, timeout=timeout, env=slurm.cmd.env, check=False)
    probes = []
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                probes.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not probes:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-2:]
        raise UsageError(f"job {card.job_id}: the probe step returned nothing ({' | '.join(tail)})")
    return probes


def allreduce(slurm, card: JobCard, nbytes: int = 16 << 20, timeout: float = 120.0) -> dict[str, Any]:
    """Bus bandwidth of an all-reduce across the job's nodes, as an overlapping srun step."""
    if len(card.nodes) < 2:
        return {"busbw_gbps": None, "detail": "single-node job"}
    argv = _step_argv(card, "doctor", "allreduce-worker", "--bytes", str(nbytes))
    env = {**slurm.cmd.env, "MASTER_PORT": str(20000 + (card.job_id * 7 + int(time.time())) % 9000)}
    r = proc.run(argv, timeout=timeout, env=env, check=False)
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
    return {"busbw_gbps": None, "detail": f"all-reduce step failed: {' '.join(tail)}"}


def diagnose(card: JobCard, probes: list[dict[str, Any]], comm: dict[str, Any]) -> Diagnosis:
    findings: list[Finding] = []
    by_node = {p["node"]: p for p in probes}

    off_nvme = [n for n, p in by_node.items() if p["storage"].get("on_local_nvme") is False]
    not_ready = [n for n, p in by_node.items() if p["storage"].get("ready") is False]
    if off_nvme or not_ready:
        findings.append(
            Finding(
                "storage",
                True,
                "data is not READY on local NVMe on " + ", ".join(sorted(set(off_nvme + not_ready))),
                {
                    "off_local_nvme": off_nvme,
                    "not_ready": not_ready,
                    "paths": {n: by_node[n]["data_path"] for n in off_nvme},
                },
            )
        )
    elif all(p["storage"].get("on_local_nvme") is None for p in by_node.values()):
        findings.append(Finding("storage", False, "the job trains on synthetic data: no storage in the path"))
    else:
        findings.append(
            Finding(
                "storage",
                False,
                "data READY on local NVMe on every node",
                {
                    n: {k: p["storage"].get(k) for k in ("read_gibps", "lat_p50_ms")}
                    for n, p in by_node.items()
                },
            )
        )

    slow_loader = {}
    for n, p in by_node.items():
        lt, st = p["loader"].get("tokens_per_s"), p["step"].get("tokens_per_s")
        if lt is not None and st and lt < st:
            slow_loader[n] = {"loader_tokens_per_s": lt, "step_tokens_per_s": st}
    findings.append(
        Finding(
            "loader",
            bool(slow_loader),
            (
                "the loader alone delivers fewer tokens/s than the model consumes on "
                + ", ".join(sorted(slow_loader))
            )
            if slow_loader
            else "the loader outruns the model step",
            slow_loader or {n: p["loader"] for n, p in by_node.items()},
        )
    )

    steps = {n: p["step"]["tokens_per_s"] for n, p in by_node.items() if p["step"].get("tokens_per_s")}
    findings.append(Finding("model", False, "model step alone on synthetic data", {"tokens_per_s": steps}))
    findings.append(Finding("communication", False, "all-reduce across the job's nodes", comm))

    outlier, evidence = _outlier(by_node, steps)
    if outlier:
        findings.append(Finding("node", True, f"{outlier} is the outlier: {evidence['why']}", evidence))
    bottleneck = next((f.stage for f in findings if f.bottleneck and f.stage != "node"), None)
    if bottleneck is None and outlier:
        bottleneck = "node"
    return Diagnosis(card.job_id, card.nodes, bottleneck, outlier, findings, probes)


def _outlier(
    by_node: dict[str, dict[str, Any]], steps: dict[str, float]
) -> tuple[str | None, dict[str, Any]]:
    if len(by_node) < 2:
        return None, {}
    # Hardware evidence first: a node whose GPU/EFA/storage checks are not OK while the others are.
    bad = {
        n: [c for c in p["health"].get("checks", []) if c.get("verdict") not in (0, None)]
        for n, p in by_node.items()
    }
    flagged = [n for n, checks in bad.items() if checks]
    if len(flagged) == 1:
        n = flagged[0]
        return n, {
            "why": "; ".join(f"{c['name']}: {c['detail']}" for c in bad[n]),
            "checks": bad[n],
            "step_tokens_per_s": steps.get(n),
        }
    if len(steps) >= 2:
        med = statistics.median(steps.values())
        slow = [n for n, v in steps.items() if v < OUTLIER_RATIO * med]
        if len(slow) == 1:
            n = slow[0]
            return n, {
                "why": f"model step {steps[n]:.0f} tokens/s vs median {med:.0f}",
                "step_tokens_per_s": steps,
            }
    lats = {n: p["storage"].get("lat_p50_ms") for n, p in by_node.items() if p["storage"].get("lat_p50_ms")}
    if len(lats) >= 2:
        med = statistics.median(lats.values())
        slow = [n for n, v in lats.items() if med and v > LATENCY_RATIO * med]
        if len(slow) == 1:
            n = slow[0]
            return n, {"why": f"4k read latency {lats[n]:.3f} ms vs median {med:.3f} ms", "lat_p50_ms": lats}
    return None, {}


def throughput(slurm, job_id: int, act: bool = False, seconds: float = 2.0, cfg=None) -> Diagnosis:
    card = job_card(slurm, job_id)
    probes = run_probes(slurm, card, seconds)
    comm = allreduce(slurm, card)
    diag = diagnose(card, probes, comm)
    if act and diag.outlier:
        from clusterops import config as config_mod
        from clusterops.health.drain import drain_with

        why = next(f.summary for f in diag.findings if f.stage == "node")
        # Signed like every drain of ours (health/ownership.py), so `health undrain` may undo it; a
        # reason somebody else set on the node is kept, never written over.
        cfg = cfg or config_mod.load()
        action, reason = drain_with(cfg, slurm, diag.outlier, f"clusterops: doctor: {why}")
        diag.acted = f"drained {diag.outlier}" if action == "drained" else f"{diag.outlier} kept: {reason}"
    return diag


def allreduce_worker(nbytes: int) -> dict[str, Any]:
    """One rank of the cross-node all-reduce (inside the srun step)."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from clusterops.perf.collective import bus_bandwidth, measure
    from clusterops.train import launch

    env = launch.from_environ()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo" and env.node_addr:
        iface = launch.interface_for(env.node_addr)
        if iface:
            os.environ["GLOO_SOCKET_IFNAME"] = iface
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world,
        timeout=timedelta(seconds=60),
    )
    try:
        t = measure(backend, nbytes)
    finally:
        dist.destroy_process_group()
    return {
        "rank": env.rank,
        "busbw_gbps": round(bus_bandwidth(nbytes, t, env.world), 4),
        "detail": f"{backend} all-reduce {nbytes >> 20} MiB across {env.world} ranks",
    }
