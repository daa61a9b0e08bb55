"""Entry points Slurm runs on every node: Prolog, Epilog and HealthCheckProgram.

Must stay light: no torch, no boto3, no typer on the fast path (`clusterops hook X` goes straight to
run_hook from clusterops.cli.main), and a bounded run time (the runner's budget). The job's
environment is validated before use and never reaches a shell.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

_JOB_ID = re.compile(r"^[1-9][0-9]{0,11}$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")


@dataclass
class JobEnv:
    """What a hook takes from its environment, each value checked; bad values are dropped and named."""

    node: str = ""
    job_id: str = ""
    user: str = ""
    slurm_conf: str = ""
    problems: list[str] = field(default_factory=list)

    def as_env(self) -> dict[str, str]:
        env = {"SLURMD_NODENAME": self.node, "SLURM_JOB_ID": self.job_id, "SLURM_JOB_USER": self.user}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return {k: v for k, v in env.items() if v}


def job_env(environ: Mapping[str, str]) -> JobEnv:
    out = JobEnv()
    for var, attr, pattern in (
        ("SLURMD_NODENAME", "node", _NODE),
        ("SLURM_JOB_ID", "job_id", _JOB_ID),
        ("SLURM_JOB_USER", "user", _USER),
    ):
        value = environ.get(var, "")
        if not value:
            continue
        if pattern.match(value):
            setattr(out, attr, value)
        else:
            out.problems.append(f"{var}={value[:40]!r} is not valid: ignored")
    conf = environ.get("SLURM_CONF", "")
    if conf:
        if os.path.isabs(conf) and "\0" not in conf and os.path.isfile(conf):
            out.slurm_conf = conf
        else:
            out.problems.append(f"SLURM_CONF={conf[:80]!r} is not a file: ignored")
    return out


def _staging_gate():
    """The dataset READY gate of issue 4, when that module is installed: (cfg, env) -> (ok, detail)."""
    try:
        from clusterops.staging.gate import check_job_datasets
    except ModuleNotFoundError as e:
        if e.name in ("clusterops.staging", "clusterops.staging.gate"):
            return None
        raise
    return check_job_datasets


def run_hook(hook: str, environ: Mapping[str, str] | None = None) -> int:
    """Run one hook; its exit code. Prolog: non-zero refuses the job (Slurm requeues it, node drained)."""
    from clusterops import config as config_mod
    from clusterops.errors import ClusteropsError

    environ = os.environ if environ is None else environ
    env = job_env(environ)
    try:
        cfg = config_mod.load()
    except ClusteropsError as e:
        # Without a config nothing can be checked: refuse jobs (fail closed), keep the timer quiet.
        print(f"clusterops hook {hook}: {e}", file=sys.stderr)
        return 1 if hook == "prolog" else 0
    from clusterops.health import drain, export, service
    from clusterops.verdict import Status

    node = env.node or config_mod.node_name()
    for problem in env.problems:
        export.event(cfg, node, "hook_env_rejected", hook=hook, problem=problem)
    try:
        report, _ = service.evaluate(cfg, hook=hook, node=node)
    except ClusteropsError as e:
        print(f"clusterops hook {hook}: {e}", file=sys.stderr)
        export.event(cfg, node, "hook_error", hook=hook, error=str(e))
        return 1 if hook == "prolog" else 0
    report.hook = hook
    export.publish(cfg, report)
    critical = report.verdict == Status.CRITICAL
    if critical:
        _drain(cfg, report, env, drain, export)
        if hook == "prolog":
            print(drain.reason_for(report, cfg.health.drain_prefix), file=sys.stderr)
            return 1
    if hook == "prolog":
        # --- dataset READY gate (issue 4 owns clusterops/staging/gate.py) ---
        gate = _staging_gate()
        if gate is not None:
            ok, detail = gate(cfg, env.as_env())
            export.event(cfg, node, "staging_gate", ok=ok, detail=detail, job=env.job_id)
            if not ok:
                _drain_reason(cfg, node, f"{cfg.health.drain_prefix} staging: {detail}", env, drain, export)
                print(detail, file=sys.stderr)
                return 1
        return 0
    if hook == "healthcheck":
        return int(report.verdict)
    return 0  # epilog: the job is over; a bad node is drained above, with our reason


def _drain(cfg, report, env: JobEnv, drain, export) -> None:
    from clusterops.errors import ClusteropsError

    try:
        action, reason = drain.drain_if_critical(cfg, report)
    except ClusteropsError as e:
        export.event(cfg, report.node, "drain_failed", hook=report.hook, error=str(e), job=env.job_id)
        return
    export.event(cfg, report.node, "drain", hook=report.hook, action=action, reason=reason, job=env.job_id)


def _drain_reason(cfg, node: str, reason: str, env: JobEnv, drain, export) -> None:
    from clusterops.errors import ClusteropsError

    try:
        slurm = drain.client(cfg)
        view = drain.node_view(slurm, node)
        if not view.drained:
            slurm.drain(node, drain.clip(reason.replace("=", ":"), drain.REASON_MAX))
        export.event(cfg, node, "drain", hook="prolog", reason=reason, job=env.job_id)
    except ClusteropsError as e:
        export.event(cfg, node, "drain_failed", hook="prolog", error=str(e), job=env.job_id)


def _build_app():
    import typer

    app = typer.Typer(no_args_is_help=True)

    @app.command("prolog")
    def prolog() -> None:
        """Slurm Prolog: exit non-zero to refuse the job on this node (Slurm drains it and requeues)."""
        raise typer.Exit(run_hook("prolog"))

    @app.command("epilog")
    def epilog() -> None:
        """Slurm Epilog: runs after every job on each of its nodes; drains the node if it is now bad."""
        raise typer.Exit(run_hook("epilog"))

    @app.command("healthcheck")
    def healthcheck() -> None:
        """Slurm HealthCheckProgram: runs every HealthCheckInterval and at slurmd start; drains a bad node."""
        raise typer.Exit(run_hook("healthcheck"))

    return app


def __getattr__(name: str):
    if name == "app":
        globals()["app"] = built = _build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
