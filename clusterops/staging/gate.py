"""The prolog's dataset gate: refuse a job on this node unless every dataset it names is READY here.

A job names its datasets in its comment: `sbatch --comment "datasets=fineweb-edu,code" ...`.

Where the comment comes from, so that a Slurm outage cannot drain a node:
- Slurm 24.11 (and every release whose slurmd puts the job's credential fields in the prolog's
  environment) hands the prolog `SLURM_JOB_COMMENT`, as the user wrote it. When it is set, the gate
  reads it and makes no Slurm call at all.
- Otherwise (22.05 never sets it; newer releases leave it out when the job has no comment) the gate asks
  slurmctld, `scontrol show job -o JOBID`, under a short timeout, and once more after a short pause
  (one bounded retry, `SCONTROL_TRY_S` each, at most `GATE_BUDGET_S` in all).

The verdict says whose fault a refusal is, and the prolog acts on that (clusterops/cli/hook_cmd.py):
- `pass`: nothing named, or everything named is READY here;
- `not_ready`: a dataset the cluster knows (listed in `[staging] datasets`, or staged here before) is not
  READY on this node: the node's own state (drain);
- `bad_job`: the job's comment names datasets badly, or names a dataset the cluster does not know: the
  job's fault (cancel the job with the reason, never drain the node);
- `unknown`: Slurm did not answer twice: nobody's fault (let the job start, raise an alert);
- `node_error`: the prolog's own environment is broken (no valid job id, node name or slurm.conf).

Everything taken from the environment or the job record is validated before use; nothing goes through
a shell. Imports neither boto3 nor torch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
GATE_TIMEOUT_S = 10.0  # kept for callers; the per-try limit below is what the gate uses
SCONTROL_TRY_S = 10.0  # one `scontrol show job` try; capped by [slurm] timeout_s
RETRY_PAUSE_S = 1.0
GATE_BUDGET_S = 2 * SCONTROL_TRY_S + RETRY_PAUSE_S
MAX_COMMENT = 65536  # longer than any comment a person writes; bounds the parsing work


@dataclass
class GateVerdict:
    """What the gate found, and whose fault a refusal is (see the module docstring)."""

    outcome: str  # pass | not_ready | bad_job | unknown | node_error
    detail: str
    job_id: str = ""
    datasets: list[str] = field(default_factory=list)
    comment_from: str = ""  # env | scontrol | "" (not read)
    tries: int = 0  # scontrol calls made

    @property
    def ok(self) -> bool:
        return self.outcome == "pass"


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


def job_comment(job_id: str, slurm_conf: str, timeout: float, path: str = "") -> str:
    """The job's comment, from `scontrol show job -o`. Raises proc.CommandError when it cannot tell."""
    env = {"PATH": path or os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "SLURM_CONF": slurm_conf}
    out = proc.run(["scontrol", "show", "job", "-o", job_id], timeout=timeout, env=env).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(f"JobId={job_id} ")), "")
    if not line:
        raise proc.CommandError(f"scontrol show job {job_id}: no record for the job")
    # Comment= is free text; it runs to the next ` Key=` that scontrol prints after it.
    m = re.search(r"(?:^|\s)Comment=(.*?)(?=\s+[A-Z][A-Za-z]*(?:\[[^\]]*\])?=|$)", line)
    return m.group(1) if m else ""


