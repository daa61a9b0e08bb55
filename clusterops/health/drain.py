"""Drains with a reason an operator can act on, and undrains only what we drained.

Reason: `clusterops: <check>: <detail> #co1.<time>.<tag>`. The tag (clusterops.health.ownership) proves
the drain is ours; a reason without a valid one is someone else's, however it starts: it is never
re-reasoned and never resumed. Node state and reason come from Slurm's JSON, never from a text line a
reason could spoof.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterops import config as config_mod
from clusterops.errors import ClusteropsError, ConfigError
from clusterops.health import ownership
from clusterops.health.model import Report, clip

REASON_MAX = 240


@dataclass
class NodeView:
    name: str
    state: str  # e.g. IDLE+DRAIN
    reason: str
    reason_time: int | None = None  # when Slurm says the reason was set

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.state.upper().split("+")

    @property
    def down(self) -> bool:
        return self.state.upper().split("+")[0] == "DOWN"


def prefix_of(cfg: config_mod.Config) -> str:
    prefix = cfg.health.drain_prefix.strip()
    if not prefix:
        raise ConfigError("health.drain_prefix is empty: set it (e.g. 'clusterops:')")
    return prefix


def reason_for(report: Report, prefix: str) -> str:
    """`clusterops: gpu: GPU 3 (...): row remap pending: reset the GPU (+1 more check: efa)`, untagged."""
    bad = report.critical()
    if not bad:
        return ""
    first = bad[0]
    more = f" (+{len(bad) - 1} more: {', '.join(c.name for c in bad[1:])})" if len(bad) > 1 else ""
    text = f"{prefix} {first.name}: {first.detail}"
    # scontrol reads `=` as a new key; Slurm keeps reasons short in every listing.
    return clip(text.replace("=", ":"), REASON_MAX - ownership.TAG_LEN - len(more)) + more


def client(cfg: config_mod.Config):
    from clusterops.slurm import SlurmClient

    return SlurmClient(cfg.slurm.conf, cfg.slurm.timeout_s, backend="command", bin_dir=cfg.slurm.bin_dir)


def key(cfg: config_mod.Config, create: bool = True) -> ownership.DrainKey:
    return ownership.load(ownership.key_path(cfg), create=create)


def sign(cfg: config_mod.Config, node: str, reason: str) -> str:
    """Our reason with its ownership tag. Without a usable key the drain still happens, untagged: such a
    drain is never undone automatically (a person resumes it), which is the safe side."""
    try:
        return key(cfg).sign(node, reason, REASON_MAX)
    except ConfigError:
        return clip(ownership.normalize(reason), REASON_MAX)


def node_view(slurm, node: str) -> NodeView:
    """One node's state and reason from Slurm's JSON (that node alone where the version can)."""
    n = slurm.node(node)
    return NodeView(node, n.label.upper(), n.reason, n.reason_time)


def owned(drain_key: ownership.DrainKey | None, view) -> bool:
    """Whether the drain on `view` (a NodeView or slurm Node) is one clusterops set."""
    return drain_key is not None and drain_key.owns(view.name, view.reason, view.reason_time)


def drain_if_critical(cfg: config_mod.Config, report: Report, slurm=None) -> tuple[str, str]:
    """(action, reason): drained | already | not-ours | none. Never overwrites someone else's drain."""
    reason = reason_for(report, prefix_of(cfg))
    if not reason:
        return "none", ""
    slurm = slurm or client(cfg)
    return drain_with(cfg, slurm, report.node, reason)


def drain_with(cfg: config_mod.Config, slurm, node: str, reason: str) -> tuple[str, str]:
    """Drain `node` with our tagged `reason` unless it is drained already: (action, reason)."""
    view = node_view(slurm, node)
    if view.drained or (view.down and view.reason):
        try:
            mine = owned(key(cfg, create=False), view)
        except ClusteropsError:
            mine = False
        if view.drained or not mine:  # a DOWN node's reason is someone's too: never written over
            return ("already" if mine else "not-ours"), view.reason
    signed = sign(cfg, node, reason)
    slurm.drain(node, signed)
    return "drained", signed
