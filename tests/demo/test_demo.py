"""The main job, end to end on its own sandbox: a node dies mid-training, the warm spare takes its place,
and the job resumes from the newest checkpoint on the spare without restaging anything there."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from clusterops.demo import FAILURE_FILE, SPARE, VICTIM, Demo

# The demo's own waits (each with a clear DemoError) add up to more than the suite's default 300 s;
# a quiet run takes ~2.5 min. A failure keeps the root and prints what the demo recorded.
pytestmark = [pytest.mark.sandbox, pytest.mark.slow, pytest.mark.timeout(900)]


def test_node_death_spare_swapped_in_job_resumes_from_checkpoint_without_restaging():
    lines: list[str] = []
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="co-demo-", dir="/var/tmp"))
    try:
        result = Demo(root, lambda m: lines.append(f"{time.monotonic() - t0:6.1f}s {m}"), steps=200).run()
    except BaseException:
        print("\n".join(lines))
        record = root / FAILURE_FILE
        print(record.read_text() if record.exists() else f"(no {FAILURE_FILE})")
        print(f"demo root kept for inspection: {root}")
        raise
    sandbox_left = (root / "sandbox.json").exists()
    shutil.rmtree(root, ignore_errors=True)
    assert result.resumed_from and result.resumed_from > 0
    # A committed checkpoint: every 40 steps, or where a SIGTERM/SIGUSR1 stopped the job (a slow
    # machine once had Slurm requeue the job a second time, and it resumed from that stop's step).
    assert result.resumed_from in result.committed_steps, (result.resumed_from, result.committed_steps)
    assert any(s % 40 == 0 for s in result.committed_steps), result.committed_steps
    assert SPARE in result.job_nodes_after and VICTIM not in result.job_nodes_after
    assert result.spare_restaged is False
    kinds = [e["event"] for e in result.events]
    for kind in ("spare.failure_detected", "spare.drained", "spare.spare_swapped_in", "spare.job_running"):
        assert kind in kinds
    assert (
        kinds.index("spare.failure_detected")
        < kinds.index("spare.spare_swapped_in")
        < kinds.index("spare.job_running")
    )
    assert result.final_loss < result.first_loss
    assert not sandbox_left  # the demo took its sandbox down
