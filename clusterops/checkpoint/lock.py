"""One `ckpt sync` at a time per node: flock on a file in the state dir. The kernel drops the lock when
the holder dies, even by kill -9, so a stale lock never blocks the next run."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from clusterops.fsutil import open_nofollow


class Lock:
    """Non-blocking exclusive lock; `acquired` says whether this process holds it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.acquired = False
        self.holder = ""
        self._fd = -1

    def __enter__(self) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never through a symlink
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip()
            return self
        self.acquired = True
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing releases the flock
            self._fd = -1
