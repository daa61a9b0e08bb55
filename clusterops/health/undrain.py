"""`health undrain`: resume nodes whose drain clusterops set (its reason carries our valid ownership tag,
clusterops.health.ownership) and which pass the checks now.

A drain set by anyone else is never undone, whatever its reason starts with. The node is re-read just
before it is resumed, so a person who drains it by hand in the meantime wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterops import config as config_mod
from clusterops.errors import ClusteropsError
from clusterops.health import drain, export, ownership, service
from clusterops.verdict import Status


@dataclass
class Undrained:
    node: str
    action: str  # resumed | would-resume | failing | not-ours | not-drained | skipped | error
    why: str = ""


def undrain(cfg: config_mod.Config, nodes: list[str] | None = None, dry_run: bool = False) -> list[Undrained]:
    slurm = drain.client(cfg)
    try:
        key = drain.key(cfg, create=False)
    except ClusteropsError as e:
        key, no_key = None, str(e)
    known = {n.name: n for n in slurm.nodes()}
    # Without the key nothing is provably ours: list the tagged drains anyway, each saying why not.
    mine = (lambda n: drain.owned(key, n)) if key is not None else (lambda n: ownership.parse(n.reason))
    targets = nodes or sorted(n.name for n in known.values() if n.drained and mine(n))
    here = config_mod.node_name()
    out = []
    for name in targets:
        n = known.get(name)
        if n is None:
            out.append(Undrained(name, "error", "Slurm does not know this node"))
        elif not n.drained:
            out.append(Undrained(name, "not-drained", n.label))
        elif key is None:
            out.append(Undrained(name, "not-ours", f"cannot tell whose drain it is: {no_key}"))
        elif not drain.owned(key, n):
            why = key.why_not(n.name, n.reason, n.reason_time)
            out.append(Undrained(name, "not-ours", f"drained by someone else ({why}): {n.reason}"))
        elif not cfg.health.fixture and name != here:
            out.append(
                Undrained(
                    name, "skipped", f"its hardware is not here: run `clusterops health undrain` on {name}"
                )
            )
        else:
            out.append(_one(cfg, slurm, key, name, dry_run))
    return out


def _one(cfg: config_mod.Config, slurm, key, name: str, dry_run: bool) -> Undrained:
    try:
        report, _ = service.evaluate(cfg, hook="undrain", node=name)
    except ClusteropsError as e:
        return Undrained(name, "error", str(e))
    if report.verdict not in (Status.OK, Status.WARNING):
        worst = next((c for c in report.checks if c.verdict == report.verdict), None)
        return Undrained(name, "failing", f"{worst.name}: {worst.detail}" if worst else report.verdict.label)
    if dry_run:
        return Undrained(name, "would-resume", f"passes now ({report.verdict.label})")
    try:
        view = drain.node_view(slurm, name)
        if not (view.drained and drain.owned(key, view)):
            return Undrained(name, "not-ours", f"changed meanwhile: {view.state} {view.reason}")
        slurm.resume(name)
    except ClusteropsError as e:
        return Undrained(name, "error", str(e))
    export.event(cfg, name, "undrain", reason=view.reason, verdict=int(report.verdict))
    return Undrained(name, "resumed", f"was: {view.reason}")
