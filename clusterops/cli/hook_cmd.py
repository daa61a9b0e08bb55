"""Entry points Slurm runs on every node: Prolog, Epilog and HealthCheckProgram.

Must stay light: no torch, no boto3, a bounded run time.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("prolog")
def prolog() -> None:
    """Slurm Prolog: exit non-zero to refuse the job on this node (Slurm drains it and requeues)."""
    raise typer.Exit(0)


@app.command("epilog")
def epilog() -> None:
    """Slurm Epilog: runs after every job on each of its nodes."""
    raise typer.Exit(0)


@app.command("healthcheck")
def healthcheck() -> None:
    """Slurm HealthCheckProgram: runs every HealthCheckInterval and at slurmd start."""
    raise typer.Exit(0)
