"""Errors an operator reads: each names the input and the fault, and the CLI prints it as one line."""

from __future__ import annotations

import errno


class ClusteropsError(Exception):
    """Base for every error the CLI turns into one clear line and a non-zero exit."""

    exit_code = 2


class ConfigError(ClusteropsError):
    """The configuration is missing, unreadable, or has an unknown key or a wrong type."""


class UsageError(ClusteropsError):
    """Bad input on the command line or in a file the user handed us."""


class UnsafePathError(ClusteropsError, OSError):
    """A file root would write, lock or read is a symlink, a hard link or not a regular file. It is also
    an OSError, so code that treats a failed log or state write as an I/O error keeps doing so."""

    def __init__(self, path: object, fault: str) -> None:
        OSError.__init__(self, errno.ELOOP, fault, str(path))
        self.path = str(path)
        self.fault = fault

    def __str__(self) -> str:
        return f"{self.path}: {self.fault}; refusing to use it"
