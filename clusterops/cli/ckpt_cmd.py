"""`clusterops ckpt`: commit, push, pull, status, prune and sync checkpoints between local disk and S3."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from clusterops.cli.common import JSON_OPTION, get_config, print_json

app = typer.Typer(no_args_is_help=True)

LOCAL_OPTION = typer.Option(
    None, "--local", "-l", help="Local checkpoint root (default: checkpoint.local_root)."
)
REMOTE_OPTION = typer.Option(
    None, "--remote", "-r", help="s3://BUCKET/PREFIX (default: s3.bucket + s3.prefix + checkpoint.s3_prefix)."
)


@contextlib.contextmanager
def _s3_errors():
    """An S3 error that outlived the retries becomes one line naming the operation, not a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    from clusterops.checkpoint.transfer import TransferError

    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        raise TransferError(
            f"S3 {e.operation_name} failed: {err.get('Code', '?')} {err.get('Message', '')}"
        ) from None
    except BotoCoreError as e:
        raise TransferError(f"S3 unreachable or failing: {e}") from None


def _local_root(cfg: Any, local: str | None) -> Path:
    from clusterops.config import node_path

    return node_path(local) if local else node_path(cfg.checkpoint.local_root)


def _remote(cfg: Any, remote: str | None):
    from clusterops import s3
    from clusterops.checkpoint.remote import Remote
    from clusterops.errors import UsageError

    if not remote:
        if not cfg.s3.bucket:
            raise UsageError("no --remote given and s3.bucket is not configured")
        prefix = "/".join(p.strip("/") for p in (cfg.s3.prefix, cfg.checkpoint.s3_prefix) if p.strip("/"))
        remote = f"s3://{cfg.s3.bucket}/{prefix}"
    return Remote(s3.client(cfg.s3), remote)


def _transfers(cfg: Any, client: Any, upload: bool):
    from clusterops.checkpoint.transfer import MiB, Transfers

    return Transfers(
        client,
        concurrency=cfg.s3.upload_concurrency if upload else cfg.s3.max_concurrency,
        part_size=cfg.s3.multipart_chunk_mb * MiB,
        download_chunk=cfg.s3.download_chunk_mb * MiB,
        bandwidth_bps=cfg.s3.bandwidth_mbps * 1e6,
    )


def _node(node: str | None) -> str:
    from clusterops.config import node_name

    return node or node_name()


