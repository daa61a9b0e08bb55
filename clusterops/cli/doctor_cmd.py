from __future__ import annotations

import typer

from clusterops.cli.common import JSON_OPTION, console, get_config, print_json

app = typer.Typer(no_args_is_help=True)


@app.command("throughput")
def throughput(
    ctx: typer.Context,
    job: int = typer.Option(..., "--job", help="The running job to triage."),
    act: bool = typer.Option(
        False, "--act", help="Drain the outlier node so the spare watcher swaps it out."
    ),
    seconds: float = typer.Option(2.0, "--seconds", help="Measuring time per stage on each node."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Triage a slow job: storage, then loader, then model step, then communication; name the outlier.

    Exit code: 0 nothing found, 1 a bottleneck or outlier named, 2 could not run.
    """
    from clusterops.perf.doctor import throughput as run
    from clusterops.slurm import SlurmClient

    cfg = get_config(ctx)
    diag = run(SlurmClient.from_config(cfg), job, act=act, seconds=seconds, cfg=cfg)
    if as_json:
        print_json(diag.as_dict())
    else:
        out = console()
        out.print(f"[bold]job {diag.job_id}[/] on {', '.join(diag.nodes)}")
        for f in diag.findings:
            mark = "[red]BOTTLENECK[/]" if f.bottleneck else "[green]ok[/]"
            out.print(f"  {f.stage:14} {mark}  {f.summary}")
        out.print(
            f"bottleneck: {diag.bottleneck or 'none found'}; outlier: {diag.outlier or 'none'}"
            + (f"; {diag.acted}" if diag.acted else "")
        )
    raise typer.Exit(1 if diag.bottleneck or diag.outlier else 0)


@app.command("probe", hidden=True)
def probe(
    ctx: typer.Context,
    train_config: str = typer.Argument(...),
    data: str = typer.Option("", "--data"),
    seconds: float = typer.Option(2.0, "--seconds"),
) -> None:
    """One node's measurements (run by `doctor throughput` through srun on every node of the job)."""
    import json

    from clusterops.perf.doctor import probe as run

    print(json.dumps(run(get_config(ctx), train_config, data, seconds)), flush=True)


@app.command("allreduce-worker", hidden=True)
def allreduce_worker(nbytes: int = typer.Option(16 << 20, "--bytes")) -> None:
    """One rank of the cross-node all-reduce (run by `doctor throughput` through srun)."""
    import json

    from clusterops.perf.doctor import allreduce_worker as run

    result = run(nbytes)
    if result["rank"] == 0:
        print(json.dumps(result), flush=True)
