"""Node fixtures: everything the checks read on one node (NVML answers, /sys and /proc files, the
kernel log, probes, the checks' previous state), as JSON, replayed behind the telemetry boundary.

A fixture may name a `base` fixture (a path relative to itself) and then holds only what differs,
merged over the base as a JSON merge patch (RFC 7396: objects merge, `null` removes, lists replace).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterops.errors import UsageError
from clusterops.health.nvml import ReplayNvml

FORMAT = "clusterops-node-fixture/1"


def load(path: str | Path) -> dict[str, Any]:
    """The fixture at `path`, with its base chain merged in."""
    return _load(Path(path), set())


def _load(path: Path, seen: set[Path]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise UsageError(f"{path}: fixture base chain loops")
    seen.add(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: node fixture not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON node fixture: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f'{path}: not a node fixture (expected "format": "{FORMAT}")')
    base = data.pop("base", None)
    if base:
        return merge_patch(_load(path.parent / base, seen), data)
    return data


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FixtureTelemetry:
    """Replays a fixture. clock="fixture": time stands at the recorded `now` (a pure replay, used by
    `health check --fixture`); clock="real": now is now and the kernel log keeps its ages, for a
    fixture that stands in for a node's hardware over many runs (the sandbox)."""

    def __init__(self, data: dict[str, Any], source: str = "", clock: str = "fixture") -> None:
        self.data = data
        self.source = source
        self.kind = f"fixture:{source}" if source else "fixture"
        self.clock = clock
        self.recorded_now = float(data.get("now", 0.0) or time.time())
        self._shift = time.time() - self.recorded_now if clock == "real" else 0.0
        self._hangs = set(data.get("hang", []))
        self.progress: Callable[[str], None] = lambda s: None
        files = data.get("files", {})
        self._files: dict[str, str | None] = files
        self._dirs: dict[str, list[str] | None] = data.get("dirs", {})
        self._children: dict[str, set[str]] | None = None

    @classmethod
    def from_file(cls, path: str | Path, clock: str = "fixture") -> FixtureTelemetry:
        return cls(load(path), str(path), clock)

    def state(self) -> dict[str, Any]:
        """The checks' state as it was when the fixture was recorded."""
        return copy.deepcopy(self.data.get("state", {}))

    def _hang(self, what: str) -> None:
        if what in self._hangs:
            time.sleep(3600)  # the runner kills us long before this ends

    def now(self) -> float:
        return self.recorded_now + self._shift

    def nvml(self) -> ReplayNvml:
        self._hang("nvmlInit")
        return ReplayNvml(self.data.get("nvml", {}), self.progress, self._hang)

    def read(self, path: str) -> str | None:
        self._hang(f"read {path}")
        return self._files.get(path)

    def _derived(self) -> dict[str, set[str]]:
        if self._children is None:
            children: dict[str, set[str]] = {}
            for p in [*self._files, *self.data.get("exists", {})]:
                parts = p.rstrip("/").split("/")
                for i in range(1, len(parts)):
                    children.setdefault("/".join(parts[:i]) or "/", set()).add(parts[i])
            self._children = children
        return self._children

    def listdir(self, path: str) -> list[str] | None:
        if path in self._dirs:
            return self._dirs[path]
        found = self._derived().get(path.rstrip("/") or "/")
        return sorted(found) if found else None

    def exists(self, path: str) -> bool:
        recorded = self.data.get("exists", {})
        if path in recorded:
            return bool(recorded[path])
        return self._files.get(path) is not None or self.listdir(path) is not None

    def statvfs(self, path: str) -> dict[str, int] | None:
        self.progress(f"statvfs {path}")
        self._hang(f"statvfs {path}")
        return self.data.get("statvfs", {}).get(path)

    def probe_write(self, path: str) -> str:
        self.progress(f"write probe {path}")
        self._hang(f"write probe {path}")
        return self.data.get("writable", {}).get(path, f"ENOENT: {path} not in the fixture")

    def kernel_log(self, match: str) -> list[dict[str, Any]]:
        self.progress("read kernel log")
        self._hang("kernel_log")
        return [
            {**line, "ts": line["ts"] + self._shift}
            for line in self.data.get("kernel_log", [])
            if match in line.get("msg", "")
        ]

    def blocked_processes(self) -> list[dict[str, Any]]:
        self._hang("blocked_processes")
        return list(self.data.get("blocked_processes", []))

    def memlock(self) -> int:
        return int(self.data.get("memlock", -1))

    def cpu_count(self) -> int:
        return int(self.data.get("cpu_count", 0))