@app.command("commit")
def commit_cmd(
    ctx: typer.Context,
    step_dir: Path = typer.Argument(
        ..., help="The checkpoint directory (any trainer's: DCP, torchtitan, ...)."
    ),
    step: int = typer.Option(..., "--step", help="Training step the checkpoint was taken at."),
    tokens_seen: int = typer.Option(0, "--tokens-seen", help="Tokens consumed so far (0: unknown)."),
    parts: int = typer.Option(
        0, "--parts", help="Non-DCP multi-node checkpoint: spread over this many nodes."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Write the manifest (files, sizes, CRC32C, step, tokens seen), last: the directory is then committed."""
    from clusterops.checkpoint import layout

    get_config(ctx)
    m = layout.commit(step_dir, step, tokens_seen=tokens_seen, parts=parts or None)
    if json_out:
        print_json(m.to_dict())
        return
    whole = "complete" if m.complete else "one node's part"
    print(f"{step_dir}: step {m.step} committed, {len(m.files)} files, {m.total_bytes} bytes ({whole})")


@app.command("push")
def push_cmd(
    ctx: typer.Context,
    local: str = LOCAL_OPTION,
    remote: str = REMOTE_OPTION,
    step: int = typer.Option(None, "--step", help="Push this step instead of the newest committed."),
    node: str = typer.Option(
        None, "--node", help="This node's name for its part (default: Slurm node name)."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Upload the newest committed checkpoint, verify it in S3, then write its manifest and move `latest`."""
    from clusterops.checkpoint.push import push

    cfg = get_config(ctx)
    rem = _remote(cfg, remote)
    with _s3_errors(), _transfers(cfg, rem.client, upload=True) as tx:
        result = push(_local_root(cfg, local), rem, tx, _node(node), step)
    if json_out:
        print_json(result.__dict__)
    else:
        extra = f" ({result.files_sent} files, {result.bytes_sent / 1e6:.1f} MB, {result.mb_per_s:.0f} MB/s)"
        print(result.message + (extra if result.files_sent else ""))


@app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    which: str = typer.Argument("latest", help="`latest` or a step number."),
    remote: str = REMOTE_OPTION,
    step: int = typer.Option(None, "--step", help="Pull this step (same as giving it as the argument)."),
    dest: str = typer.Option(
        None, "--dest", "-d", help="Root to pull into (default: checkpoint.local_root)."
    ),
    json_out: bool = JSON_OPTION,
    missing_ok: bool = typer.Option(
        False, "--missing-ok", help="Exit 0 when S3 holds no complete checkpoint yet (a job's first start)."
    ),
) -> None:
    """Download a checkpoint into a temp dir, verify every byte, rename it into DEST/step-N.

    DEST may hold `{node}` (this node's name). This node's own part of a multi-node checkpoint is
    replaced by the whole one."""
    from clusterops.checkpoint.pull import pull
    from clusterops.errors import UsageError

    cfg = get_config(ctx)
    if step is None and which != "latest":
        if not which.isdigit():
            raise UsageError(f"{which!r}: give `latest` or a step number")
        step = int(which)
    rem = _remote(cfg, remote)
    if missing_ok and step is None:
        with _s3_errors():
            if rem.latest() is None:
                if json_out:
                    print_json({"step": None, "state": "missing", "detail": "nothing to pull"})
                else:
                    print(f"{rem}: no complete checkpoint yet; nothing to pull")
                return
    with _s3_errors(), _transfers(cfg, rem.client, upload=False) as tx:
        result = pull(rem, _local_root(cfg, dest), tx, step)
    if json_out:
        print_json(result.__dict__)
    elif result.state == "present":
        print(f"{result.path}: step {result.step} already here and verified; nothing to pull")
    else:
        print(
            f"{result.path}: step {result.step} pulled and verified "
            f"({result.bytes / 1e6:.1f} MB, {result.mb_per_s:.0f} MB/s)"
        )


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    local: str = LOCAL_OPTION,
    remote: str = REMOTE_OPTION,
    textfile: str = typer.Option(
        None,
        "--textfile",
        help="Directory for the Prometheus textfile (default: paths.textfile_dir if it exists).",
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Local steps (committed? uploaded? verified?), newest upload age, upload lag. Exit 0/1/2 on lag."""
    from clusterops.checkpoint import status

    cfg = get_config(ctx)
    with _s3_errors():
        st = status.collect(
            _local_root(cfg, local),
            _remote(cfg, remote),
            cfg.checkpoint.lag_warning_s,
            cfg.checkpoint.lag_critical_s,
        )
    _write_textfile(cfg, st, textfile)
    if json_out:
        print_json(st.to_dict())
    else:
        _print_status(st)
    raise typer.Exit(st.exit_code)


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    local: str = LOCAL_OPTION,
    remote: str = REMOTE_OPTION,
    keep: int = typer.Option(
        None, "--keep", help="Newest committed local checkpoints kept (default: checkpoint.keep_local)."
    ),
    remote_keep: int = typer.Option(
        None,
        "--remote-keep",
        help="Also prune S3, keeping this many newest (default: checkpoint.keep_remote; 0: off).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be deleted; delete nothing."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Delete old local checkpoints whose S3 copy is verified; optionally old remote ones (not milestones)."""
    from clusterops.checkpoint import prune
    from clusterops.config import node_path

    cfg = get_config(ctx)
    rem = _remote(cfg, remote)
    root = _local_root(cfg, local)
    keep_n = cfg.checkpoint.keep_local if keep is None else keep
    rkeep = cfg.checkpoint.keep_remote if remote_keep is None else remote_keep
    with _s3_errors():
        actions = prune.prune_local(root, node_path(cfg.checkpoint.local_root), rem, keep_n, dry_run)
        actions += prune.prune_remote(rem, rkeep, cfg.checkpoint.milestone_every, dry_run)
    if json_out:
        print_json([a.__dict__ for a in actions])
        return
    verb = "would delete" if dry_run else "deleted"
    for a in actions:
        print(f"{a.where} step {a.step}: {verb if a.action == 'delete' else 'kept'} ({a.reason})")


@app.command("sync")
def sync_cmd(
    ctx: typer.Context,
    local: str = LOCAL_OPTION,
    remote: str = REMOTE_OPTION,
    node: str = typer.Option(
        None, "--node", help="This node's name for its part (default: Slurm node name)."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Cron / timer entry point: lock, push the newest checkpoint, prune, refresh the status textfile."""
    from clusterops.checkpoint.sync import sync
    from clusterops.config import node_path

    cfg = get_config(ctx)
    rem = _remote(cfg, remote)
    with _s3_errors(), _transfers(cfg, rem.client, upload=True) as tx:
        result = sync(
            local_root=_local_root(cfg, local),
            configured_root=node_path(cfg.checkpoint.local_root),
            remote=rem,
            transfers=tx,
            node=_node(node),
            state_dir=node_path(cfg.paths.state_dir),
            keep_local=cfg.checkpoint.keep_local,
            keep_remote=cfg.checkpoint.keep_remote,
            milestone_every=cfg.checkpoint.milestone_every,
            warn_s=cfg.checkpoint.lag_warning_s,
            crit_s=cfg.checkpoint.lag_critical_s,
        )
    if result.status is not None:
        _write_textfile(cfg, result.status, None)
    if json_out:
        print_json(
            {
                "skipped": result.skipped,
                "message": result.message,
                "push": result.push.__dict__ if result.push else None,
                "pruned": [a.__dict__ for a in result.pruned],
            }
        )
        return
    print(result.message)
    for a in result.pruned:
        if a.action == "delete":
            print(f"{a.where} step {a.step}: deleted ({a.reason})")


def _write_textfile(cfg: Any, st: Any, directory: str | None) -> None:
    from clusterops.checkpoint import status
    from clusterops.config import node_path
    from clusterops.telemetry import write_textfile

    target = Path(directory) if directory else node_path(cfg.paths.textfile_dir)
    if directory is None and not target.is_dir():
        return  # no node_exporter textfile collector on this machine
    write_textfile(target, "clusterops_ckpt", status.metrics(st))


def _print_status(st: Any) -> None:
    print(f"local {st.local_root}  remote {st.remote}  latest {st.remote_latest}")
    for e in st.local:
        flags = ", ".join(
            name
            for name, on in (("committed", e.committed), ("uploaded", e.uploaded), ("verified", e.verified))
            if on
        )
        print(f"  step {e.step:>10}  {e.bytes / 1e6:10.1f} MB  {flags or 'not committed'}")
    age = "never" if st.newest_upload_age_s is None else f"{st.newest_upload_age_s:.0f}s ago"
    print(f"newest upload: {age}; upload lag: {st.upload_lag_s:.0f}s; status: {st.status}")
    for m in st.messages:
        print(f"  {m}")
