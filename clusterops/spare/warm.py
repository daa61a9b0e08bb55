"""Warm-up, run on the spare itself inside a Slurm job: stage the datasets, pull the newest checkpoint,
run the health check, and publish the result as the `warmth` key of the node's record in its Slurm Extra
field (clusterops.slurm.nodeinfo: other keys of the record are kept).

Each step is the same clusterops command an operator would run, in a child process with a timeout, so
a hung step cannot wedge the spare and each step's own verification applies unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from clusterops import config as config_mod
from clusterops import proc
from clusterops.spare.warmth import Warmth

CLI = [sys.executable, "-m", "clusterops"]


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float


def remote_url(cfg: config_mod.Config) -> str:
    if cfg.spare.remote:
        return cfg.spare.remote
    if not cfg.s3.bucket:
        return ""
    return f"s3://{cfg.s3.bucket}/{cfg.checkpoint.s3_prefix.strip('/')}"


def _step(name: str, argv: list[str], timeout: float) -> tuple[StepResult, str]:
    started = time.monotonic()
    try:
        r = proc.run(argv, timeout=timeout, check=False)
    except proc.CommandError as e:
        return StepResult(name, False, str(e), time.monotonic() - started), ""
    tail = (r.stderr.strip() or r.stdout.strip()).splitlines()
    detail = tail[-1] if tail else f"exit {r.returncode}"
    return StepResult(name, r.returncode == 0, detail, time.monotonic() - started), r.stdout


def warm_here(
    cfg: config_mod.Config,
    publish: Callable[[Warmth], None],
    timeout_s: float = 1500.0,
) -> tuple[Warmth, list[StepResult]]:
    """Run every warm-up step on this node and publish the warmth after each one."""
    warmth = Warmth(state="warming", updated=time.time(), datasets=list(cfg.staging.datasets))
    publish(warmth)
    steps: list[StepResult] = []

    if cfg.staging.datasets:
        result, _ = _step("stage", [*CLI, "stage", "daemon", "--once"], timeout_s)
        warmth.datasets_ready = result.ok
    else:
        result = StepResult("stage", True, "no datasets configured", 0.0)
        warmth.datasets_ready = True
    steps.append(result)

    remote = remote_url(cfg)
    dest = config_mod.node_path(cfg.checkpoint.local_root)
    if remote:
        argv = [*CLI, "ckpt", "pull", "--remote", remote, "--dest", str(dest), "--missing-ok"]
        result, _ = _step("ckpt-pull", argv, timeout_s)
        steps.append(result)
    else:
        steps.append(StepResult("ckpt-pull", True, "no S3 remote configured", 0.0))
    warmth.ckpt_step = _newest_local_step(dest)

    result, out = _step("health", [*CLI, "health", "check", "--json"], min(timeout_s, 300))
    try:
        warmth.health = int(json.loads(out)["verdict"])
    except (ValueError, KeyError, TypeError):
        warmth.health = 3
    warmth.health_ts = time.time()
    steps.append(StepResult("health", warmth.healthy, result.detail, result.seconds))

    failed = [s for s in steps if not s.ok]
    warmth.state = "failed" if failed else "warm"
    warmth.detail = "; ".join(f"{s.name}: {s.detail}" for s in failed)[:200]
    warmth.warm_since = time.time() if not failed else None
    warmth.updated = time.time()
    publish(warmth)
    return warmth, steps


def _newest_local_step(root) -> int | None:
    try:
        from clusterops.checkpoint import layout
    except ImportError:
        return None
    newest = layout.newest_committed(root) if root.exists() else None
    return newest.step if newest else None
