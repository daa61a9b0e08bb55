"""The trainer's own TOML config (configs/*.toml): model preset and overrides, data, optimizer, schedule,
checkpoints, watchdog and the Slurm shape. Unknown keys are errors that name the key and the file."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterops.errors import ConfigError
from clusterops.train.model import PRESETS, ModelConfig, preset


@dataclass
class DataSection:
    path: str = ""  # staged root holding *.ds shards; empty: the built-in synthetic corpus
    seq_len: int = 0  # 0: the model's max_seq_len (4096 for the SmolLM3 presets)
    micro_batch: int = 1
    seed: int = 1234
    synthetic_tokens: int = 1 << 20


@dataclass
class TrainSection:
    steps: int = 1000
    grad_accum: int = 1
    seed: int = 0
    tp: int = 1
    init: str = "full"  # full: every rank builds the same full weights; sharded: per-shard seeded init
    dtype: str = "auto"  # auto: bf16 on GPU, fp32 on CPU | bf16 | fp32
    compile: bool = False
    activation_checkpointing: bool = False
    log_every: int = 10
    threads: int = 0  # CPU intra-op threads; 0: torch's default (1 keeps a tiny model fast on a busy host)
    peak_tflops: float = 0.0  # per device, for MFU; 0: known GPUs (H100/H200 989 bf16 dense), else no MFU


@dataclass
class OptimSection:
    lr: float = 2e-4
    min_lr: float = 0.0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    schedule: str = "wsd"  # wsd | cosine | constant
    warmup_steps: int = 2000
    decay_fraction: float = 0.1  # wsd: the last fraction of steps decays linearly to min_lr


@dataclass
class CheckpointSection:
    dir: str = ""  # overridden by --checkpoint-dir
    interval_s: float = 7200.0  # wall clock between checkpoints (SmolLM3: every 2 h)
    every_steps: int = 0  # also every N steps; 0: off
    keep: int = 0  # committed step dirs kept locally (the newest always stays); 0: keep all


@dataclass
class WatchdogSection:
    fraction: float = 0.6  # tokens/s below this fraction of the rolling baseline ...
    patience: int = 5  # ... for this many consecutive steps raises a throughput_drop event
    window: int = 50  # steps in the rolling baseline (median)
    warmup_steps: int = 5  # steps ignored (compile, first allocations)
    spike_factor: float = 1.5  # loss above this multiple of its running mean is a loss_spike event
    events_file: str = ""  # empty: CHECKPOINT_DIR/events.ndjson (no events without a checkpoint dir)
    textfile_dir: str = ""  # Prometheus textfile directory; empty: none
    # On a throughput drop inside a Slurm job: "off", "report" (run `clusterops doctor throughput`, its
    # verdict goes to the event log) or "act" (the doctor also drains the outlier node for the spare).
    on_drop: str = "report"


@dataclass
class SlurmSection:
    nodes: int = 1
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    time: str = ""
    partition: str = ""
    job_name: str = "clusterops-train"
    signal_lead_s: int = 60  # USR1 this long before the time limit: checkpoint, then requeue
    extra_args: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=lambda: PRESETS["tiny"])
    preset: str = "tiny"
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    watchdog: WatchdogSection = field(default_factory=WatchdogSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return out


_SECTIONS = {
    "data": DataSection,
    "train": TrainSection,
    "optim": OptimSection,
    "checkpoint": CheckpointSection,
    "watchdog": WatchdogSection,
    "slurm": SlurmSection,
}


def load(path: str | Path) -> TrainConfig:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: trainer config not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    cfg = from_dict(raw, str(p))
    cfg.source = str(p)
    return cfg


def from_dict(raw: dict[str, Any], where: str = "config") -> TrainConfig:
    cfg = TrainConfig()
    model_raw = dict(raw.get("model", {}))
    name = model_raw.pop("preset", "tiny")
    try:
        cfg.model = preset(name, **model_raw)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: [model]: {e}") from None
    cfg.preset = name
    for section, values in raw.items():
        if section == "model":
            continue
        if section not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}] (known: model, {', '.join(_SECTIONS)})")
        target = getattr(cfg, section)
        kinds = {f.name: f.type for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in kinds:
                raise ConfigError(f"{where}: unknown key '{section}.{key}' (known: {', '.join(kinds)})")
            setattr(target, key, _coerce(value, getattr(target, key), f"{where}: '{section}.{key}'"))
    if cfg.data.seq_len == 0:
        cfg.data.seq_len = cfg.model.max_seq_len
    _validate(cfg, where)
    return cfg


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
    elif isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r}")
    return value


def _validate(cfg: TrainConfig, where: str) -> None:
    checks = [
        (cfg.data.seq_len >= 1, "data.seq_len must be at least 1"),
        (
            cfg.data.seq_len <= cfg.model.max_seq_len,
            f"data.seq_len {cfg.data.seq_len} exceeds the model's max_seq_len {cfg.model.max_seq_len}",
        ),
        (cfg.data.micro_batch >= 1, "data.micro_batch must be at least 1"),
        (cfg.train.steps >= 1, "train.steps must be at least 1"),
        (cfg.train.grad_accum >= 1, "train.grad_accum must be at least 1"),
        (cfg.train.tp >= 1, "train.tp must be at least 1"),
        (cfg.train.init in ("full", "sharded"), "train.init must be 'full' or 'sharded'"),
        (cfg.train.dtype in ("auto", "bf16", "fp32"), "train.dtype must be auto, bf16 or fp32"),
        (
            cfg.optim.schedule in ("wsd", "cosine", "constant"),
            "optim.schedule must be wsd, cosine or constant",
        ),
        (0.0 <= cfg.optim.decay_fraction <= 1.0, "optim.decay_fraction must be within [0, 1]"),
        (
            cfg.model.n_kv_heads % cfg.train.tp == 0,
            f"train.tp {cfg.train.tp} must divide n_kv_heads {cfg.model.n_kv_heads}",
        ),
        (0.0 < cfg.watchdog.fraction < 1.0, "watchdog.fraction must be within (0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")
