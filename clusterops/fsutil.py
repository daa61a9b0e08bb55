"""Crash-safe file writes: temp name in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _libc_fn(name: str, *argtypes: str):
    """One libc function through ctypes, or None where this libc lacks it. Resolved on first use and
    cached, so importing fsutil (the hook path writes its state through it) loads neither ctypes nor
    libc. argtypes are ctypes type names, e.g. "c_int"."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = getattr(libc, name)
        fn.argtypes = [getattr(ctypes, t) for t in argtypes]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_SFR_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writeback of the dirty pages, do not wait


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a finished file's dirty pages now, without waiting, so a later
    sync_files finds little left. Durability still comes from that sync."""
    sync_file_range = _libc_fn("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")
    if sync_file_range is not None:
        sync_file_range(fd, 0, 0, _SFR_WRITE)


def sync_files(directory: str | os.PathLike[str], files: list[Path]) -> None:
    """Put every byte of `files` (all on `directory`'s filesystem) on disk: one syncfs, which lets the
    kernel write back in large batches, or an fsync per file where syncfs is missing. A group commit's
    first step: the renames that publish the files come after it."""
    syncfs = _libc_fn("syncfs", "c_int")  # flushes one filesystem, not every mounted one as sync(2) does
    if syncfs is not None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write `data` so that readers see either the old file or the whole new one, even after kill -9."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode(), mode)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, "rb") as f:
        return json.load(f)
