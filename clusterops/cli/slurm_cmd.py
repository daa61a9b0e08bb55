from __future__ import annotations

import typer

from clusterops.cli.common import JSON_OPTION, console, get_config, print_json

app = typer.Typer(no_args_is_help=True)


def _client(ctx: typer.Context):
    from clusterops.slurm import SlurmClient

    return SlurmClient.from_config(get_config(ctx))


@app.command("nodes")
def nodes(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Nodes with state, flags, reason, partitions and features."""
    from dataclasses import asdict

    found = _client(ctx).nodes()
    if as_json:
        print_json({"nodes": [asdict(n) | {"usable": n.usable} for n in found]})
        return
    from rich.table import Table

    table = Table("node", "state", "reason", "partitions", "features")
    for n in found:
        table.add_row(n.name, n.label, n.reason, ",".join(n.partitions), ",".join(n.features))
    console().print(table)


@app.command("jobs")
def jobs(
    ctx: typer.Context,
    as_json: bool = JSON_OPTION,
    all_jobs: bool = typer.Option(False, "--all", help="Include finished jobs."),
) -> None:
    """Jobs with state, nodes, reason and restart count (active ones unless --all)."""
    from dataclasses import asdict

    found = [j for j in _client(ctx).jobs() if all_jobs or j.active]
    if as_json:
        print_json({"jobs": [asdict(j) for j in found]})
        return
    from rich.table import Table

    table = Table("job", "name", "state", "nodes", "reason", "restarts")
    for j in found:
        table.add_row(str(j.job_id), j.name, j.state, ",".join(j.nodes), j.reason, str(j.restart_count))
    console().print(table)


@app.command("reservations")
def reservations(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Reservations with their nodes and users."""
    from dataclasses import asdict

    found = _client(ctx).reservations()
    if as_json:
        print_json({"reservations": [asdict(r) for r in found]})
        return
    from rich.table import Table

    table = Table("reservation", "state", "nodes", "users", "flags")
    for r in found:
        table.add_row(r.name, r.state, ",".join(r.nodes), ",".join(r.users), ",".join(r.flags))
    console().print(table)


@app.command("drain")
def drain(ctx: typer.Context, node: str, reason: str = typer.Option(..., "--reason", "-r")) -> None:
    """Drain NODE with a reason (running jobs finish; nothing new starts there)."""
    _client(ctx).drain(node, reason)
    console(stderr=True).print(f"drained {node}: {reason}")


@app.command("resume")
def resume(ctx: typer.Context, node: str) -> None:
    """Return NODE to service."""
    _client(ctx).resume(node)
    console(stderr=True).print(f"resumed {node}")
