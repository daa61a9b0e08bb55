"""The training loop: wires model, data, parallelism, optimizer, schedule, checkpoints and metrics.

One call of `run` trains from the newest committed checkpoint under the checkpoint dir (or from step 0)
to `train.steps`, checkpointing every `checkpoint.interval_s` of wall clock, every `every_steps` steps,
on SIGUSR1/SIGTERM (what Slurm sends before a time limit, preemption or requeue) and at the end.
"""

from __future__ import annotations

import math
import os
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from clusterops.config import node_name, node_path
from clusterops.errors import UsageError
from clusterops.train import checkpoint as ckpt
from clusterops.train import parallel
from clusterops.train.config import TrainConfig
from clusterops.train.data import TokenLoader, write_synthetic
from clusterops.train.metrics import LossSpikeDetector, Reporter, ThroughputWatchdog, peak_tflops
from clusterops.train.model import Transformer, loss_fn


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float  # per device
    mfu: float
    mem_gib: float
    samples: list[int]  # dataset windows this rank read for the step (the data order)


@dataclass
class RunResult:
    start_step: int
    end_step: int
    records: list[StepRecord] = field(default_factory=list)
    resumed_from: str | None = None
    stopped_by: str | None = None  # SIGUSR1 | SIGTERM | stop_after | None (finished)
    checkpoint: str | None = None

    @property
    def losses(self) -> list[float]:
        return [r.loss for r in self.records]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then WSD (stable, then linear decay over the last decay_fraction) or cosine."""
    o, total = cfg.optim, cfg.train.steps
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "cosine":
        progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * progress))
    decay_start = total - int(round(o.decay_fraction * total))
    if step < decay_start:
        return o.lr
    progress = (step - decay_start + 1) / max(1, total - decay_start)
    return o.lr + (o.min_lr - o.lr) * min(1.0, progress)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    """AdamW; embeddings (tied with the head) and norm gains get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embed_tokens" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        fused=fused or None,
    )


def build_model(cfg: TrainConfig, d: parallel.Dist) -> Transformer:
    torch.manual_seed(cfg.train.seed)  # the same full weights on every rank before any sharding
    with torch.device(d.device):
        model = Transformer(cfg.model)
    model.attn_impl = "flex" if d.device.type == "cuda" else "sdpa"
    model.activation_checkpointing = cfg.train.activation_checkpointing
    if d.tp > 1:
        parallel.apply_tp(model, d.mesh["tp"])
    if cfg.train.compile:
        parallel.apply_compile(model)
    if d.dp > 1:
        parallel.apply_fsdp(model, d.mesh["dp"], mixed_precision=_bf16(cfg, d))
    if cfg.train.init == "sharded" and d.enabled:
        parallel.init_sharded(model, cfg.train.seed, d)
    torch.manual_seed(parallel.init_seed(cfg.train.seed, d.tp_rank, d.dp_rank, d.tp))
    return model


def data_root(cfg: TrainConfig, d: parallel.Dist) -> Path:
    """The staged dataset, or the built-in synthetic corpus written once per node (by local rank 0)."""
    if cfg.data.path:
        return node_path(cfg.data.path)  # `{node}`: this node's staged copy on its local NVMe
    m = cfg.model
    root = private_dir(d.local_rank == 0) / (
        f"clusterops-synthetic-v{m.vocab_size}-t{cfg.data.synthetic_tokens}-{node_name()}"
    )
    if d.local_rank == 0:
        write_synthetic(
            root, m.vocab_size, cfg.data.synthetic_tokens, seed=0, bos=m.bos_token_id, eos=m.eos_token_id
        )
    if dist.is_initialized():
        dist.barrier()
    if d.local_rank != 0:
        private_dir(create=False)  # exists now: check it before reading from it
    return root


def private_dir(create: bool = True) -> Path:
    """This user's own directory in the temp dir (mode 0700, owned by us, not a symlink): nobody else can
    plant a symlink or file where the trainer writes. One that fails those checks is refused, not used."""
    path = Path(tempfile.gettempdir()) / f"clusterops-{os.getuid()}"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path  # another local rank creates it; it is checked again before anyone writes there
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: not a plain directory (a symlink or file planted there?); remove it")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UsageError(
            f"{path}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}; the trainer needs "
            f"its own private directory there (uid {os.getuid()}, mode 700): remove it"
        )
    return path


