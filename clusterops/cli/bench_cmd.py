from __future__ import annotations

import typer

from clusterops.cli.common import JSON_OPTION, console, get_config, print_json

app = typer.Typer(no_args_is_help=True)


@app.command("node")
def node(
    ctx: typer.Context,
    as_json: bool = JSON_OPTION,
    profile: str = typer.Option(None, "--profile", help="Instance profile (default cluster.profile)."),
    size_mib: int = typer.Option(512, "--size-mib", help="fio file size per job."),
    seconds: float = typer.Option(5.0, "--seconds", help="fio run time per figure."),
    only: list[str] = typer.Option(None, "--only", help="Measure only these figures (repeatable)."),
) -> None:
    """Measure this node (GPUs, CPU, memory, NVMe, collectives) against its instance profile.

    Exit code: 0 all as expected, 1 something below its warning ratio, 2 below its failure ratio,
    3 a figure the profile expects could not be measured.
    """
    from clusterops import config as config_mod
    from clusterops.perf.node import PROFILES, run_node_bench

    cfg = get_config(ctx)
    profile = profile or cfg.cluster.profile
    if profile not in PROFILES:
        from clusterops.errors import UsageError

        raise UsageError(f"--profile {profile!r}: unknown (known: {', '.join(PROFILES)})")
    netfs = config_mod.node_path(cfg.staging.source_root) if cfg.staging.source_root else None
    report = run_node_bench(
        profile,
        config_mod.node_path(cfg.paths.local_root),
        netfs,
        size_mib,
        seconds,
        only or None,
        node=config_mod.node_name(),
    )
    if as_json:
        print_json(report.as_dict())
    else:
        from rich.table import Table

        names = {0: "[green]ok[/]", 1: "[yellow]warning[/]", 2: "[red]critical[/]", 3: "[dim]unknown[/]"}
        table = Table(
            "figure",
            "measured",
            "expected",
            "unit",
            "ratio",
            "verdict",
            "detail",
            title=f"{report.node} against {profile}",
        )
        for f in report.figures:
            table.add_row(
                f.name,
                "unavailable" if f.measured is None else f"{f.measured:g}",
                "-" if f.expected is None else f"{f.expected:g}",
                f.unit,
                "-" if f.ratio is None else f"{f.ratio:.2f}",
                names[f.verdict],
                f.detail,
            )
        console().print(table)
    raise typer.Exit(report.verdict)


@app.command("nccl")
def nccl(
    ctx: typer.Context,
    nodes: int = typer.Option(2, "--nodes", "-N", help="Nodes in the all-reduce (one rank each)."),
    nodelist: str = typer.Option("", "--nodelist", "-w", help="Exactly these nodes (Slurm host list)."),
    reservation: str = typer.Option("", "--reservation"),
    partition: str = typer.Option("", "--partition"),
    size_mib: int = typer.Option(64, "--size-mib", help="All-reduce message size."),
    as_json: bool = JSON_OPTION,
) -> None:
    """All-reduce bus bandwidth across nodes, as a Slurm job (NCCL over EFA on GPUs, gloo on CPUs).

    Exit code: 0 at or above 90% of the profile's figure, 1 below, 2 below 75%, 3 no figure to compare.
    """
    from clusterops import config as config_mod
    from clusterops.perf.collective import across_nodes
    from clusterops.perf.node import PROFILES, judge
    from clusterops.slurm import SlurmClient

    cfg = get_config(ctx)
    result = across_nodes(
        SlurmClient.from_config(cfg),
        nodes,
        size_mib << 20,
        config_mod.node_path(cfg.paths.state_dir),
        nodelist=nodelist,
        reservation=reservation,
        partition=partition,
    )
    expect = PROFILES.get(cfg.cluster.profile, {}).get("internode_allreduce_busbw_gbps")
    fig = judge("internode_allreduce_busbw_gbps", result.get("busbw_gbps"), expect, result.get("detail", ""))
    from dataclasses import asdict

    report = {**result, "figure": asdict(fig), "verdict": fig.verdict}
    if as_json:
        print_json(report)
    else:
        exp = f"{fig.expected:g} GB/s expected, ratio {fig.ratio}" if fig.expected else "no profile figure"
        console().print(
            f"job {result['job_id']} on {','.join(result['nodes'])}: bus bandwidth "
            f"{result['busbw_gbps']} GB/s ({exp}); {result['detail']}"
        )
    raise typer.Exit(fig.verdict if fig.expected else 3)
