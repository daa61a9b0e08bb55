"""Instance profiles: what a healthy node of one instance type looks like (GPU and EFA counts,
links, mounts, memory) and the thresholds the checks apply. Shipped in clusterops/profiles/*.toml."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterops.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclass
class GpuProfile:
    count: int = 0
    model: str = ""  # expected nvmlDeviceGetName; "" accepts any
    nvlinks: int = 0  # active NVLinks per GPU
    pcie_gen: int = 0  # 0: compare with the device's own maximum only
    pcie_width: int = 0
    persistence_mode: bool = True
    temp_margin_c: float = 5.0  # warn this close to the slowdown threshold
    ecc_aggregate_critical: int = 0  # aggregate uncorrected ECC at or above this is critical; 0: warn only
    fabric: bool = False  # NVSwitch systems: the GPU must be registered with the fabric manager
    # NVLink error counters: rise over health.counter_window_s, [warning, critical]; 0 disables a level.
    nvlink_errors: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class EfaProfile:
    count: int = 0
    memlock_unlimited: bool = False
    # hw_counters rise over health.counter_window_s, [warning, critical]; "*_err" matches every *_err.
    counters: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class XidProfile:
    critical: list[int] = field(default_factory=list)  # added to the built-in list
    informational: list[int] = field(default_factory=list)
    ignore: list[int] = field(default_factory=list)


@dataclass
class MdArray:
    name: str = ""
    level: str = ""
    devices: int = 0


@dataclass
class StorageProfile:
    required_mounts: list[str] = field(default_factory=list)
    writable: list[str] = field(default_factory=list)  # `{local_root}`, `{state_dir}` expand from config
    min_free_pct: float = 0.0
    min_free_gib: float = 0.0
    md: list[MdArray] = field(default_factory=list)


@dataclass
class SystemProfile:
    cpus: int = 0
    mem_total_min_gib: float = 0.0
    mem_available_min_pct: float = 0.0
    load_per_cpu_warn: float = 0.0
    dstate_warn: int = 0  # processes stuck in D state across two runs; 0 disables
    dstate_critical: int = 0


@dataclass
class Profile:
    name: str = ""
    description: str = ""
    instance_type: str = ""  # DMI product name a node of this type reports; "" skips the comparison
    gpu: GpuProfile = field(default_factory=GpuProfile)
    efa: EfaProfile = field(default_factory=EfaProfile)
    xid: XidProfile = field(default_factory=XidProfile)
    storage: StorageProfile = field(default_factory=StorageProfile)
    system: SystemProfile = field(default_factory=SystemProfile)


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load(name_or_path: str) -> Profile:
    """A shipped profile by name (`p5.48xlarge`) or a TOML file by path."""
    if not name_or_path:
        raise ConfigError("no instance profile: set [cluster] profile or [health] profile")
    path = Path(name_or_path)
    if not name_or_path.endswith(".toml"):
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(f"profile {name_or_path!r}: not shipped (known: {', '.join(available())})")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: profile file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _build(Profile, data, str(path), "")


def _build(cls: type, data: Any, origin: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: '{where or 'profile'}' must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{origin}: unknown profile key '{where}{key}' (known: {', '.join(sorted(fields))})"
            )
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, origin, f"{where}{key}.")
        elif key == "md":
            kwargs[key] = [_build(MdArray, v, origin, f"{where}md.") for v in value]
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{origin}: '{where}{key}' must be true or false")
            kwargs[key] = value
        elif isinstance(default, int | float) and not isinstance(value, int | float):
            raise ConfigError(f"{origin}: '{where}{key}' must be a number, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{origin}: '{where}{key}' must be a string, got {value!r}")
        elif isinstance(default, dict):
            for k, v in value.items():
                if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)):
                    raise ConfigError(f"{origin}: '{where}{key}.{k}' must be [warning, critical] integers")
            kwargs[key] = dict(value)
        else:
            kwargs[key] = type(default)(value) if isinstance(default, float) else value
    return cls(**kwargs)
