"""`ckpt prune`: local retention that never deletes a checkpoint whose S3 copy is not verified, and
optional remote retention that keeps `latest`, the newest N and milestone steps.

Nothing outside the configured checkpoint root is ever deleted; a step directory is first renamed to a
hidden `.step-N.deleting-PID` (atomic: it stops being a checkpoint at once), then removed."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from clusterops.checkpoint import layout
from clusterops.checkpoint.remote import Remote
from clusterops.errors import UsageError


@dataclass
class Action:
    where: str  # local | remote
    step: int
    action: str  # delete | keep
    reason: str
    path: str = ""


def check_inside(path: str | Path, configured_root: str | Path) -> Path:
    """`path` resolved, if it is the configured root or lies under it; else a UsageError."""
    p, root = Path(path).resolve(), Path(configured_root).resolve()
    if p != root and root not in p.parents:
        raise UsageError(f"{path}: outside the configured checkpoint root {root}; refusing to delete there")
    return p


def prune_local(
    local_root: str | Path, configured_root: str | Path, remote: Remote, keep: int, dry_run: bool = False
) -> list[Action]:
    root = check_inside(local_root, configured_root)
    keep = max(1, keep)
    _remove_leftovers(root, dry_run)
    steps = layout.list_steps(root)
    committed = [s for s in steps if s.committed]
    newest = {s.path for s in committed[-keep:]}
    out = []
    for s in reversed(steps):
        if not s.committed:
            out.append(
                Action("local", s.step, "keep", "not committed (a save may be in progress)", str(s.path))
            )
        elif s.path in newest:
            out.append(Action("local", s.step, "keep", f"among the newest {keep} committed", str(s.path)))
        elif not _verified_in_s3(remote, s):
            out.append(Action("local", s.step, "keep", "its S3 copy is not verified", str(s.path)))
        else:
            out.append(Action("local", s.step, "delete", "older, and verified in S3", str(s.path)))
            if not dry_run:
                _delete_dir(root, s.path)
    return out


def prune_remote(remote: Remote, keep: int, milestone_every: int, dry_run: bool = False) -> list[Action]:
    """Delete remote checkpoints beyond the newest `keep` complete ones, sparing `latest` and milestones.
    Incomplete steps are left alone: another node may still be pushing them."""
    if keep <= 0:
        return []
    latest = remote.latest()
    complete = [n for n in remote.steps() if remote.manifest_bytes(n) is not None]
    kept = set(complete[-keep:])
    out = []
    for n in reversed(complete):
        if n in kept:
            out.append(Action("remote", n, "keep", f"among the newest {keep} complete"))
        elif latest is not None and n >= latest.step:
            out.append(Action("remote", n, "keep", "latest points at it (or later)"))
        elif milestone_every and n % milestone_every == 0:
            out.append(Action("remote", n, "keep", f"milestone (every {milestone_every} steps)"))
        else:
            out.append(Action("remote", n, "delete", "older than the newest kept"))
            if not dry_run:
                remote.delete_step(n)
    return out


def _verified_in_s3(remote: Remote, s: layout.StepDir) -> bool:
    m = layout.read_manifest(s.path)
    theirs = remote.manifest(s.step)
    if theirs is None:
        return False
    by_path = theirs.by_path()
    if any(by_path.get(f.path) != f for f in m.files):
        return False
    return not remote.unverified(s.step, m.files)


def _delete_dir(root: Path, path: Path) -> None:
    p = path.resolve()
    if p.parent != root or path.is_symlink():
        raise UsageError(f"{path}: not a step directory directly under {root}; refusing to delete")
    doomed = root / f".{p.name}.deleting-{os.getpid()}"
    os.rename(p, doomed)
    shutil.rmtree(doomed)


def _remove_leftovers(root: Path, dry_run: bool) -> None:
    """Finish deletions a killed prune started."""
    for child in root.glob(".*.deleting-*"):
        if child.is_dir() and not child.is_symlink() and not dry_run:
            shutil.rmtree(child, ignore_errors=True)
