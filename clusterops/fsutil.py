"""Crash-safe file writes: temp name in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import errno
import functools
import json
import mmap
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from clusterops.errors import UnsafePathError


def open_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """Open a file that root writes, locks or reads back (state, lock, log) without following a symlink
    at its name, without blocking on a FIFO, and only if it is a regular file with a single link: a user
    who can write to the directory must not point root at another file. Returns the descriptor."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(path, "is a symlink") from None
        if e.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise UnsafePathError(path, "is not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(path, "is not a regular file")
        if st.st_nlink > 1:
            raise UnsafePathError(path, f"has {st.st_nlink} hard links")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def refuse_symlink(path: str | os.PathLike[str]) -> None:
    """Raise UnsafePathError where `path` exists as a symlink."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise UnsafePathError(path, "is a symlink")
    except FileNotFoundError:
        pass


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


DIRECT_ALIGN = 4096  # O_DIRECT's unit: offset, length and buffer address, on every disk we target


def aligned_buffer(size: int) -> mmap.mmap:
    """`size` bytes of page-aligned memory: a buffer O_DIRECT accepts, which a bytearray is not."""
    return mmap.mmap(-1, size)


class DirectWriter:
    """Positional writes into a file being created that bypass the page cache (O_DIRECT) where a piece
    allows it, through a second descriptor of the same file.

    A buffered write copies every byte into the page cache, and for a download that copy is the largest
    CPU cost left (perf: ~40 % of a staging run's cycles in copy_folio_from_iter_atomic); with O_DIRECT
    the device reads the pieces from our buffer instead. Pieces must come from `aligned_buffer` memory.
    A piece whose offset or length is not a multiple of DIRECT_ALIGN (a file's tail, a resume at an
    odd byte), and every piece on a filesystem without O_DIRECT, goes through `fd`, the caller's
    ordinary descriptor. Durability is unchanged: the caller still fsyncs (or syncfs) before publishing.
    """

    def __init__(self, fd: int, path: str | os.PathLike[str]):
        self.fd = fd
        try:
            self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:  # EINVAL: this filesystem has no O_DIRECT
            self.direct = -1
        # Threads may share a writer: the O_DIRECT descriptor closes only in close().
        self.use_direct = self.direct >= 0

    def pwrite(self, view: memoryview, offset: int) -> None:
        while view:
            direct = self.use_direct and offset % DIRECT_ALIGN == 0 and len(view) % DIRECT_ALIGN == 0
            try:
                n = os.pwrite(self.direct if direct else self.fd, view, offset)
            except OSError as e:
                if not direct or e.errno != errno.EINVAL:
                    raise
                self.use_direct = False  # this file or buffer is not O_DIRECT-able after all
                continue
            view = view[n:]
            offset += n

    def close(self) -> None:
        """Closes the O_DIRECT descriptor only (once no thread writes): `fd` stays the caller's."""
        if self.direct >= 0:
            os.close(self.direct)
            self.direct = -1
        self.use_direct = False


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write `data` so that readers see either the old file or the whole new one, even after kill -9.
    The temp file is private (mkstemp: O_EXCL, mode 0600, in the target's directory) until renamed; a
    target that is a symlink is refused, and rename would replace the link, never write through it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    refuse_symlink(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # by descriptor: the name could be swapped for a link meanwhile
            os.fsync(f.fileno())
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
    """A JSON file we wrote (state): a symlink, FIFO or hard link in its place is refused."""
    with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as f:
        return json.load(f)
