"""Reading a small file out of a checkpoint directory someone else may have written into."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from clusterops.errors import UsageError


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of `path` only if it is a regular file of at most `limit` bytes. Never follows a symlink
    at its name and never blocks on a FIFO: those, devices and directories are a UsageError, as is a file
    too large. FileNotFoundError passes through."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        fault = "a symlink" if p.is_symlink() else e.strerror
        raise UsageError(f"{p}: cannot be read ({fault}); a checkpoint holds plain files only") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{p}: not a regular file; a checkpoint holds plain files only")
        if st.st_size > limit:
            raise UsageError(f"{p}: {st.st_size} bytes, more than the {limit} a {p.name} may hold")
        os.set_blocking(fd, True)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{p}: more than the {limit} bytes a {p.name} may hold")
    return data
