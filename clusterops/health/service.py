"""One health run from configuration: pick the telemetry (real hardware, a configured node fixture, or
a fixture given by hand), load the checks' state, run, keep the new state."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterops import config as config_mod
from clusterops.errors import UsageError
from clusterops.fsutil import atomic_write_json
from clusterops.health import profile as profile_mod
from clusterops.health.checks import NAMES, CheckContext, registry
from clusterops.health.model import Report
from clusterops.health.runner import run


@dataclass
class Plan:
    node: str
    profile: profile_mod.Profile
    telemetry: Any
    source: str
    state_file: Path | None  # None: state comes from the fixture and is not written back
    initial_state: dict[str, Any]


def state_path(cfg: config_mod.Config, node: str) -> Path:
    if cfg.health.state_file:
        return config_mod.node_path(cfg.health.state_file, node)
    return config_mod.node_path(cfg.paths.state_dir, node) / "health-state.json"


def select_checks(
    cfg: config_mod.Config, hook: str, only: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """(checks to run, checks disabled by config). `only` wins over the hook's list; `disabled` always
    applies."""
    wanted = [n for item in (only or []) for n in item.split(",") if n]
    if not wanted:
        wanted = list(getattr(cfg.health, f"{hook}_checks", None) or NAMES)
    unknown = [n for n in [*wanted, *cfg.health.disabled] if n not in NAMES]
    if unknown:
        raise UsageError(f"unknown check(s) {', '.join(unknown)} (known: {', '.join(NAMES)})")
    disabled = [n for n in wanted if n in cfg.health.disabled]
    return [n for n in NAMES if n in wanted and n not in disabled], disabled


def plan(
    cfg: config_mod.Config,
    node: str | None = None,
    profile: str | None = None,
    fixture: str | None = None,
    record: bool = False,
) -> Plan:
    from clusterops.health.fixture import FixtureTelemetry

    node = node or config_mod.node_name()
    prof = profile_mod.load(profile or cfg.health.profile or cfg.cluster.profile)
    if fixture:  # a pure replay: the fixture's clock and state, nothing written
        t = FixtureTelemetry.from_file(fixture, clock="fixture")
        return Plan(node, prof, t, t.kind, None, t.state())
    path = state_path(cfg, node)
    if cfg.health.fixture:  # the fixture plays this node's hardware, run after run
        t = FixtureTelemetry.from_file(config_mod.node_path(cfg.health.fixture, node), clock="real")
        return Plan(node, prof, t, t.kind, path, _read_state(path))
    from clusterops.health.telemetry import LiveTelemetry, RecordingTelemetry

    live = LiveTelemetry()
    return Plan(node, prof, RecordingTelemetry(live) if record else live, "live", path, _read_state(path))


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}  # a lost or torn state file costs one run of baselines, never a verdict


def evaluate(
    cfg: config_mod.Config,
    hook: str = "check",
    node: str | None = None,
    only: list[str] | None = None,
    profile: str | None = None,
    fixture: str | None = None,
    record: bool = False,
) -> tuple[Report, dict[str, Any]]:
    """Run the checks; (report, recording). The recording is filled only with record=True."""
    p = plan(cfg, node, profile, fixture, record)
    names, disabled = select_checks(cfg, hook, only)
    checks = registry()
    paths = {
        "local_root": str(config_mod.node_path(cfg.paths.local_root, p.node)),
        "state_dir": str(config_mod.node_path(cfg.paths.state_dir, p.node)),
    }
    contexts = {
        n: CheckContext(
            p.telemetry,
            p.profile,
            dict(p.initial_state.get(n, {})),
            cfg.health.xid_window_s,
            cfg.health.counter_window_s,
            paths,
            hook,
        )
        for n in names
    }
    started = time.time()
    t0 = time.monotonic()
    ran = run(
        {n: checks[n] for n in names},
        contexts,
        cfg.health.check_timeout_s,
        cfg.health.budget_s,
        "inline" if record else cfg.health.isolation,
    )
    report = Report(
        p.node,
        hook,
        p.profile.name,
        p.source,
        started,
        time.monotonic() - t0,
        [r.result for r in ran.values()],
        disabled,
    )
    new_state = dict(p.initial_state)
    for n, r in ran.items():
        if r.state is not None:
            new_state[n] = r.state
    if p.state_file is not None and new_state != p.initial_state:
        # No state dir: the next run re-baselines; the verdict of this one stands.
        with contextlib.suppress(OSError):
            atomic_write_json(p.state_file, new_state)
    recording: dict[str, Any] = {}
    if record:
        from clusterops.health.telemetry import merge

        recording = getattr(p.telemetry, "record", {})
        for r in ran.values():
            if r.record is not recording:
                merge(recording, r.record)
        recording["state"] = p.initial_state
    return report, recording


def fixture_from_recording(recording: dict[str, Any], report: Report) -> dict[str, Any]:
    from clusterops.health.fixture import FORMAT

    return {
        "format": FORMAT,
        "description": f"recorded by `clusterops health record` on {report.node}",
        "recorded": {
            "node": report.node,
            "host": os.uname().nodename,
            "at": report.started,
            "profile": report.profile,
            "verdict": int(report.verdict),
        },
        **{k: v for k, v in recording.items() if k != "record"},
        "now": recording.get("now", report.started),
    }
