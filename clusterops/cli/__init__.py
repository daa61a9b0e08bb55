"""The `clusterops` command. Each group lives in its own module; modules import heavy libraries lazily
so that the Slurm hooks (prolog, epilog, health check) start fast and never import torch or boto3."""

from __future__ import annotations

import importlib
import sys

from clusterops.errors import ClusteropsError

# `clusterops hook <one of these>` (what slurm.conf runs on every node for every job) skips typer and
# every other group: see main().
HOOKS = ("prolog", "epilog", "healthcheck")

# (module under clusterops.cli, group name, one-line help). Order is the order in --help.
# Several people edit this list at once: add only your own line; read CONTRIBUTING.md (commit only your own
# files, never `git add -A`, never reformat files that are not yours).
GROUPS = [
    ("config_cmd", "config", "Show and check the effective configuration."),
    ("slurm_cmd", "slurm", "Look at and act on Slurm nodes, jobs and reservations."),
    ("sandbox_cmd", "sandbox", "A real local cluster (slurmctld, N slurmd, S3) for trying and testing."),
    ("hook_cmd", "hook", "Entry points for slurm.conf: Prolog, Epilog, HealthCheckProgram."),
    ("health_cmd", "health", "Node health: check, record a fixture, undrain what a check drained."),
    ("train_cmd", "train", "The compact GQA trainer (SmolLM3): run, submit to Slurm, export to HF."),
    ("ckpt_cmd", "ckpt", "Checkpoints to and from S3: commit, push, pull, status, prune, sync."),
    ("raid_cmd", "raid", "RAID 0 over the instance-store NVMe drives: plan, apply, status."),
    ("stage_cmd", "stage", "Stage datasets onto local NVMe, verified; status, verify, evict, daemon."),
    ("data_cmd", "data", "Token shards in datatrove's layout: prepare from text/JSONL, inspect."),
    ("spare_cmd", "spare", "Keep a warm spare node and swap it in when a training node fails."),
    ("bench_cmd", "bench", "Node acceptance: measure a node against what its hardware should deliver."),
    ("doctor_cmd", "doctor", "Triage a slow running job: storage, loader, model step, comms, outlier node."),
]


def _wanted_group(argv: list[str]) -> str | None:
    """The command group argv runs (`clusterops [-c CFG] GROUP ...`), or None for the top level."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1 if "=" in argv[i] or argv[i] not in ("-c", "--config") else 2
    return argv[i] if i < len(argv) else None


def _build_app(only: str | None = None):
    """The typer app; with `only` naming a group (or "demo"), just that one: each group module imports
    its own libraries, so a run of one command does not pay for loading all thirteen."""
    global typer  # module-global, so typer can resolve the callback's string annotations
    import typer

    app = typer.Typer(
        name="clusterops",
        help="Keep an LLM pretraining run on a Slurm GPU cluster fed, healthy and recoverable.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        ctx: typer.Context,
        config: str = typer.Option(
            None, "--config", "-c", help="Config file, layered over /etc/clusterops and CLUSTEROPS_CONFIG."
        ),
    ) -> None:
        ctx.obj = {"config_path": config}

    known = {name for _, name, _ in GROUPS} | {"demo"}
    if only not in known:
        only = None  # the top level (help, an unknown command): everything, so typer lists it all
    for _module, _name, _help in GROUPS:
        if only is None or only == _name:
            _sub = importlib.import_module(f"clusterops.cli.{_module}").app
            app.add_typer(_sub, name=_name, help=_help)
    if only is None or only == "demo":
        app.command("demo")(importlib.import_module("clusterops.cli.demo_cmd").demo)
    return app


def __getattr__(name: str):
    # `clusterops.cli.app` is built on first use, so the hook fast path never imports typer.
    if name == "app":
        globals()["app"] = built = _build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "hook" and argv[1] in HOOKS:
        from clusterops.cli import hook_cmd

        sys.exit(hook_cmd.run_hook(argv[1]))
    try:
        (globals().get("app") or _build_app(_wanted_group(argv)))()
    except ClusteropsError as e:
        print(f"clusterops: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # bad input, a bad path, S3's answer: one line; a bug re-raises (cli/common.py)
        from clusterops.cli.common import input_error

        line = input_error(e)
        if line is None:
            raise
        print(f"clusterops: {line[0]}", file=sys.stderr)
        sys.exit(line[1])
    except KeyboardInterrupt:
        print("clusterops: interrupted", file=sys.stderr)
        sys.exit(130)
