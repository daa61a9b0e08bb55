"""`clusterops demo`: the README's main job, end to end on the sandbox."""

from __future__ import annotations

import sys
import time

import typer


def demo(
    root: str = typer.Option("/var/tmp/clusterops-demo", "--root", help="Where the demo sandbox lives."),
    steps: int = typer.Option(240, "--steps", help="Training steps of the demo job."),
    keep: bool = typer.Option(False, "--keep", help="Leave the sandbox up afterwards (for poking around)."),
) -> None:
    """Stage data, warm a spare, train on 2 nodes, push checkpoints to S3, crash a node, watch the spare
    take over and the job resume from its checkpoint."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from clusterops.demo import FAILURE_FILE, Demo

    out = Console()
    started = time.time()

    def say(msg: str) -> None:
        out.print(f"[dim]{time.time() - started:6.1f}s[/] {msg}")
        sys.stdout.flush()

    try:
        result = Demo(Path(root), say, steps=steps, keep=keep).run()
    except Exception:
        if (Path(root) / FAILURE_FILE).exists():
            say(f"demo: the job's state and logs at the failure are in {Path(root) / FAILURE_FILE}")
        raise
    t0 = result.timeline.marks[0][1] if result.timeline.marks else started
    table = Table("t (s)", "event", title="failover timeline")
    for what, at in result.timeline.marks:
        table.add_row(f"{at - t0:6.1f}", what)
    out.print(table)
    lost = None
    if result.last_step_before_failure is not None and result.resumed_from is not None:
        lost = max(0, result.last_step_before_failure - result.resumed_from)
    out.print(
        f"job {result.job_id}: resumed from step {result.resumed_from} on the spare; "
        f"steps redone after the failure: {lost}"
    )
    out.print(f"detection to running again: {result.failover_seconds} s")
    out.print(f"loss: first {result.first_loss}, final {result.final_loss}")
    out.print(
        f"checkpoints: {result.remote} (S3); local: "
        + "; ".join(f"{n}: {', '.join(s) or '-'}" for n, s in result.local_checkpoints.items())
    )
    if not result.resumed_from:
        raise typer.Exit(1)
    out.print(
        f"[bold green]demo passed[/]: training resumed from step {result.resumed_from} on the spare "
        f"after {result.failover_seconds} s, in {time.time() - started:.0f} s overall"
    )
