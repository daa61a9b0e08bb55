"""`clusterops health`: run the checks by hand, record a node fixture, undrain what the checks drained."""

from __future__ import annotations

import sys

import typer

from clusterops.cli.common import JSON_OPTION, console, get_config, print_json

app = typer.Typer(no_args_is_help=True)

ONLY_OPTION = typer.Option(
    None, "--only", help="Run only these checks (gpu,xid,efa,storage,system); repeatable."
)
PROFILE_OPTION = typer.Option(
    None, "--profile", help="Instance profile name or .toml path (default: config)."
)


@app.command("check")
def check(
    ctx: typer.Context,
    as_json: bool = JSON_OPTION,
    only: list[str] = ONLY_OPTION,
    profile: str = PROFILE_OPTION,
    fixture: str = typer.Option(None, "--fixture", help="Replay this node fixture instead of the hardware."),
    node: str = typer.Option(None, "--node", help="Check as this node (its {node} paths and fixture)."),
) -> None:
    """Run the health checks here and print the verdicts; the exit code is the worst verdict (0-3)."""
    from clusterops.health import service

    report, _ = service.evaluate(
        get_config(ctx), hook="check", node=node, only=only, profile=profile, fixture=fixture
    )
    if as_json:
        print_json(report.to_dict())
    else:
        from clusterops.health.render import table

        console().print(table(report))
    raise typer.Exit(int(report.verdict))


@app.command("record")
def record(
    ctx: typer.Context,
    out: str = typer.Argument(..., help="Where to write the fixture (JSON)."),
    profile: str = PROFILE_OPTION,
) -> None:
    """Run every check on this machine and write everything they read (NVML answers, EFA sysfs, mdstat,
    mounts, kernel log, probes, state) as a node fixture that `health check --fixture` replays."""
    from clusterops.fsutil import atomic_write_json
    from clusterops.health import service

    cfg = get_config(ctx)
    report, recording = service.evaluate(cfg, hook="record", profile=profile, record=True)
    atomic_write_json(out, service.fixture_from_recording(recording, report))
    console(stderr=True).print(f"recorded {out}: verdict {report.verdict.label} on {report.node}")


@app.command("undrain")
def undrain(
    ctx: typer.Context,
    nodes: list[str] = typer.Argument(None, help="Nodes to consider (default: every node drained by us)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be resumed; resume nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Resume nodes that clusterops itself drained (their reason carries its valid ownership tag) and
    that pass the checks now. A node drained by anyone else is left alone, whatever its reason says. Each
    node is checked here, as that node: run it on the node itself, or where node fixtures are configured
    (the sandbox)."""
    from clusterops.health import undrain as undrain_mod

    cfg = get_config(ctx)
    results = undrain_mod.undrain(cfg, nodes or None, dry_run=dry_run)
    if as_json:
        print_json({"nodes": [r.__dict__ for r in results]})
    else:
        from rich.table import Table

        t = Table("node", "action", "why")
        for r in results:
            t.add_row(r.node, r.action, r.why)
        console().print(t)
    if any(r.action == "error" for r in results):
        sys.exit(1)


@app.command("profiles")
def profiles(as_json: bool = JSON_OPTION) -> None:
    """The instance profiles shipped with clusterops."""
    from clusterops.health import profile as profile_mod

    names = profile_mod.available()
    if as_json:
        print_json({"profiles": names})
    else:
        for n in names:
            print(n)
