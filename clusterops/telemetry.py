"""What clusterops tells monitoring: an NDJSON event log and Prometheus textfiles (node_exporter)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterops.fsutil import atomic_write_text, open_nofollow

EVENT_FORMAT = 1
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def log_event(path: str | os.PathLike[str], kind: str, **fields: Any) -> dict[str, Any]:
    """Append one event as a JSON line; a single O_APPEND write so concurrent writers do not interleave.
    Each line carries EVENT_FORMAT ("v"); readers take lines of any version (old writers run on during
    an upgrade) and rely only on "ts" and "event"."""
    event = {"ts": round(time.time(), 3), "event": kind, "v": EVENT_FORMAT, **fields}
    line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # a planted symlink is refused
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Events in order; a torn last line (a writer killed mid-write) or any line that is not one JSON
    object is skipped, not fatal. A symlink in the log's place is refused."""
    out = []
    try:
        with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(event, dict):
                    out.append(event)
    except FileNotFoundError:
        pass
    return out


@dataclass
class Metric:
    name: str
    help: str
    kind: str = "gauge"  # gauge | counter
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, float(value)))
        return self


def render_metrics(metrics: Iterable[Metric]) -> str:
    lines = []
    for m in metrics:
        if not _METRIC_NAME.match(m.name):
            raise ValueError(f"bad metric name {m.name!r}")
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            lines.append(
                f"{m.name}{{{label_text}}} {_number(value)}" if labels else f"{m.name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def write_textfile(directory: str | os.PathLike[str], name: str, metrics: Iterable[Metric]) -> Path:
    """Write NAME.prom atomically so node_exporter never reads half a file."""
    return atomic_write_text(Path(directory) / f"{name}.prom", render_metrics(metrics))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)
