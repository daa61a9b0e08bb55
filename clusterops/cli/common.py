"""What every command group shares: loading the config once, and rendering JSON or tables."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from clusterops import config as config_mod

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
