"""One typed configuration for every clusterops command, daemon and hook.

Layers, later wins: built-in defaults, /etc/clusterops/clusterops.toml, the file named by
CLUSTEROPS_CONFIG, the file given with --config, then CLUSTEROPS_<SECTION>__<KEY> variables.
Unknown keys, wrong types and values out of range (RULES) are errors naming the key and the file they
came from; the value is shown unless the key holds (or looks like it holds) a secret.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import stat
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
    # The root-only key that signs our drain reasons (health/ownership.py): the same file on every
    # node and the head node, mode 0600. Empty: .keys/drain.key beside the nodes' state directories.
    drain_key_file: str = ""


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


# What a value must be beyond its type, by "section.key". Every number must also be finite and within
# [0, MAX_NUMBER] unless its rule says otherwise; every string (and list item) at most MAX_STRING
# characters with no control characters; every list at most MAX_ITEMS long. A zero or NaN timeout made a
# hook spin; an empty drain prefix made every node look drained by us.
MAX_NUMBER = 1e9
MAX_STRING = 4096
MAX_ITEMS = 4096


@dataclass(frozen=True)
class Rule:
    lo: float = 0.0
    hi: float = MAX_NUMBER
    above: bool = False  # lo itself is not allowed (a timeout or an interval of 0)
    choices: tuple[str, ...] = ()
    pattern: str = ""  # a non-empty string (each list item) must match it whole
    required: bool = False  # the empty string is not allowed
    hint: str = ""  # what the pattern means, for the error line


_SECONDS = Rule(above=True, hi=MAX_NUMBER)
_COUNT = Rule(lo=1)
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ABS = Rule(pattern=r"(?!(.*/)?\.\.(/|$))/.*", required=True, hint="an absolute path without '..'")
_ABS_OR_EMPTY = dataclasses.replace(_ABS, required=False)
_KEY_PREFIX = Rule(
    pattern=r"(?!/)(?!(.*/)?\.\.(/|$))[A-Za-z0-9._/=-]+",
    hint="an S3 key prefix (letters, digits, . _ - = /; no leading '/', no '..')",
)

RULES: dict[str, Rule] = {
    "cluster.name": Rule(pattern=_NAME, required=True, hint="a name (letters, digits, . _ -)"),
    "cluster.profile": Rule(required=True),
    "paths.state_dir": _ABS,
    "paths.local_root": _ABS,
    "paths.log_dir": _ABS,
    "paths.textfile_dir": _ABS,
    "slurm.backend": Rule(choices=("auto", "command", "pyslurm")),
    "slurm.conf": _ABS_OR_EMPTY,
    "slurm.timeout_s": _SECONDS,
    "slurm.bin_dir": _ABS_OR_EMPTY,
    "s3.endpoint_url": Rule(pattern=r"https?://[^\s/@]+(/\S*)?", hint="an http(s):// URL"),
    "s3.region": Rule(pattern=r"[a-z0-9-]+", hint="a region name like us-east-1"),
    "s3.bucket": Rule(pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", hint="a bucket name"),
    "s3.prefix": _KEY_PREFIX,
    "s3.connect_timeout_s": _SECONDS,
    "s3.read_timeout_s": _SECONDS,
    "s3.max_attempts": Rule(lo=1, hi=100),
    "s3.multipart_chunk_mb": Rule(lo=5, hi=5120),  # S3's own part-size limits
    "s3.max_concurrency": Rule(lo=1, hi=1024),
    "s3.upload_concurrency": Rule(lo=1, hi=1024),
    "s3.download_chunk_mb": Rule(lo=1, hi=5120),
    "health.check_timeout_s": _SECONDS,
    "health.budget_s": _SECONDS,
    "health.disabled": Rule(pattern=_NAME, hint="a check name"),
    "health.drain_prefix": Rule(
        pattern=r"[A-Za-z][A-Za-z0-9_.:/-]{0,63}",
        required=True,
        hint="a tag like 'clusterops:' (a letter, then letters, digits, _ . : / -)",
    ),
    "health.prolog_checks": Rule(pattern=_NAME, hint="a check name"),
    "health.epilog_checks": Rule(pattern=_NAME, hint="a check name"),
    "health.healthcheck_checks": Rule(pattern=_NAME, hint="a check name"),
    "health.state_file": _ABS_OR_EMPTY,
    "health.event_log": _ABS_OR_EMPTY,
    "health.textfile_name": Rule(pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]*", hint="a file name without '/'"),
    "health.xid_window_s": _SECONDS,
    "health.counter_window_s": _SECONDS,
    "health.isolation": Rule(choices=("fork", "inline")),
    "health.drain_key_file": _ABS_OR_EMPTY,
    "staging.max_workers": Rule(lo=1, hi=1024),
    "staging.buffer_mb": Rule(lo=1, hi=4096),
    "staging.commit_mb": _COUNT,
    "staging.poll_s": _SECONDS,
    "checkpoint.local_root": _ABS,
    "checkpoint.s3_prefix": dataclasses.replace(_KEY_PREFIX, required=True),
    "checkpoint.keep_local": _COUNT,  # 0 would delete the newest local step
    "checkpoint.interval_s": _SECONDS,
    "checkpoint.lag_warning_s": _SECONDS,
    "checkpoint.lag_critical_s": _SECONDS,
    "spare.reservation": Rule(pattern=_NAME, required=True, hint="a Slurm reservation name"),
    "spare.spare_reservation": Rule(pattern=_NAME, hint="a Slurm reservation name"),
    "spare.spares": Rule(pattern=r"[A-Za-z0-9._\[\],-]+", hint="a node name or host list"),
    "spare.poll_s": _SECONDS,
    "spare.warm_timeout_s": _SECONDS,
    "spare.remote": Rule(pattern=r"s3://[A-Za-z0-9][A-Za-z0-9._-]*(/\S*)?", hint="s3://bucket/prefix"),
}
_DEFAULT_RULE = Rule()
# A key whose name says it holds a credential: its value is never shown, even in an error.
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|auth", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    ck = cfg.checkpoint
    if ck.lag_critical_s < ck.lag_warning_s:
        origin = ", ".join(cfg.sources) or "environment"
        raise ConfigError(
            f"{origin}: key 'checkpoint.lag_critical_s' ({ck.lag_critical_s:g}) must not be below"
            f" 'checkpoint.lag_warning_s' ({ck.lag_warning_s:g})"
        )
    return cfg


MAX_CONFIG_BYTES = 1 << 20


def _read_config(file: Path) -> str:
    """The file's text. A FIFO would block a hook forever, so only a regular file or a character
    device (`--config /dev/null`: defaults only) is read, and at most MAX_CONFIG_BYTES of it."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot read config: {e.strerror}") from None
    except ValueError:  # a NUL in the name
        raise ConfigError(f"{file!r}: not a valid file name") from None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise ConfigError(f"{file}: cannot read config: not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{file}: config is larger than {MAX_CONFIG_BYTES} bytes")
    except OSError as e:
        raise ConfigError(f"{file}: cannot read config: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: not UTF-8 text (byte {e.start})") from None


