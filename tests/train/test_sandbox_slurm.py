"""`train submit` on the real local Slurm cluster: a 2-node CPU job (srun, gloo) commits a checkpoint, and
requeueing it resumes from that checkpoint, not from step 0."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from clusterops.checkpoint import layout
from tests.conftest import run_cli

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

CONFIG = """
[model]
preset = "tiny"
[data]
seq_len = 64
micro_batch = 4
synthetic_tokens = 131072
[train]
steps = 100000
dtype = "fp32"
threads = 1
log_every = 5
[optim]
lr = 3e-3
warmup_steps = 5
[checkpoint]
every_steps = 10
[slurm]
nodes = 2
ntasks_per_node = 1
time = "00:10:00"
"""


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def test_submit_two_node_job_checkpoints_and_resumes_after_requeue(sandbox, tmp_path):
    sb, env = sandbox
    config = tmp_path / "job.toml"
    config.write_text(CONFIG)
    root = tmp_path / "ckpt"
    out = run_cli(
        "train", "submit", str(config), "--checkpoint-dir", str(root), "--json", env=env, check=True
    )
    job_id = int(re.search(r'"job_id": (\d+)', out.stdout).group(1))
    log = root / f"slurm-{job_id}.out"
    from clusterops.slurm import SlurmClient

    client = SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"], backend="command")
    try:
        first = _wait(lambda: layout.newest_committed(root), 180, f"a committed checkpoint ({log})")
        text = log.read_text()
        assert "dp=2 tp=1" in text  # one rank on each of the two nodes, one process group
        assert len(client.job(job_id).nodes) == 2
        client.requeue(job_id)  # what a node failure or an operator does; the job starts again at once

        def resumed():
            m = re.search(r"resumed from (\S+) \(step (\d+)", log.read_text() if log.exists() else "")
            return m

        m = _wait(resumed, 180, f"the requeued job to resume ({log})")
        assert int(m.group(2)) >= first.step > 0
        assert Path(m.group(1)).name == f"step-{m.group(2)}"
        assert "restart 1" in log.read_text()  # --open-mode=append kept the first run's output too
    finally:
        client.cancel(job_id)
