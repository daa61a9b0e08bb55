"""Drains with a reason an operator can act on, and undrains only what we drained.

Reason: `clusterops: <check>: <detail>`. A node drained by anyone else (a reason without the prefix)
is never touched: not re-reasoned, not resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterops import config as config_mod
from clusterops.health.model import Report, clip

REASON_MAX = 240


@dataclass
class NodeView:
    name: str
    state: str  # e.g. IDLE+DRAIN
    reason: str  # without the `[user@time]` suffix scontrol adds

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.state.upper().split("+")


def reason_for(report: Report, prefix: str) -> str:
    """`clusterops: gpu: GPU 3 (...): row remap pending: reset the GPU (+1 more check: efa)`."""
    bad = report.critical()
    if not bad:
        return ""
    first = bad[0]
    more = f" (+{len(bad) - 1} more: {', '.join(c.name for c in bad[1:])})" if len(bad) > 1 else ""
    text = f"{prefix} {first.name}: {first.detail}"
    # scontrol reads `=` as a new key; Slurm keeps reasons short in every listing.
    return clip(text.replace("=", ":"), REASON_MAX - len(more)) + more


def client(cfg: config_mod.Config):
    from clusterops.slurm import SlurmClient

    return SlurmClient(cfg.slurm.conf, cfg.slurm.timeout_s, backend="command", bin_dir=cfg.slurm.bin_dir)


def node_view(slurm, node: str) -> NodeView:
    """One node from `scontrol show node -o NODE` (cheap: no whole-cluster sinfo from every node)."""
    from clusterops.slurm.client import _check_name
    from clusterops.slurm.command import parse_kv_line

    out = slurm.cmd.scontrol("-o", "show", "node", _check_name("node", node))
    kv = parse_kv_line(out.strip().splitlines()[0] if out.strip() else "")
    reason = kv.get("Reason", "")
    if reason.endswith("]") and " [" in reason:
        reason = reason[: reason.rindex(" [")]
    return NodeView(node, kv.get("State", ""), "" if reason == "(null)" else reason)


def drain_if_critical(cfg: config_mod.Config, report: Report, slurm=None) -> tuple[str, str]:
    """(action, reason): drained | already | not-ours | none. Never overwrites someone else's drain."""
    reason = reason_for(report, cfg.health.drain_prefix)
    if not reason:
        return "none", ""
    slurm = slurm or client(cfg)
    view = node_view(slurm, report.node)
    if view.drained:
        return ("already" if view.reason.startswith(cfg.health.drain_prefix) else "not-ours"), view.reason
    slurm.drain(report.node, reason)
    return "drained", reason