def _bf16(cfg: TrainConfig, d: parallel.Dist) -> bool:
    return cfg.train.dtype == "bf16" or (cfg.train.dtype == "auto" and d.device.type == "cuda")


class _Signals:
    """SIGUSR1/SIGTERM set a flag; the loop checkpoints at the next step boundary and stops."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGUSR1, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class Triage:
    """`clusterops doctor throughput` for this job, started in the background on a throughput drop:
    training goes on while the doctor measures; one triage at a time; its JSON verdict joins the events."""

    COOLDOWN_S = 600.0  # a slow machine stays slow: one triage per ten minutes is enough

    def __init__(self) -> None:
        self.proc = None
        self.last = -self.COOLDOWN_S

    def running(self) -> bool:
        busy = self.proc is not None and self.proc.poll() is None
        return busy or time.monotonic() - self.last < self.COOLDOWN_S

    def start(self, job: int, act: bool, events: str) -> None:
        import subprocess
        import sys

        argv = [sys.executable, "-m", "clusterops", "doctor", "throughput", "--job", str(job), "--json"]
        if act:
            argv.append("--act")
        self.last = time.monotonic()
        target = Path(events).with_name(f"doctor-{job}-{int(time.time())}.json") if events else os.devnull
        with open(target, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)


def _memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def run(
    cfg: TrainConfig,
    checkpoint_dir: str | None = None,
    log: Callable[[str], None] = lambda line: None,
    stop_after: int | None = None,
    d: parallel.Dist | None = None,
    job: str = "",
) -> RunResult:
    """Train to cfg.train.steps (or until `stop_after` steps of this call), resuming when a committed
    checkpoint exists. `log` receives rank 0's human-readable lines."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    d = d or parallel.init_distributed(cfg.train.tp)
    say = log if d.rank == 0 else (lambda line: None)
    model = build_model(cfg, d)
    optimizer = build_optimizer(model, cfg, fused=d.device.type == "cuda")
    loader = TokenLoader(
        data_root(cfg, d),
        cfg.data.seq_len,
        cfg.data.micro_batch,
        rank=d.dp_rank,
        world=d.dp,
        seed=cfg.data.seed,
        eos_token_id=cfg.model.eos_token_id,
    )
    template = checkpoint_dir or cfg.checkpoint.dir or None
    # `{node}` in the root: every node keeps its own part on its local NVMe (S3 holds the whole).
    per_node = bool(template and "{node}" in template)
    root = str(node_path(template)) if template else None
    step, tokens_seen = 0, 0
    result = RunResult(0, 0)
    if root and (found := ckpt.newest(root, agree=d.world > 1)) is not None:
        state = ckpt.load(found, model, optimizer)
        step, tokens_seen = state["step"], state["tokens_seen"]
        try:
            loader.load_state_dict(state["loader"])
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{found}: cannot resume its data order ({e})") from None
        result.resumed_from = str(found)
        say(f"resumed from {found} (step {step}, {tokens_seen} tokens)")
    result.start_step = step

    autocast = _bf16(cfg, d) and d.dp == 1  # FSDP's mixed-precision policy casts otherwise
    tokens_per_step = cfg.data.micro_batch * cfg.data.seq_len * cfg.train.grad_accum * d.dp
    flops_per_token = cfg.model.flops_per_token(cfg.data.seq_len)
    device_name = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else "cpu"
    peak = peak_tflops(device_name, cfg.train.peak_tflops) * 1e12
    w = cfg.watchdog
    events = w.events_file or (str(Path(root) / "events.ndjson") if root else "")
    reporter = Reporter(events if d.rank == 0 else "", w.textfile_dir if d.rank == 0 else "", job)
    watchdog = ThroughputWatchdog(w.fraction, w.patience, w.window, w.warmup_steps)
    triage = Triage()
    spikes = LossSpikeDetector(w.spike_factor)
    params = list(model.parameters())
    say(
        f"training {cfg.preset} ({cfg.model.num_params() / 1e6:.1f}M params) on {d.world} x {device_name}, "
        f"dp={d.dp} tp={d.tp}, {tokens_per_step} tokens/step, steps {step}..{cfg.train.steps}"
    )

    last_ckpt = time.monotonic()
    ran = 0
    model.train()
    with _Signals() as signals:
        while step < cfg.train.steps:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            samples: list[int] = []
            for _ in range(cfg.train.grad_accum):
                batch = loader.next_batch()
                samples += batch.samples
                batch = batch.to(d.device)
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = model(batch.tokens, batch.doc_ids, batch.positions)
                loss = loss_fn(logits, batch.targets) / cfg.train.grad_accum
                loss.backward()
                loss_sum += loss.detach().float().item()
            grad_norm = parallel.clip_grad_norm(params, cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            ran += 1
            tokens_seen += tokens_per_step

            due = cfg.checkpoint.interval_s > 0 and time.monotonic() - last_ckpt >= cfg.checkpoint.interval_s
            flags = torch.tensor(
                [loss_sum, float(signals.received is not None), float(due)], dtype=torch.float64
            )
            if d.enabled:
                dist.all_reduce(flags)  # every rank agrees on the loss, on a signal and on a due checkpoint
            loss_avg = float(flags[0]) / d.world
            elapsed = time.perf_counter() - t0
            tps = tokens_per_step / elapsed / d.world
            mfu = tps * flops_per_token / peak if peak else 0.0
            record = StepRecord(step, loss_avg, lr, grad_norm, tps, mfu, _memory_gib(d.device), samples)
            result.records.append(record)

            if (event := watchdog.update(tps)) is not None:
                say(
                    f"WARNING throughput drop at step {step}: {event['tokens_per_s']:.0f} tokens/s/device "
                    f"< {event['fraction']:.0%} of baseline {event['baseline']:.0f}"
                )
                reporter.event("throughput_drop", step=step, **event)
                if d.rank == 0 and job and w.on_drop in ("report", "act") and not triage.running():
                    triage.start(int(job), act=w.on_drop == "act", events=events)
            if (event := spikes.update(loss_avg)) is not None:
                say(
                    f"WARNING loss spike at step {step}: {event['loss']:.4f} "
                    f"vs running mean {event['running_mean']:.4f}"
                )
                reporter.event("loss_spike", step=step, **event)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps or ran == 1:
                mfu_text = f"{mfu * 100:.1f}%" if peak else "n/a"
                say(
                    f"step={step} loss={loss_avg:.4f} lr={lr:.3e} grad_norm={grad_norm:.3f} "
                    f"tokens/s/device={tps:.0f} mfu={mfu_text} mem={record.mem_gib:.2f}GiB"
                )
                reporter.gauges(step, loss_avg, tps, mfu, watchdog.low >= watchdog.patience, spikes.count)

            stop = None
            if flags[1] > 0:
                stop = signals.received or "signal"
            elif stop_after is not None and ran >= stop_after:
                stop = "stop_after"
            every = cfg.checkpoint.every_steps
            if root and (stop or flags[2] > 0 or (every and step % every == 0) or step == cfg.train.steps):
                train_state = {
                    "step": step,
                    "tokens_seen": tokens_seen,
                    "loader": loader.state_dict(),
                    "preset": cfg.preset,
                    "model": cfg.model.to_dict(),
                    "config": cfg.to_dict(),
                }
                path = ckpt.save(
                    root,
                    step,
                    model,
                    optimizer,
                    train_state,
                    tokens_seen,
                    keep=cfg.checkpoint.keep,
                    per_node=per_node,
                    local_rank=d.local_rank,
                )
                result.checkpoint = str(path)
                last_ckpt = time.monotonic()
                say(f"checkpoint committed: {path}")
                reporter.event("checkpoint", step=step, checkpoint=str(path), tokens_seen=tokens_seen)
            if stop:
                result.stopped_by = stop
                say(f"stopping at step {step} ({stop})")
                break
    result.end_step = step
    return result
