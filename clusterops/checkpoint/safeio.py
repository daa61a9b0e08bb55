"""Reading a small file out of a checkpoint directory someone else may have written into."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from clusterops.errors import UsageError


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of `path` if it is a regular file: a symlink at its name, a FIFO (which would
    block the reader forever), a device or a directory is a UsageError."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        fault = "a symlink" if p.is_symlink() else e.strerror
        raise UsageError(f"{p}: cannot be read ({fault}); a checkpoint holds plain files only") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{p}: not a regular file; a checkpoint holds plain files only")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of `path` only if it is a regular file of at most `limit` bytes. Never follows a symlink
    at its name and never blocks on a FIFO: those, devices and directories are a UsageError, as is a file
    too large. FileNotFoundError passes through."""
    p = Path(path)
    with os.fdopen(open_regular(p), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise UsageError(f"{p}: {size} bytes, more than the {limit} a {p.name} may hold")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{p}: more than the {limit} bytes a {p.name} may hold")
    return data
