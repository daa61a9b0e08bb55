"""`ckpt sync`, the cron / systemd-timer entry point: under a lock, push the newest checkpoint, prune,
and refresh the status textfile. An overlapping run finds the lock held and exits 0.

It makes no Slurm call (the node's name comes from SLURMD_NODENAME / CLUSTEROPS_NODE / the hostname),
so a slurmctld outage cannot stop checkpoints reaching S3; tests/health/test_hook_outage.py checks
that with a hung controller. Keep it so: anything Slurm-derived it needs later must degrade, not fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clusterops.checkpoint import prune, push, status
from clusterops.checkpoint.lock import Lock
from clusterops.checkpoint.remote import Remote
from clusterops.checkpoint.transfer import Transfers

LOCK_NAME = "ckpt-sync.lock"


@dataclass
class SyncResult:
    skipped: bool
    message: str
    push: push.PushResult | None = None
    pruned: list[prune.Action] = field(default_factory=list)
    status: status.CkptStatus | None = None


def sync(
    *,
    local_root: Path,
    configured_root: Path,
    remote: Remote,
    transfers: Transfers,
    node: str,
    state_dir: Path,
    keep_local: int,
    keep_remote: int = 0,
    milestone_every: int = 0,
    warn_s: float = 10800.0,
    crit_s: float = 21600.0,
) -> SyncResult:
    with Lock(state_dir / LOCK_NAME) as lock:
        if not lock.acquired:
            holder = f" (pid {lock.holder})" if lock.holder else ""
            return SyncResult(True, f"another ckpt sync holds {lock.path}{holder}; nothing to do")
        pushed = push.push(local_root, remote, transfers, node)
        pruned = prune.prune_local(local_root, configured_root, remote, keep_local)
        pruned += prune.prune_remote(remote, keep_remote, milestone_every)
        st = status.collect(local_root, remote, warn_s, crit_s)
        return SyncResult(False, pushed.message, pushed, pruned, st)
