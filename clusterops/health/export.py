"""Where a health run goes besides the terminal: the NDJSON event log and a Prometheus textfile."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from clusterops import config as config_mod
from clusterops.health.model import Report
from clusterops.telemetry import Metric, log_event, write_textfile


def event_log_path(cfg: config_mod.Config, node: str) -> Path:
    if cfg.health.event_log:
        return config_mod.node_path(cfg.health.event_log, node)
    return config_mod.node_path(cfg.paths.log_dir, node) / "health.ndjson"


def event(cfg: config_mod.Config, node: str, kind: str, **fields: Any) -> None:
    """Append one event; a full or missing log directory never fails a hook."""
    with contextlib.suppress(OSError):
        log_event(event_log_path(cfg, node), kind, node=node, **fields)


def metrics(report: Report) -> list[Metric]:
    verdict = Metric(
        "clusterops_health_check_verdict", "Verdict per check: 0 ok, 1 warning, 2 critical, 3 unknown"
    )
    seconds = Metric("clusterops_health_check_seconds", "Wall seconds each check took")
    for c in report.checks:
        verdict.add(int(c.verdict), check=c.name)
        seconds.add(c.seconds, check=c.name)
    out = [
        Metric("clusterops_health_verdict", "Worst verdict of the last run").add(
            int(report.verdict), hook=report.hook
        ),
        Metric("clusterops_health_last_run_timestamp_seconds", "When the last run started").add(
            report.started
        ),
        verdict,
        seconds,
    ]
    extra: dict[str, Metric] = {}
    for c in report.checks:
        for name, labels, value in c.metrics:
            extra.setdefault(name, Metric(name, f"Reported by the {c.name} check")).add(value, **labels)
    return out + list(extra.values())


def publish(cfg: config_mod.Config, report: Report) -> None:
    """The textfile (atomic) and one `health_run` event."""
    if cfg.health.textfile_name:
        with contextlib.suppress(OSError):
            write_textfile(
                config_mod.node_path(cfg.paths.textfile_dir, report.node),
                cfg.health.textfile_name,
                metrics(report),
            )
    event(
        cfg,
        report.node,
        "health_run",
        hook=report.hook,
        verdict=int(report.verdict),
        source=report.source,
        seconds=round(report.seconds, 3),
        checks=[
            {"name": c.name, "verdict": int(c.verdict), "detail": c.detail, "seconds": round(c.seconds, 3)}
            for c in report.checks
        ],
    )