def _merge_file(cfg: Config, file: Path) -> None:
    text = _read_config(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{file}: not valid TOML: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal of thousands of digits
        raise ConfigError(f"{file}: not valid TOML: {str(e)[:120]}") from None
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
        raise ConfigError(f"{origin}: unknown section {_show(name, False)} (known: {', '.join(names)})")
    return getattr(cfg, name)


def _assign(section: Any, section_name: str, key: str, value: Any, origin: str, from_env: bool) -> None:
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        known = ", ".join(sorted(hints))
        raise ConfigError(f"{origin}: unknown key {_show(f'{section_name}.{key}', False)} (known: {known})")
    name = f"{section_name}.{key}"
    shown = _secret_key(section, key)
    where = f"{origin}: key '{name}'"
    value = _coerce(hints[key], value, where, from_env, shown)
    rule = RULES.get(name, _DEFAULT_RULE)
    for item in value if isinstance(value, list) else [value]:
        _check(rule, item, where, shown)
    if isinstance(value, list) and len(value) > MAX_ITEMS:
        raise ConfigError(f"{where} has {len(value)} items, more than {MAX_ITEMS}")
    setattr(section, key, value)


def _secret_key(section: Any, key: str) -> bool:
    """True where the value must never be shown: the field is a secret, or its name says it is one."""
    fields = {f.name: f for f in dataclasses.fields(section)}
    return bool(_SECRET_NAME.search(key)) or bool(key in fields and fields[key].metadata.get("secret"))


def _show(value: Any, secret: bool) -> str:
    """A value for an error line: never a secret, never more than a line's worth."""
    if secret:
        return REDACTED
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check(rule: Rule, value: Any, where: str, secret: bool) -> None:
    got = f"got {_show(value, secret)}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, {got}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        low_ok = value > rule.lo if rule.above else value >= rule.lo
        if not low_ok or value > rule.hi:
            low = f"above {rule.lo:g}" if rule.above else f"at least {rule.lo:g}"
            raise ConfigError(f"{where} must be {low} and at most {rule.hi:g}, {got}")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ConfigError(f"{where} is {len(value)} characters long, more than {MAX_STRING}")
        if _CONTROL.search(value):
            raise ConfigError(f"{where} must not contain control characters, {got}")
        if rule.choices and value not in rule.choices:
            raise ConfigError(f"{where} must be one of {', '.join(rule.choices)}, {got}")
        if not value:
            if rule.required:
                raise ConfigError(f"{where} must not be empty")
        elif rule.pattern and not re.fullmatch(rule.pattern, value):
            raise ConfigError(f"{where} must be {rule.hint or 'of the form ' + rule.pattern}, {got}")


def _coerce(kind: Any, value: Any, where: str, from_env: bool, secret: bool = False) -> Any:
    origin = typing.get_origin(kind)
    got = f"got {_show(value, secret)}"
    if kind is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, {got}")
    if kind is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, {got}")
    if kind is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, {got}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, {got}")
    if origin is list:
        (item,) = typing.get_args(kind)
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, {got}")
        return [_coerce(item, v, f"{where}[{i}]", from_env, secret) for i, v in enumerate(value)]
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
