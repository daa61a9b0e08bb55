"""Errors an operator reads: each names the input and the fault, and the CLI prints it as one line."""

from __future__ import annotations


class ClusteropsError(Exception):
    """Base for every error the CLI turns into one clear line and a non-zero exit."""

    exit_code = 2


class ConfigError(ClusteropsError):
    """The configuration is missing, unreadable, or has an unknown key or a wrong type."""


class UsageError(ClusteropsError):
    """Bad input on the command line or in a file the user handed us."""
