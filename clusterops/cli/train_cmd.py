"""`clusterops train`: run the compact GQA trainer here or under srun, submit it to Slurm, export to HF.

torch is imported inside the commands only: the CLI (and the Slurm hooks that share it) start fast.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

from clusterops.cli.common import JSON_OPTION, get_config, print_json
from clusterops.errors import ConfigError, UsageError

app = typer.Typer(no_args_is_help=True)

CKPT_OPTION = typer.Option(
    None,
    "--checkpoint-dir",
    "-o",
    help="Checkpoint root (step-N dirs); resumes from its newest committed one.",
)


def _load(config: str):
    from clusterops.train import config as train_config

    return train_config.load(config)


def _say(line: str) -> None:
    print(line, flush=True)


@app.command("run")
def run(
    config: str = typer.Argument(..., help="Trainer config TOML (e.g. configs/tiny.toml)."),
    checkpoint_dir: str = CKPT_OPTION,
    steps: int = typer.Option(0, "--steps", help="Override train.steps."),
    stop_after: int = typer.Option(0, "--stop-after", help="Checkpoint and stop after this many steps."),
    data: str = typer.Option("", "--data", help="Override data.path (a staged root of *.ds shards)."),
) -> None:
    """Train (single process, torchrun or srun: ranks come from the environment); resume if possible.

    Prints `step=N loss=X ...` lines. SIGUSR1 (Slurm's --signal) checkpoints, requeues the job and
    stops; SIGTERM checkpoints and stops.
    """
    cfg = _load(config)
    if steps:
        cfg.train.steps = steps
    if data:
        cfg.data.path = data
    root = checkpoint_dir or cfg.checkpoint.dir or None
    from clusterops.train import loop, parallel

    try:
        d = parallel.init_distributed(cfg.train.tp)
    except ValueError as e:
        raise UsageError(f"{config}: {e}") from None
    try:
        result = loop.run(
            cfg, root, log=_say, stop_after=stop_after or None, d=d, job=os.environ.get("SLURM_JOB_ID", "")
        )
        if result.stopped_by == "SIGUSR1" and d.rank == 0 and os.environ.get("SLURM_JOB_ID"):
            _requeue(int(os.environ["SLURM_JOB_ID"]))
    finally:
        parallel.shutdown()


def _requeue(job_id: int) -> None:
    """Requeue our own job after its checkpoint is committed; the new run resumes from it."""
    from clusterops.slurm import SlurmClient

    _say(f"requeueing job {job_id}")
    SlurmClient(os.environ.get("SLURM_CONF", ""), backend="command").requeue(job_id, start_now=False)


def sbatch_script(
    cfg,
    config_path: str,
    checkpoint_dir: str,
    python: str = sys.executable,
    output: str = "",
    data: str = "",
    steps: int = 0,
    remote: str = "",
    reservation: str = "",
) -> str:
    """The batch script: one srun step of the trainer, requeueable, signalled before its time limit.

    With `remote`, every (re)start first pulls the newest whole checkpoint from S3 onto each node, so a
    node that joined after a failure, or holds only its own part, resumes from the same step as the rest.
    """
    s = cfg.slurm
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={s.job_name}",
        f"#SBATCH --nodes={s.nodes}",
        f"#SBATCH --ntasks-per-node={s.ntasks_per_node}",
        "#SBATCH --requeue",
        f"#SBATCH --signal=USR1@{s.signal_lead_s}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={output or checkpoint_dir + '/slurm-%j.out'}",
    ]
    if s.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={s.cpus_per_task}")
    if s.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={s.gpus_per_node}")
    if s.time:
        lines.append(f"#SBATCH --time={s.time}")
    if s.partition:
        lines.append(f"#SBATCH --partition={s.partition}")
    if reservation:
        lines.append(f"#SBATCH --reservation={reservation}")
    lines += [f"#SBATCH {arg}" for arg in s.extra_args]
    argv = [
        python,
        "-m",
        "clusterops",
        "train",
        "run",
        os.path.abspath(config_path),
        "--checkpoint-dir",
        checkpoint_dir,
    ]
    if data:
        argv += ["--data", data]
    if steps:
        argv += ["--steps", str(steps)]
    lines += [
        "export PYTHONUNBUFFERED=1",
        'echo "clusterops train: job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST"',
    ]
    if remote:
        pull = [
            python,
            "-m",
            "clusterops",
            "ckpt",
            "pull",
            "--remote",
            remote,
            "--dest",
            checkpoint_dir,
            "--missing-ok",
        ]
        lines.append(
            "srun --ntasks-per-node=1 --kill-on-bad-exit=1 "
            + " ".join(shlex.quote(a) for a in pull)
            + " || exit 1"
        )
    # srun forwards the USR1 that --signal sends to every task; --kill-on-bad-exit ends the step
    # when one rank dies instead of leaving the others blocked in a collective.
    lines.append("exec srun --kill-on-bad-exit=1 " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


@app.command("submit")
def submit(
    ctx: typer.Context,
    config: str = typer.Argument(..., help="Trainer config TOML; its [slurm] table shapes the job."),
    checkpoint_dir: str = CKPT_OPTION,
    nodes: int = typer.Option(0, "--nodes", "-N", help="Override slurm.nodes."),
    data: str = typer.Option("", "--data", help="Staged dataset root; `{node}` is each node's own copy."),
    steps: int = typer.Option(0, "--steps", help="Override train.steps."),
    remote: str = typer.Option(
        "",
        "--remote",
        help="s3://... of the run's checkpoints: pull the newest onto every node at each start.",
    ),
    reservation: str = typer.Option("", "--reservation", help="Run inside this Slurm reservation."),
    output: str = typer.Option("", "--output", help="Job output file (default CHECKPOINT_DIR/slurm-%j.out)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write and print the script, do not submit."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write an sbatch script (srun, --requeue, --signal=USR1@lead, --open-mode=append) and submit it.

    A checkpoint dir holding `{node}` keeps each node's part on its own local disk; give `--remote` so
    every start pulls the whole newest checkpoint from S3 first."""
    cfg = _load(config)
    if nodes:
        cfg.slurm.nodes = nodes
    root = checkpoint_dir or cfg.checkpoint.dir
    if not root:
        raise UsageError("no checkpoint dir: pass --checkpoint-dir or set checkpoint.dir")
    root = os.path.abspath(root)
    per_node = "{node}" in root
    if per_node and not output:
        raise UsageError(
            f"--checkpoint-dir {root}: with {{node}} in it, give --output (a path the head can read)"
        )
    script_dir = Path(output).resolve().parent if output else Path(root)
    script_dir.mkdir(parents=True, exist_ok=True)
    script = sbatch_script(
        cfg,
        config,
        root,
        output=os.path.abspath(output) if output else "",
        data=data,
        steps=steps,
        remote=remote,
        reservation=reservation,
    )
    from clusterops.fsutil import atomic_write_text

    script_path = atomic_write_text(script_dir / "train.sbatch", script, mode=0o755)
    if dry_run:
        print(script, end="")
        return
    from clusterops.slurm import SlurmClient

    job_id = SlurmClient.from_config(get_config(ctx)).submit([str(script_path)])
    out_file = (os.path.abspath(output) if output else f"{root}/slurm-%j.out").replace("%j", str(job_id))
    if as_json:
        print_json({"job_id": job_id, "script": str(script_path), "checkpoint_dir": root, "output": out_file})
    else:
        print(f"submitted job {job_id}: {script_path} (output {out_file})")


@app.command("export-hf")
def export_hf(
    checkpoint: str = typer.Argument(..., help="A committed step dir, or a checkpoint root (its newest)."),
    out: str = typer.Argument(..., help="Output directory (config.json + model.safetensors)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Export to a transformers SmolLM3ForCausalLM directory (AutoModelForCausalLM.from_pretrained)."""
    from clusterops.checkpoint import layout
    from clusterops.train.export import export_hf as do_export

    step_dir = Path(checkpoint)
    if not layout.is_committed(step_dir) and (newest := layout.newest_committed(step_dir)) is not None:
        step_dir = newest.path
    path = do_export(step_dir, out, dtype=dtype, force=force)
    print(f"exported {step_dir} -> {path}")


@app.command("presets")
def presets(as_json: bool = JSON_OPTION) -> None:
    """The model presets and their sizes."""
    from clusterops.train.model import PRESETS

    rows = {name: {**cfg.to_dict(), "params": cfg.num_params()} for name, cfg in PRESETS.items()}
    if as_json:
        print_json(rows)
        return
    for name, row in rows.items():
        print(
            f"{name:12} {row['params'] / 1e9:6.3f}B  hidden {row['hidden_size']}  layers {row['n_layers']}  "
            f"heads {row['n_heads']}/{row['n_kv_heads']} kv  vocab {row['vocab_size']}"
        )


@app.command("check-config")
def check_config(config: str = typer.Argument(..., help="Trainer config TOML.")) -> None:
    """Parse and validate a trainer config; print the effective values."""
    try:
        cfg = _load(config)
    except ConfigError:
        raise
    print_json(cfg.to_dict())
