from __future__ import annotations

import sys
import time

import typer

from clusterops.cli.common import JSON_OPTION, console, get_config, print_json

app = typer.Typer(no_args_is_help=True)


def manager(ctx: typer.Context):
    from clusterops import config as config_mod
    from clusterops.health import ownership
    from clusterops.slurm import SlurmClient
    from clusterops.spare.manager import SpareManager
    from clusterops.spare.warm import remote_url

    cfg = get_config(ctx)
    state_dir = config_mod.node_path(cfg.paths.state_dir)
    remote = remote_url(cfg)

    def remote_latest() -> int | None:
        if not remote:
            return None
        from clusterops import s3
        from clusterops.checkpoint.remote import Remote

        latest = Remote(s3.client(cfg.s3), remote).latest()
        return latest.step if latest else None

    return SpareManager(
        SlurmClient.from_config(cfg),
        reservation=cfg.spare.reservation,
        spare_reservation=cfg.spare.spare_reservation,
        state_dir=state_dir,
        event_log=config_mod.node_path(cfg.paths.log_dir) / "events.ndjson",
        textfile_dir=config_mod.node_path(cfg.paths.textfile_dir),
        min_spares=cfg.spare.min_spares,
        job_name=cfg.spare.job_name,
        warm_timeout_s=cfg.spare.warm_timeout_s,
        remote_latest=remote_latest,
        drain_key=ownership.key_path(cfg),
    )


@app.command("status")
def status(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """The protected reservation and its jobs, the spares and how warm each one is."""
    info = manager(ctx).status()
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    out = console()
    res = info["reservation"]
    out.print(f"[bold]training reservation[/] {res['name']}: {', '.join(res['nodes']) or '(none)'}")
    for j in info["jobs"]:
        out.print(
            f"  job {j['job_id']} {j['name']} {j['state']} on {','.join(j['nodes']) or '-'} "
            f"(restarts {j['restart_count']})"
        )
    table = Table("spare", "slurm", "warmth", "data ready", "ckpt step", "health", "warm since", "detail")
    for s in info["spares"]:
        since = time.strftime("%H:%M:%S", time.localtime(s["warm_since"])) if s.get("warm_since") else "-"
        table.add_row(
            s["node"],
            s["slurm_state"],
            s["state"] + (f" (job {s['warm_job']})" if s["warm_job"] else ""),
            "yes" if s["datasets_ready"] else "no",
            str(s["ckpt_step"] if s["ckpt_step"] is not None else "-"),
            str(s["health"] if s["health"] is not None else "-"),
            since,
            s.get("detail", ""),
        )
    out.print(table)
    out.print(f"failovers: {info['failovers']}, last detection-to-running: {info['last_failover_seconds']} s")


@app.command("add")
def add(ctx: typer.Context, node: str, no_warm: bool = typer.Option(False, "--no-warm")) -> None:
    """Make NODE a spare: move it into the spare reservation and start warming it."""
    manager(ctx).add(node, warm=not no_warm)
    console(stderr=True).print(f"{node} is a spare" + ("" if no_warm else "; warming"))


@app.command("remove")
def remove(ctx: typer.Context, node: str) -> None:
    """Stop keeping NODE as a spare (it returns to the general pool)."""
    manager(ctx).remove(node)
    console(stderr=True).print(f"{node} is no longer a spare")


@app.command("replace")
def replace(
    ctx: typer.Context, node: str, reason: str = typer.Option("operator replace", "--reason")
) -> None:
    """Swap NODE out of the training reservation for the warmest spare (e.g. for maintenance)."""
    spare = manager(ctx).replace(node, reason)
    console(stderr=True).print(
        f"{node} drained; " + (f"{spare} swapped in" if spare else "no spare available")
    )
    if spare is None:
        raise typer.Exit(1)


@app.command("warm")
def warm(ctx: typer.Context, node: str) -> None:
    """Start (again) the warm job on spare NODE."""
    job_id = manager(ctx).warm(node)
    console(stderr=True).print(f"warm job {job_id} submitted on {node}")


@app.command("watch")
def watch(
    ctx: typer.Context, once: bool = typer.Option(False, "--once", help="One pass, then exit.")
) -> None:
    """Follow Slurm; on a failed training node: drain it, swap in the warmest spare, requeue, re-warm.

    Survives Slurm: an unanswered, unreadable or inconsistent read makes the tick do nothing; it is an
    alert event and a retry with capped exponential backoff. Only Ctrl-C / SIGTERM stop the loop."""
    mgr = manager(ctx)
    cfg = get_config(ctx)
    if once:
        mgr.tick()
        return
    print(
        f"spare watch: reservation {mgr.reservation}, spares in {mgr.spare_reservation}, "
        f"events to {mgr.event_log}",
        file=sys.stderr,
        flush=True,
    )
    from clusterops.errors import ClusteropsError

    def say(e: BaseException) -> None:
        # One line per failed tick; the event log has the alert (and, for a bug, the traceback).
        what = str(e) if isinstance(e, ClusteropsError) else f"unexpected {type(e).__name__}: {e}"
        print(f"spare watch: {what}; retrying with backoff", file=sys.stderr, flush=True)

    mgr.watch(poll_s=cfg.spare.poll_s, on_error=say)


@app.command("warm-here")
def warm_here(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Run on a spare (the warm job does): stage, pull the newest checkpoint, health check, report."""
    from dataclasses import asdict

    from clusterops import config as config_mod
    from clusterops.slurm import SlurmClient, nodeinfo
    from clusterops.spare.warm import warm_here as run

    cfg = get_config(ctx)
    slurm = SlurmClient.from_config(cfg)
    node = config_mod.node_name()
    warmth, steps = run(cfg, lambda w: nodeinfo.update(slurm, node, "warmth", w.to_record()))
    for s in steps:
        print(
            f"warm {node}: {s.name}: {'ok' if s.ok else 'FAILED'} in {s.seconds:.1f}s: {s.detail}", flush=True
        )
    if as_json:
        print_json({"node": node, "warmth": asdict(warmth), "steps": [asdict(s) for s in steps]})
    raise typer.Exit(0 if warmth.state == "warm" else 2)
