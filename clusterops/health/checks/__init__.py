"""The checks, in the order they run and report. Each is `check(ctx) -> Outcome`, a function over the
telemetry boundary; the runner owns timing, timeouts, isolation, disabling and output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterops.health.model import Outcome
from clusterops.health.profile import Profile
from clusterops.health.telemetry import Telemetry

NAMES = ("gpu", "xid", "efa", "storage", "system")


@dataclass
class CheckContext:
    t: Telemetry
    profile: Profile
    state: dict[str, Any] = field(default_factory=dict)  # this check's state from the last run
    xid_window_s: float = 3600.0
    counter_window_s: float = 3600.0
    paths: dict[str, str] = field(default_factory=dict)  # {local_root}, {state_dir} for this node
    hook: str = "check"

    def expand(self, path: str) -> str:
        for key, value in self.paths.items():
            path = path.replace("{" + key + "}", value)
        return path


def registry() -> dict[str, Callable[[CheckContext], Outcome]]:
    from clusterops.health.checks import efa, gpu, storage, system, xid

    return {
        "gpu": gpu.check,
        "xid": xid.check,
        "efa": efa.check,
        "storage": storage.check,
        "system": system.check,
    }
