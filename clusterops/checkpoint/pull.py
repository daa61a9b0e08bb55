"""`ckpt pull`: download a whole remote checkpoint into a temp directory beside the destination, verify
every byte against the manifest, then rename it into place. A failure leaves nothing at the destination."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from clusterops.checkpoint import layout
from clusterops.checkpoint.remote import Remote
from clusterops.checkpoint.transfer import TransferError, Transfers
from clusterops.errors import UsageError
from clusterops.fsutil import fsync_dir, sync_files


@dataclass
class PullResult:
    step: int
    path: Path
    state: str  # pulled | present
    bytes: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def resolve_step(remote: Remote, step: int | None) -> int:
    if step is not None:
        return step
    latest = remote.latest()
    if latest is None:
        raise TransferError(f"{remote}: no `latest` pointer, so no complete checkpoint to pull")
    return latest.step


def pull(remote: Remote, dest_root: str | Path, transfers: Transfers, step: int | None = None) -> PullResult:
    t0 = time.monotonic()
    n = resolve_step(remote, step)
    data = remote.manifest_bytes(n)
    if data is None:
        raise TransferError(f"{remote}: step {n} has no manifest in S3 (never completed, or pruned)")
    manifest = layout.Manifest.from_bytes(data, f"s3://{remote.bucket}/{remote.manifest_key(n)}")
    root = Path(dest_root)
    if root.is_symlink():
        raise UsageError(f"{root}: the pull destination is a symlink; give the directory it points at")
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    name = manifest.dir_name if layout.parse_step(manifest.dir_name or "") == n else layout.step_dir_name(n)
    target = root / name
    if target.is_symlink() or target.resolve().parent != root:
        raise UsageError(f"{target}: a symlink or outside {root}; refusing to pull into it")

    part = None  # this node's own part of a multi-node checkpoint, replaced by the whole one
    if target.exists():
        if layout.is_committed(target):
            mine = layout.read_manifest(target)
            if mine.by_path() == manifest.by_path() and layout.verify(target).ok:
                return PullResult(n, target, "present", 0, time.monotonic() - t0)
            if _is_part_of(mine, manifest):
                part = target
        if part is None:
            raise UsageError(
                f"{target}: exists and is not a verified copy of step {n} from {remote}; "
                "move it away and pull again"
            )

    _clean_stale(root, name)
    sizes = remote.listed_sizes(n)
    missing = [f.path for f in manifest.files if f.path not in sizes]
    if missing:
        raise TransferError(
            f"{remote}: step {n} is missing {len(missing)} object(s) in S3 (first: {missing[0]}); "
            "nothing was written"
        )
    short = [f.path for f in manifest.files if sizes[f.path] != f.size]
    if short:
        raise TransferError(f"{remote}: step {n}: {short[0]} has another size in S3 than its manifest says")

    tmp = root / f".{name}.pull-{os.getpid()}"
    if tmp.is_symlink():  # our own name (our pid): a leftover of an earlier process, or planted
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        futures = []
        for f in manifest.files:
            dest = tmp / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            key = remote.data_key(n, f.path)
            futures.append(transfers.download(remote.bucket, key, dest, f.size, f.crc32c))
        errors = []
        for fut in futures:
            try:
                fut.result()
            except Exception as e:
                errors.append(str(e))
        if errors:
            raise TransferError(
                f"step {n}: {len(errors)} file(s) failed; first: {errors[0]}; nothing was written"
            )
        # One syncfs for every file pulled (the kernel writes back in large batches), then the manifest.
        sync_files(tmp, [tmp / f.path for f in manifest.files])
        layout.write_manifest(tmp, data)
        for d in {(tmp / f.path).parent for f in manifest.files}:
            fsync_dir(d)
        if part is not None:
            # The part is a subset of what S3 holds whole: set it aside, then the whole copy takes its name.
            aside = root / f".{name}.part-{os.getpid()}"
            os.rename(part, aside)
            fsync_dir(root)
        os.rename(tmp, target)
        fsync_dir(root)
        if part is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PullResult(n, target, "pulled", manifest.total_bytes, time.monotonic() - t0)


def _is_part_of(mine: layout.Manifest, whole: layout.Manifest) -> bool:
    """A local part of a multi-node checkpoint whose every file the whole remote checkpoint holds as is."""
    if mine.complete or mine.step != whole.step:
        return False
    theirs = whole.by_path()
    return all(
        p in theirs and theirs[p].size == f.size and theirs[p].crc32c == f.crc32c
        for p, f in mine.by_path().items()
    )


def _clean_stale(root: Path, name: str) -> None:
    """Remove temp dirs that pulls killed earlier left behind (their pid is gone)."""
    for child in [*root.glob(f".{name}.pull-*"), *root.glob(f".{name}.part-*")]:
        pid = child.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            if child.is_symlink():
                child.unlink()  # never rmtree through a link
            else:
                shutil.rmtree(child, ignore_errors=True)
