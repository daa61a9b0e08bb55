"""`clusterops stage`: dataset manifests, verified copies onto local NVMe, status, and the daemon."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from clusterops.cli.common import JSON_OPTION, get_config, print_json

app = typer.Typer(no_args_is_help=True)


@contextmanager
def _progress(total: int, label: str, enabled: bool = True):
    """A rich bar on a terminal; nothing otherwise (the summary line says what happened)."""
    if not enabled or not sys.stderr.isatty() or total <= 0:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _s3client(ctx: typer.Context):
    from clusterops import s3

    return s3.client(get_config(ctx).s3)


@app.command("manifest")
def manifest_cmd(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="A directory or an s3://bucket/prefix."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the manifest JSON."),
    name: str = typer.Option("", "--name", help="Dataset name (default: the source's last component)."),
) -> None:
    """Checksum every file of SOURCE into a manifest (path, size, CRC32C, and a fingerprint of the set)."""
    from clusterops.staging import manifest as mf

    cfg = get_config(ctx)
    if source.startswith("s3://"):
        m = mf.build_from_s3(source, _s3client(ctx), name=name, workers=cfg.staging.max_workers)
    else:
        total = sum(size for _, _, size in mf.walk_dir(source))
        with _progress(total, "checksumming") as tick:
            m = mf.build_from_dir(source, name=name, progress=tick, workers=cfg.staging.max_workers)
    m.save(output)
    print(f"{output}: {len(m.files)} files, {m.total_bytes} bytes, fingerprint {m.fingerprint[:16]}")


def _load_or_build(ctx: typer.Context, what: str, source: str | None):
    from clusterops.staging import manifest as mf

    if what.endswith(".json") and not Path(what).is_dir():
        m = mf.load(what)
        return m, source or m.source
    cfg = get_config(ctx)
    if what.startswith("s3://"):
        return mf.build_from_s3(what, _s3client(ctx), workers=cfg.staging.max_workers), source or what
    return mf.build_from_dir(what, workers=cfg.staging.max_workers), source or what


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    manifest: str = typer.Argument(..., help="A manifest .json (or a directory / s3:// prefix)."),
    dest: Path = typer.Option(None, "--dest", help="Target directory (default LOCAL_ROOT/datasets/NAME)."),
    source: str = typer.Option(None, "--source", help="Read the bytes from here instead."),
    workers: int = typer.Option(None, "--workers", help="Parallel copies (default staging.max_workers)."),
    bandwidth: float = typer.Option(None, "--bandwidth-mbps", help="Cap in MB/s across all copies; 0: none."),
    no_fsync: bool = typer.Option(False, "--no-fsync", help="Skip fsync (benchmarks only)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Copy a dataset to local disk, verifying every file; READY only when all verified. Resumable."""
    from clusterops import config as config_mod
    from clusterops.staging import daemon, engine, state

    cfg = get_config(ctx)
    m, location = _load_or_build(ctx, manifest, source)
    if not location:
        raise engine.StageError(f"{manifest}: the manifest names no source; give --source")
    root = None
    if dest is None:
        # The name comes from the manifest (checked there) or the source's last component: either way
        # the directory must be a plain name under the datasets root.
        name = m.name or Path(location.rstrip("/")).name
        root = state.datasets_root(config_mod.node_path(cfg.paths.local_root))
        dest = state.dataset_dir(root, name)
    opts = daemon.options_from(cfg)
    if workers:
        opts.workers = workers
    if bandwidth is not None:
        opts.bandwidth_bytes_s = bandwidth * 1e6
    opts.fsync = not no_fsync
    src = engine.source_for(location, cfg.s3)
    stager = engine.Stager(m, src, dest, opts, root=root)
    with _progress(m.total_bytes, f"staging {m.name or dest.name}", not json_out) as tick:
        stager.progress = tick
        result = stager.run()
    if json_out:
        print_json(result.to_dict())
    else:
        verdict = "READY" if result.ready else "NOT READY"
        print(
            f"{dest}: {verdict}: {result.files_total} files, {result.files_copied} copied,"
            f" {result.files_skipped} already verified, {result.bytes_copied / 1e9:.2f} GB"
            f" in {result.seconds:.1f}s ({result.gbps:.2f} GB/s)"
        )
    for f in result.failed:
        print(f"clusterops: stage: {f['path']}: {f['error']}", file=sys.stderr)
    if not result.ready:
        raise typer.Exit(1)


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    dest: list[Path] = typer.Option(None, "--dest", help="A staged directory (repeatable)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Per-dataset state: files and bytes verified, GB/s, phase, READY. Exit 1 if any is not READY."""
    from clusterops import config as config_mod
    from clusterops.staging import state

    cfg = get_config(ctx)
    node = config_mod.node_name()
    dests = list(dest or state.list_datasets(config_mod.node_path(cfg.paths.local_root)))
    rows = [state.status(d) for d in dests]
    if json_out:
        print_json({"node": node, "datasets": rows})
    else:
        from rich.table import Table

        from clusterops.cli.common import console

        table = Table("dataset", "ready", "phase", "files", "GB", "GB/s", "dest", "note")
        for r in rows:
            table.add_row(
                r["name"],
                "yes" if r["ready"] else "no",
                r["phase"],
                f"{r['files_verified']}/{r['files_total']}",
                f"{r['bytes_verified'] / 1e9:.2f}/{r['bytes_total'] / 1e9:.2f}",
                f"{r['gbps']:.2f}",
                r["dest"],
                "; ".join(f"{f['path']}: {f['error']}" for f in r["failed"][:3]) or r["reason"],
            )
        console().print(table)
    if any(not r["ready"] for r in rows):
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    dest: Path = typer.Argument(..., help="A staged directory."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Re-read every file of a staged dataset; on any mismatch READY is removed. Exit 1 if not READY."""
    from clusterops.staging import engine

    cfg = get_config(ctx)
    result = engine.verify(dest, workers=cfg.staging.max_workers)
    if json_out:
        print_json(result.to_dict())
    else:
        print(f"{dest}: {'READY' if result.ready else 'NOT READY'}: {result.files_total} files checked")
    for f in result.failed:
        print(f"clusterops: stage: {f['path']}: {f['error']}", file=sys.stderr)
    if not result.ready:
        raise typer.Exit(1)


@app.command("evict")
def evict_cmd(dest: Path = typer.Argument(..., help="A staged directory.")) -> None:
    """Remove a staged dataset: READY first, then the data."""
    from clusterops.staging import engine

    freed = engine.evict(dest)
    print(f"{dest}: evicted ({freed / 1e9:.2f} GB freed)")


@app.command("daemon")
def daemon_cmd(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="One convergence round, then exit (1 if any not READY)."),
) -> None:
    """Converge this node to [staging] datasets, forever (systemd: clusterops-stage.service)."""
    import signal
    import threading

    from clusterops.staging import daemon

    cfg = get_config(ctx)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def log(msg: str) -> None:
        print(msg, flush=True)

    not_ready = daemon.run(cfg, once=once, stop=stop, log=log)
    if once and not_ready:
        raise typer.Exit(1)


@app.command("gate")
def gate_cmd(ctx: typer.Context) -> None:
    """The prolog's check by hand: the datasets SLURM_JOB_ID names must be READY here."""
    from clusterops.staging import gate

    ok, msg = gate.check_job_datasets(get_config(ctx), os.environ)
    print(msg)
    if not ok:
        raise typer.Exit(1)