def evaluate_job(
    cfg: config_mod.Config, env: Mapping[str, str], sleep=time.sleep, clock=time.monotonic
) -> GateVerdict:
    """The gate's verdict for the job in `env` (a prolog's environment) on this node."""
    job_id = str(env.get("SLURM_JOB_ID", "")).strip()
    node = str(env.get("SLURMD_NODENAME", "")).strip() or config_mod.node_name()
    if not JOB_ID_RE.match(job_id):
        return GateVerdict("node_error", f"dataset gate: SLURM_JOB_ID {job_id[:40]!r} is not a job id")
    if not NODE_RE.match(node):
        return GateVerdict("node_error", f"dataset gate: node name {node[:70]!r} is not valid", job_id)
    tries = 0
    if "SLURM_JOB_COMMENT" in env:
        comment, source = str(env["SLURM_JOB_COMMENT"]), "env"
    else:
        conf = str(env.get("SLURM_CONF", "") or cfg.slurm.conf or "/etc/slurm/slurm.conf")
        if not os.path.isabs(conf) or "\0" in conf or not os.path.isfile(conf):
            return GateVerdict(
                "node_error", f"dataset gate: SLURM_CONF {conf[:200]!r} is not a readable file", job_id
            )
        comment, tries, error = _ask_scontrol(cfg, job_id, conf, sleep, clock)
        source = "scontrol"
        if comment is None:
            return GateVerdict(
                "unknown",
                f"dataset gate: job {job_id}: Slurm did not tell its datasets ({tries} tries): {error}",
                job_id,
                comment_from=source,
                tries=tries,
            )
    if len(comment) > MAX_COMMENT:
        return GateVerdict(
            "bad_job",
            f"dataset gate: job {job_id}: --comment is {len(comment)} characters, at most {MAX_COMMENT}",
            job_id,
            comment_from=source,
            tries=tries,
        )
    names, error = parse_comment(comment)
    if error:
        detail = f"dataset gate: job {job_id}: --comment: {error}"
        return GateVerdict("bad_job", detail, job_id, comment_from=source, tries=tries)
    if not names:
        return GateVerdict(
            "pass", f"dataset gate: job {job_id} names no dataset", job_id, comment_from=source, tries=tries
        )
    unknown = [n for n in names if not known_dataset(cfg, n, node)]
    if unknown:
        missing = "; ".join(f"{n} (not staged here)" for n in unknown)
        detail = (
            f"dataset gate: job {job_id} on {node}: not READY: {missing}; the job names unknown "
            f"dataset(s) {', '.join(unknown)} (not in [staging] datasets, never staged on {node})"
        )
        return GateVerdict("bad_job", detail, job_id, names, source, tries)
    ok, detail = check_datasets(cfg, names, node, job_id)
    return GateVerdict("pass" if ok else "not_ready", detail, job_id, names, source, tries)


def known_dataset(cfg: config_mod.Config, name: str, node: str) -> bool:
    """Whether the cluster knows dataset `name`: the staging config lists it, or it was staged on this
    node (its bookkeeping is here). A job naming any other is the job's mistake, not the node's."""
    if any(item.partition("=")[0].strip() == name for item in cfg.staging.datasets):
        return True
    root = state.datasets_root(config_mod.node_path(cfg.paths.local_root, node))
    return os.path.isdir(state.meta_dir(root / name))


def _ask_scontrol(cfg, job_id: str, conf: str, sleep, clock) -> tuple[str | None, int, str]:
    """(comment or None, tries, last error): one try and one bounded retry, inside GATE_BUDGET_S."""
    per_try = min(SCONTROL_TRY_S, max(1.0, cfg.slurm.timeout_s))
    bin_dir = getattr(cfg.slurm, "bin_dir", "") or ""
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if bin_dir:
        path = f"{bin_dir}:{path}"
    deadline = clock() + GATE_BUDGET_S
    error = ""
    for attempt in (1, 2):
        left = deadline - clock()
        if left < 0.5:
            break
        try:
            return job_comment(job_id, conf, min(per_try, left), path), attempt, ""
        except proc.CommandError as e:
            error = str(e)
        if attempt == 1:
            sleep(min(RETRY_PAUSE_S, max(0.0, deadline - clock() - 0.5)))
    return None, 2 if error else 1, error


def check_job_datasets(cfg: config_mod.Config, env: Mapping[str, str]) -> tuple[bool, str]:
    """(ok, one line) for `clusterops stage gate` inside a job: ok only when every dataset the job
    names is READY here; a comment that cannot be read or a Slurm that does not answer is not ok
    (inside the job, failing closed costs only that job). The prolog uses evaluate_job's outcome."""
    verdict = evaluate_job(cfg, env)
    return verdict.ok, verdict.detail


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
