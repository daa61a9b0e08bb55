"""The parsers against output captured from the real Slurm 22.05 in the sandbox (tests/fixtures/slurm)."""

import json
from pathlib import Path

import pytest

from clusterops.slurm import SlurmError
from clusterops.slurm.command import parse_jobs, parse_kv_line, parse_nodes, parse_reservations

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def test_nodes_from_real_sinfo():
    nodes = {n.name: n for n in parse_nodes(json.loads((FIX / "sinfo-22.05.json").read_text()))}
    assert sorted(nodes) == ["node1", "node2", "node3", "node4"]
    assert nodes["node3"].drained and nodes["node3"].reason == "clusterops: gpu: row remap pending"
    assert not nodes["node3"].usable and nodes["node1"].usable
    assert nodes["node1"].partitions == ["main"] and nodes["node1"].cpus == 2
    assert nodes["node2"].address.endswith(".12")


def test_jobs_from_real_squeue():
    jobs = {j.job_id: j for j in parse_jobs(json.loads((FIX / "squeue-22.05.json").read_text()))}
    assert jobs[4].state == "RUNNING" and jobs[4].nodes == ["node1", "node2"] and jobs[4].active
    assert jobs[5].nodes == ["node1", "node2", "node3", "node4"]
    assert jobs[1].state == "COMPLETED" and not jobs[1].active
    assert jobs[2].state == "CANCELLED" and jobs[2].nodes == []
    assert all(j.user == "root" and j.restart_count == 0 for j in jobs.values())


def test_reservations_from_real_scontrol():
    (res,) = parse_reservations((FIX / "reservations-22.05.txt").read_text())
    assert res.name == "training" and res.nodes == ["node1", "node2"]
    assert "IGNORE_JOBS" in res.flags and res.users == ["root"] and res.state == "ACTIVE"
    assert parse_reservations("No reservations in the system\n") == []


def test_kv_line_keeps_spaces_in_values():
    kv = parse_kv_line("NodeName=n1 Reason=clusterops: gpu: xid 79 [root@2026] State=IDLE+DRAIN")
    assert kv["Reason"] == "clusterops: gpu: xid 79 [root@2026]" and kv["State"] == "IDLE+DRAIN"


def test_json_errors_raise():
    with pytest.raises(SlurmError, match="Unspecified error"):
        parse_nodes({"errors": [{"error": "Unspecified error", "errno": -1}], "nodes": []})
