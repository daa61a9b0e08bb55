"""One typed configuration for every clusterops command, daemon and hook.

Layers, later wins: built-in defaults, /etc/clusterops/clusterops.toml, the file named by
CLUSTEROPS_CONFIG, the file given with --config, then CLUSTEROPS_<SECTION>__<KEY> variables.
Unknown keys and wrong types are errors naming the key and the file they came from.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterops.errors import ConfigError

# Several people edit the sections below at once: add fields only to your own section, never rename or
# remove others', never reformat this file; read CONTRIBUTING.md before committing.
SYSTEM_CONFIG = Path("/etc/clusterops/clusterops.toml")
ENV_PREFIX = "CLUSTEROPS_"
REDACTED = "***"


def secret(default: str = "") -> Any:
    """A string field that `config show` and logs never print."""
    return field(default=default, metadata={"secret": True})


@dataclass
class ClusterSection:
    name: str = "cluster"
    # Instance profile: expected hardware figures (GPU count, EFA devices, ...) for health and bench.
    profile: str = "sandbox"


@dataclass
class PathsSection:
    # `{node}` in any path is replaced by this node's Slurm name (see node_name()).
    state_dir: str = "/var/lib/clusterops"
    local_root: str = "/scratch"
    log_dir: str = "/var/log/clusterops"
    textfile_dir: str = "/var/lib/node_exporter/textfile_collector"


@dataclass
class SlurmSection:
    backend: str = "auto"  # auto | command | pyslurm
    conf: str = ""  # slurm.conf; empty: SLURM_CONF, then /etc/slurm/slurm.conf
    timeout_s: float = 15.0
    partition: str = ""
    bin_dir: str = ""  # where sinfo/scontrol/... live; empty: PATH


@dataclass
class S3Section:
    endpoint_url: str = ""  # empty: AWS's own endpoints
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    access_key_id: str = secret()  # empty: the usual AWS credential chain
    secret_access_key: str = secret()
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 8
    # Upload part size; grown per file where S3's 10,000-part limit needs it. 8 MiB (boto3's and awscli's
    # default) pushed a DCP checkpoint 1.01x s5cmd's speed here, 64 MiB 0.90x (BENCHMARKS.md).
    multipart_chunk_mb: int = 8
    max_concurrency: int = 16  # ranged GETs at once on a pull (and the connection pool's size)
    # Parts in flight on a push: 8 sent as fast as 16 here at 15 % less client CPU per GB, while pulls
    # slowed below 16 (BENCHMARKS.md, ckpt).
    upload_concurrency: int = 8
    bandwidth_mbps: float = 0.0  # cap on checkpoint transfers, MB/s (10^6 bytes); 0: none
    download_chunk_mb: int = 64  # ranged GET size; a cut stream resumes from the last byte received


@dataclass
class HealthSection:
    check_timeout_s: float = 20.0
    budget_s: float = 60.0
    disabled: list[str] = field(default_factory=list)
    drain_prefix: str = "clusterops:"
    # Instance profile for the health checks; empty: cluster.profile. A name or a .toml path.
    profile: str = ""
    # A node fixture replayed instead of the real hardware (NVML, sysfs, /proc, kernel log); `{node}`
    # expands to the node's name. Empty: the real hardware.
    fixture: str = ""
    # Which checks each hook runs; empty: all (less `disabled`).
    prolog_checks: list[str] = field(default_factory=list)
    epilog_checks: list[str] = field(default_factory=list)
    healthcheck_checks: list[str] = field(default_factory=list)
    # Counter baselines, XIDs seen, stuck processes; empty: <paths.state_dir>/health-state.json.
    state_file: str = ""
    # NDJSON event log; empty: <paths.log_dir>/health.ndjson.
    event_log: str = ""
    # Prometheus textfile <paths.textfile_dir>/<textfile_name>.prom; empty: none.
    textfile_name: str = "clusterops_health"
    xid_window_s: float = 3600.0  # a critical XID counts for this long after it is logged
    counter_window_s: float = 3600.0  # NVLink/EFA error counters: rise measured over this window
    isolation: str = "fork"  # fork: each check in its own process (a hung call is killed); inline


@dataclass
class StagingSection:
    datasets: list[str] = field(default_factory=list)
    source_root: str = ""
    max_workers: int = 8
    bandwidth_mbps: float = 0.0  # 0: no cap
    buffer_mb: int = 1  # per copy thread; 1 MiB stays in cache from read to checksum to write
    # Verified files are made durable (one syncfs) and renamed into place in groups of this many MB:
    # the most a kill -9 or power loss can make a rerun copy again.
    commit_mb: int = 2048
    poll_s: float = 60.0  # daemon: seconds between convergence rounds
    # daemon: remove staged datasets no longer listed (never one a process on the node has open)
    evict_unlisted: bool = True


@dataclass
class CheckpointSection:
    local_root: str = "/scratch/checkpoints"
    s3_prefix: str = "checkpoints"
    keep_local: int = 1
    interval_s: float = 7200.0
    keep_remote: int = 0  # newest remote checkpoints kept by `ckpt prune --remote`; 0: keep all
    milestone_every: int = 0  # steps that are a multiple of this are never pruned remotely; 0: none
    lag_warning_s: float = 10800.0  # `ckpt status` warns when the newest upload lags this far behind
    lag_critical_s: float = 21600.0


@dataclass
class SpareSection:
    reservation: str = "training"  # the protected training reservation
    spare_reservation: str = ""  # where warm spares wait; empty: "<reservation>-spare"
    spares: list[str] = field(default_factory=list)  # nodes to keep as spares (besides those added)
    min_spares: int = 1
    poll_s: float = 2.0
    warm_timeout_s: float = 1800.0  # a warm job running longer than this is cancelled and retried
    job_name: str = ""  # protected job name; empty: every job in the reservation
    remote: str = ""  # s3://bucket/prefix of the run's checkpoints; empty: s3.bucket + checkpoint.s3_prefix


@dataclass
class Config:
    cluster: ClusterSection = field(default_factory=ClusterSection)
    paths: PathsSection = field(default_factory=PathsSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)
    s3: S3Section = field(default_factory=S3Section)
    health: HealthSection = field(default_factory=HealthSection)
    staging: StagingSection = field(default_factory=StagingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    spare: SpareSection = field(default_factory=SpareSection)
    # Files that were read, in order; not a config key.
    sources: list[str] = field(default_factory=list, metadata={"internal": True})

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        return _to_dict(self, redact)


def node_name() -> str:
    """This node's Slurm name: SLURMD_NODENAME (set in hooks), CLUSTEROPS_NODE, else the short hostname."""
    for var in ("SLURMD_NODENAME", "CLUSTEROPS_NODE"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return socket.gethostname().split(".")[0]


def node_path(template: str, node: str | None = None) -> Path:
    """A configured path with `{node}` replaced by this (or the given) node's name."""
    return Path(template.replace("{node}", node or node_name()))


def load(path: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the effective configuration: defaults, system file, CLUSTEROPS_CONFIG, `path`, env overrides."""
    env = os.environ if env is None else env
    cfg = Config()
    files: list[Path] = []
    if SYSTEM_CONFIG.is_file():
        files.append(SYSTEM_CONFIG)
    if env.get("CLUSTEROPS_CONFIG"):
        files.append(Path(env["CLUSTEROPS_CONFIG"]))
    if path:
        files.append(Path(path))
    for file in files:
        _merge_file(cfg, file)
    _merge_env(cfg, env)
    return cfg


def _merge_file(cfg: Config, file: Path) -> None:
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot read config: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from None
    for section_name, values in data.items():
        section = _section(cfg, section_name, str(file))
        if not isinstance(values, dict):
            raise ConfigError(f"{file}: '{section_name}' must be a table like [{section_name}]")
        for key, value in values.items():
            _assign(section, section_name, key, value, str(file), from_env=False)
    cfg.sources.append(str(file))


def _merge_env(cfg: Config, env: typing.Mapping[str, str]) -> None:
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == "CLUSTEROPS_CONFIG" or "__" not in var:
            continue
        section_name, _, key = var[len(ENV_PREFIX) :].lower().partition("__")
        section = _section(cfg, section_name, f"environment variable {var}")
        _assign(section, section_name, key, value, f"environment variable {var}", from_env=True)


def _section(cfg: Config, name: str, origin: str) -> Any:
    names = [f.name for f in dataclasses.fields(cfg) if not f.metadata.get("internal")]
    if name not in names:
        raise ConfigError(f"{origin}: unknown section '{name}' (known: {', '.join(names)})")
    return getattr(cfg, name)


def _assign(section: Any, section_name: str, key: str, value: Any, origin: str, from_env: bool) -> None:
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        known = ", ".join(sorted(hints))
        raise ConfigError(f"{origin}: unknown key '{section_name}.{key}' (known: {known})")
    setattr(section, key, _coerce(hints[key], value, f"{origin}: key '{section_name}.{key}'", from_env))


def _coerce(kind: Any, value: Any, where: str, from_env: bool) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if kind is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(kind)
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(item, v, f"{where}[{i}]", from_env) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in config sections")
    raise ConfigError(f"{where}: unsupported config type {kind!r}")


def _to_dict(obj: Any, redact: bool) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if redact and f.metadata.get("secret") and value:
                out[f.name] = REDACTED
            else:
                out[f.name] = _to_dict(value, redact)
        return out
    if isinstance(obj, list):
        return [_to_dict(v, redact) for v in obj]
    return obj


def dumps_toml(cfg: Config, redact: bool = False) -> str:
    """Render a config as TOML (flat sections of scalars and lists only), e.g. for the sandbox to write."""
    lines: list[str] = []
    for section, values in cfg.to_dict(redact=redact).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")
