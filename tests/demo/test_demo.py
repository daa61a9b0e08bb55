"""The main job, end to end on its own sandbox: a node dies mid-training, the warm spare takes its place,
and the job resumes from the newest checkpoint on the spare without restaging anything there."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from clusterops.demo import SPARE, VICTIM, Demo

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def test_node_death_spare_swapped_in_job_resumes_from_checkpoint_without_restaging():
    lines: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="co-demo-", dir="/var/tmp"))
    try:
        result = Demo(root, lines.append, steps=200).run()
    finally:
        sandbox_left = (root / "sandbox.json").exists()
        shutil.rmtree(root, ignore_errors=True)
    assert result.resumed_from and result.resumed_from > 0
    assert result.resumed_from % 40 == 0  # a committed checkpoint step (every 40 steps)
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
