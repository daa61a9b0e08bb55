"""Entry points Slurm runs on every node: Prolog, Epilog and HealthCheckProgram.

Must stay light: no torch, no boto3, no typer on the fast path (`clusterops hook X` goes straight to
run_hook from clusterops.cli.main), and a bounded run time. The job's environment is validated before
use and never reaches a shell.

The rules when Slurm itself misbehaves (docs/health.md, "When Slurm does not answer"):
- Slurm's only answer to a Prolog that exits non-zero is to drain the node. So the prolog exits
  non-zero only for a fault of the node itself: a CRITICAL health verdict, or a dataset the cluster
  knows that is not READY here. Only a node's own fault drains a node.
- Every Slurm call a hook makes (reading the job's comment, a drain, failing a job) has a short
  timeout (SLURM_TRY_S) and one retry after RETRY_PAUSE_S; then the hook follows its rule and moves on.
- The dataset gate reads the job's comment from SLURM_JOB_COMMENT when slurmd sets it (24.11), with no
  Slurm call. If it has to ask slurmctld (22.05) and Slurm does not answer twice, the prolog exits 0:
  the job starts, and an alert event (`staging_gate`, outcome `unknown`, alert true) says its datasets
  were not checked on this node. Failing the job instead would need slurmctld, which is not answering,
  and exiting non-zero would drain a healthy node for the controller's outage.
- A job whose `--comment datasets=...` is malformed, or names a dataset the cluster does not know, is
  the job's fault: the prolog exits 0 after
  cancelling the job (`scancel`, with the reason in the job's AdminComment), so the node is not drained.
  If even the cancel fails (Slurm gone in between), the job runs and an alert event says so.
- A drain that Slurm does not take (twice) is an alert event (`drain_failed`); the prolog still exits 1
  for its node's fault (Slurm then drains it with "Prolog error"), and the HealthCheckProgram tries again
  at its next interval.
Worst case for the prolog: health.budget_s + 2 x SLURM_TRY_S + RETRY_PAUSE_S (gate) + the same again
(drain or cancel); slurm.conf's PrologEpilogTimeout must be longer (Slurm drains on a prolog timeout).
The gate's own rule for `stage gate` inside a job (check_job_datasets) stays fail-closed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_JOB_ID = re.compile(r"^[1-9][0-9]{0,11}$")
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
SLURM_TRY_S = 10.0  # one Slurm call from a hook; [slurm] timeout_s caps it further
RETRY_PAUSE_S = 1.0  # before the one retry


@dataclass
class JobEnv:
    """What a hook takes from its environment, each value checked; bad values are dropped and named."""

    node: str = ""
    job_id: str = ""
    user: str = ""
    slurm_conf: str = ""
    comment: str | None = None  # SLURM_JOB_COMMENT when slurmd set it (free text: the gate parses it)
    problems: list[str] = field(default_factory=list)

    def as_env(self) -> dict[str, str]:
        env = {"SLURMD_NODENAME": self.node, "SLURM_JOB_ID": self.job_id, "SLURM_JOB_USER": self.user}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        out = {k: v for k, v in env.items() if v}
        if self.comment is not None:
            out["SLURM_JOB_COMMENT"] = self.comment
        return out


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
    if "SLURM_JOB_COMMENT" in environ:
        # The user's own text, handed over as is: the gate validates what it takes from it.
        out.comment = str(environ["SLURM_JOB_COMMENT"])
    return out


def _staging_gate():
    """The dataset READY gate of issue 4, when that module is installed: (cfg, env) -> GateVerdict
    (evaluate_job; its fail-closed form check_job_datasets is for `stage gate` inside a job)."""
    try:
        from clusterops.staging.gate import evaluate_job
    except ModuleNotFoundError as e:
        if e.name in ("clusterops.staging", "clusterops.staging.gate"):
            return None
        raise
    return evaluate_job


def _slurm(cfg):
    """A Slurm client whose every call gives up after SLURM_TRY_S (a hook must not wait out the
    default [slurm] timeout twice)."""
    from clusterops.health import drain

    short = min(SLURM_TRY_S, max(1.0, cfg.slurm.timeout_s))
    return drain.client(dataclasses.replace(cfg, slurm=dataclasses.replace(cfg.slurm, timeout_s=short)))


def _twice(action: Callable[[], object]) -> object:
    """Run a Slurm action; on a ClusteropsError, once more after RETRY_PAUSE_S (then let it raise)."""
    from clusterops.errors import ClusteropsError

    try:
        return action()
    except ClusteropsError:
        time.sleep(RETRY_PAUSE_S)
        return action()


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
        # --- dataset READY gate (clusterops/staging/gate.py); the rules are in this module's docstring ---
        gate = _staging_gate()
        if gate is not None:
            verdict = gate(cfg, env.as_env())
            export.event(
                cfg,
                node,
                "staging_gate",
                ok=verdict.ok,
                outcome=verdict.outcome,
                detail=verdict.detail,
                job=env.job_id,
                comment_from=verdict.comment_from,
                slurm_calls=verdict.tries,
                **({"alert": True} if verdict.outcome == "unknown" else {}),
            )
            if verdict.outcome in ("not_ready", "node_error"):  # this node's own fault: refuse, drain
                _drain_reason(
                    cfg, node, f"{cfg.health.drain_prefix} staging: {verdict.detail}", env, drain, export
                )
                print(verdict.detail, file=sys.stderr)
                return 1
            if verdict.outcome == "bad_job":  # the job's fault: fail the job, never the node
                _fail_job(cfg, node, env, verdict.detail, export)
                print(verdict.detail, file=sys.stderr)
                return 0
            if verdict.outcome == "unknown":  # Slurm's outage: nobody's fault; never drain for it
                print(f"{verdict.detail}; job allowed to start unchecked (alert raised)", file=sys.stderr)
        return 0
    if hook == "healthcheck":
        return int(report.verdict)
    return 0  # epilog: the job is over; a bad node is drained above, with our reason


def _drain(cfg, report, env: JobEnv, drain, export) -> None:
    from clusterops.errors import ClusteropsError

    try:
        slurm = _slurm(cfg)
        action, reason = _twice(lambda: drain.drain_if_critical(cfg, report, slurm))
    except ClusteropsError as e:
        export.event(
            cfg, report.node, "drain_failed", hook=report.hook, error=str(e), job=env.job_id, alert=True
        )
        return
    export.event(cfg, report.node, "drain", hook=report.hook, action=action, reason=reason, job=env.job_id)


def _drain_reason(cfg, node: str, reason: str, env: JobEnv, drain, export) -> None:
    from clusterops.errors import ClusteropsError

    try:
        slurm = _slurm(cfg)
        action, reason = _twice(lambda: drain.drain_with(cfg, slurm, node, reason))
        export.event(cfg, node, "drain", hook="prolog", action=action, reason=reason, job=env.job_id)
    except ClusteropsError as e:
        export.event(cfg, node, "drain_failed", hook="prolog", error=str(e), job=env.job_id, alert=True)


def _fail_job(cfg, node: str, env: JobEnv, detail: str, export) -> None:
    """Cancel a job the gate refused for its own fault, saying why in its AdminComment; never drains."""
    from clusterops.errors import ClusteropsError

    if not env.job_id:
        export.event(cfg, node, "job_fail_failed", error="no valid SLURM_JOB_ID", detail=detail, alert=True)
        return
    why = " ".join(f"clusterops prolog on {node}: {detail}".replace("=", ":").split())[:250]

    def cancel() -> None:
        try:
            slurm.cancel(int(env.job_id))
        except ClusteropsError as e:
            # Each node of a multi-node job runs the prolog: the first cancel wins, the rest find it done.
            if "already" not in str(e).lower() and "invalid job id" not in str(e).lower():
                raise

    try:
        slurm = _slurm(cfg)
        try:
            slurm.cmd.scontrol("update", f"JobId={int(env.job_id)}", f"AdminComment={why}")
        except ClusteropsError:
            pass  # the reason is a courtesy; the cancel is what matters
        _twice(cancel)
    except ClusteropsError as e:
        export.event(
            cfg,
            node,
            "job_fail_failed",
            job=env.job_id,
            detail=detail,
            error=str(e),
            alert=True,
        )
        print(f"clusterops hook prolog: could not cancel job {env.job_id}: {e}", file=sys.stderr)
        return
    export.event(cfg, node, "job_failed", job=env.job_id, action="cancelled", reason=detail)


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
