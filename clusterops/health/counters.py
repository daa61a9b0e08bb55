"""How much a set of error counters rose over a time window, from a few checkpoints kept on disk.

The baseline is the oldest checkpoint inside the window, so a rise is seen by every run in the window
(prolog, epilog, the periodic check, an operator's `health check`) and none of them hides it from the
others; once the window has passed, an old rise no longer counts. A counter that went down was reset
(driver reload, reboot): its checkpoints are dropped and it starts again from now.
"""

from __future__ import annotations

from typing import Any

CHECKPOINTS = 4


def rise(
    prev: dict[str, Any] | None, current: dict[str, int], now: float, window: float
) -> tuple[dict[str, int], float, dict[str, Any]]:
    """(rise per counter since the baseline, seconds the baseline spans, state for the next run)."""
    points = [p for p in (prev or {}).get("checkpoints", []) if now - window <= p["ts"] <= now]
    if any(current.get(k, v) < v for p in points for k, v in p["v"].items()):
        points = []
    base = points[0] if points else {"ts": now, "v": current}
    deltas = {k: v - base["v"].get(k, v) for k, v in current.items()}
    if not points or now - points[-1]["ts"] >= window / CHECKPOINTS:
        points.append({"ts": now, "v": dict(current)})
    return deltas, now - base["ts"], {"checkpoints": points[-CHECKPOINTS:]}


def level(delta: int, thresholds: list[int] | None) -> int:
    """0 below the warning threshold, 1 at/over warning, 2 at/over critical (a 0 threshold never fires)."""
    if not thresholds or delta <= 0:
        return 0
    warn, crit = thresholds
    if crit and delta >= crit:
        return 2
    if warn and delta >= warn:
        return 1
    return 0
