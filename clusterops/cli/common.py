"""What every command group shares: loading the config once, and rendering JSON or tables."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import typer

from clusterops import config as config_mod
from clusterops.errors import ClusteropsError

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


def get_config(ctx: typer.Context) -> config_mod.Config:
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    if "config" not in obj:
        obj["config"] = config_mod.load(obj.get("config_path"))
        root.obj = obj
    return obj["config"]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


# CLUSTEROPS_DEBUG=1: an error from bad input keeps its traceback (to find where it came from).
DEBUG_ENV = "CLUSTEROPS_DEBUG"


def input_error(e: BaseException) -> tuple[str, int] | None:
    """The one line (and exit code) for an error that bad input or a bad path can cause, or None for
    anything else: a bug keeps its traceback so that tests and users see it."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return None
    if isinstance(e, ClusteropsError):
        return _first_line(str(e)), e.exit_code
    if isinstance(e, OSError):
        names = [n for n in (e.filename, e.filename2) if n is not None]
        what = e.strerror or str(e) or type(e).__name__
        return _first_line(": ".join([*(str(n) for n in names), what])), 2
    if isinstance(e, RecursionError):
        return "input is nested too deeply", 2
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", 2
    if isinstance(e, UnicodeDecodeError):
        return f"input is not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r})", 2
    if type(e).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer", "awscrt"):
        # S3 said no (missing bucket or key, access denied, no credentials, endpoint down): the
        # operator's setup, not our bug. Their messages carry no credentials.
        return f"S3: {_first_line(str(e)) or type(e).__name__}", 2
    if isinstance(e, OverflowError):  # int() of an infinite number read from a file
        return f"number out of range: {_first_line(str(e))}", 2
    if isinstance(e, ValueError):
        # Raised by a parser below us (int(), float(), a format's own check): say where, so that one
        # that should have been our own error is found, and how to see the whole traceback.
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
        return f"{_first_line(str(e)) or 'bad value'} (ValueError at {where}; {DEBUG_ENV}=1 for more)", 2
    return None


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split("\n")[0].split()) if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
