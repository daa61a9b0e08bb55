"""The prolog's dataset gate: refuse a job on this node unless every dataset it names is READY here.

A job names its datasets in its comment: `sbatch --comment "datasets=fineweb-edu,code" ...`.
Slurm 22.05 hands the Prolog the job id and node name but not the job's environment or comment, so
the gate asks slurmctld once, `scontrol show job -o JOBID`, under a short timeout. Everything taken
from the environment or the job record is validated before use; nothing goes through a shell.
Imports neither boto3 nor torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from clusterops import config as config_mod
from clusterops import proc
from clusterops.staging import state

JOB_ID_RE = re.compile(r"^[1-9][0-9]{0,11}$")  # also array/het ids reach the prolog as plain numbers
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_DATASETS = 16
# `datasets=a,b` anywhere in the comment, delimited by start/whitespace/';' on the left.
COMMENT_KEY_RE = re.compile(r"(?:^|[\s;])datasets?=([^\s;]*)")
GATE_TIMEOUT_S = 10.0


def parse_comment(comment: str) -> tuple[list[str], str | None]:
    """Dataset names from a job comment, and an error when the comment names them badly."""
    found = COMMENT_KEY_RE.findall(comment or "")
    if not found:
        return [], None
    if len(found) > 1:
        return [], "the comment names datasets= more than once"
    names = [n for n in found[0].split(",")]
    if not found[0] or any(not n for n in names):
        return [], f"empty dataset name in {('datasets=' + found[0])!r}"
    if len(names) > MAX_DATASETS:
        return [], f"{len(names)} datasets named, at most {MAX_DATASETS}"
    for n in names:
        if not DATASET_RE.match(n):
            return [], f"dataset name {n[:80]!r} is not valid (letters, digits, '.', '_', '-'; at most 64)"
    return list(dict.fromkeys(names)), None


def job_comment(job_id: str, slurm_conf: str, timeout: float) -> str:
    """The job's comment, from `scontrol show job -o`. Raises proc.CommandError when it cannot tell."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "SLURM_CONF": slurm_conf}
    out = proc.run(["scontrol", "show", "job", "-o", job_id], timeout=timeout, env=env).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(f"JobId={job_id} ")), "")
    if not line:
        raise proc.CommandError(f"scontrol show job {job_id}: no record for the job")
    # Comment= is free text; it runs to the next ` Key=` that scontrol prints after it.
    m = re.search(r"(?:^|\s)Comment=(.*?)(?=\s+[A-Z][A-Za-z]*(?:\[[^\]]*\])?=|$)", line)
    return m.group(1) if m else ""


def check_job_datasets(cfg: config_mod.Config, env: Mapping[str, str]) -> tuple[bool, str]:
    """(ok, one line). ok is False when the job names a dataset that is not READY on this node, or
    when what the job asks for cannot be read (fail closed: the job waits rather than reads nothing)."""
    job_id = str(env.get("SLURM_JOB_ID", "")).strip()
    node = str(env.get("SLURMD_NODENAME", "")).strip() or config_mod.node_name()
    if not JOB_ID_RE.match(job_id):
        return False, f"dataset gate: SLURM_JOB_ID {job_id[:40]!r} is not a job id"
    if not NODE_RE.match(node):
        return False, f"dataset gate: node name {node[:70]!r} is not valid"
    conf = str(env.get("SLURM_CONF", "") or cfg.slurm.conf or "/etc/slurm/slurm.conf")
    if not os.path.isabs(conf) or "\0" in conf or not os.path.isfile(conf):
        return False, f"dataset gate: SLURM_CONF {conf[:200]!r} is not a readable file"
    timeout = min(GATE_TIMEOUT_S, max(1.0, cfg.slurm.timeout_s))
    try:
        comment = job_comment(job_id, conf, timeout)
    except proc.CommandError as e:
        return False, f"dataset gate: job {job_id}: cannot read its datasets: {e}"
    names, error = parse_comment(comment)
    if error:
        return False, f"dataset gate: job {job_id}: --comment: {error}"
    if not names:
        return True, f"dataset gate: job {job_id} names no dataset"
    return check_datasets(cfg, names, node, job_id)


def check_datasets(
    cfg: config_mod.Config, names: list[str], node: str, job_id: str = "?"
) -> tuple[bool, str]:
    root = state.datasets_root(config_mod.node_path(cfg.paths.local_root, node))
    missing: list[str] = []
    for name in names:
        readiness = state.check_ready(root / name)
        if not readiness.ready:
            missing.append(f"{name} ({readiness.reason})")
    if missing:
        return False, f"dataset gate: job {job_id} on {node}: not READY: {'; '.join(missing)}"
    return True, f"dataset gate: job {job_id} on {node}: READY: {', '.join(names)}"


def summary(cfg: config_mod.Config, node: str | None = None) -> list[dict[str, Any]]:
    """Status of every dataset on this node (for the health check or a human)."""
    root = config_mod.node_path(cfg.paths.local_root, node)
    return [state.status(d) for d in state.list_datasets(root)]
