"""The spare watcher never writes over a drain reason it did not set (not even through `down()`), tags its
own; its state file and the node record carry format versions: the previous one reads, a newer one is
refused with one line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from clusterops.health import ownership
from clusterops.slurm import SlurmError, nodeinfo
from clusterops.slurm.records import Job, Node, Reservation
from clusterops.spare.manager import STATE_VERSION, SpareManager, StateFormatError, WatchState, parse_state
from clusterops.spare.warmth import Warmth


@dataclass
class FakeCmd:
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def scontrol(self, *args: str) -> str:
        self.calls.append(args)
        return ""


@dataclass
class FakeSlurm:
    """Slurm as records (what the JSON gives); records every state change the watcher makes."""

    nodes_: dict[str, Node]
    reservations_: dict[str, Reservation]
    jobs_: list[Job] = field(default_factory=list)
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    cmd: FakeCmd = field(default_factory=FakeCmd)

    def nodes(self):
        return list(self.nodes_.values())

    def node(self, name):
        return self.nodes_[name]

    def reservations(self):
        return list(self.reservations_.values())

    def jobs(self):
        return self.jobs_

    def down(self, node, reason):
        self.changes.append(("down", node, reason))

    def drain(self, node, reason):
        self.changes.append(("drain", node, reason))

    def set_reservation_nodes(self, name, nodes):
        self.reservations_[name].nodes = list(nodes)

    def delete_reservation(self, name):
        self.reservations_.pop(name, None)


def manager(tmp_path, slurm) -> SpareManager:
    return SpareManager(slurm, "train", "", tmp_path / "state", tmp_path / "events.ndjson", confirm_s=0)


def training(node2: Node) -> FakeSlurm:
    return FakeSlurm(
        {"node1": Node("node1", "allocated"), "node2": node2},
        {"train": Reservation("train", ["node1", "node2"])},
    )


def test_a_person_s_drain_is_not_overwritten_when_the_node_also_stops_answering(tmp_path):
    # Drained by hand with a reason that merely looks like ours, then its slurmd died.
    slurm = training(Node("node2", "idle", ["DRAIN", "NOT_RESPONDING"], reason="clusterops:x by hand"))
    mgr = manager(tmp_path, slurm)
    mgr.tick()
    assert ("down", "node2", "clusterops:x by hand") in slurm.changes  # DOWN, the person's reason kept
    assert all(reason == "clusterops:x by hand" for _, node, reason in slurm.changes if node == "node2")
    assert slurm.reservations_["train"].nodes == ["node1"]  # the failover itself still happened


def test_a_person_s_down_reason_is_not_overwritten_by_the_watcher_s_drain(tmp_path):
    slurm = training(Node("node2", "down", [], reason="bad DIMM, RMA 4411"))
    manager(tmp_path, slurm).tick()
    assert [c for c in slurm.changes if c[1] == "node2"] == [("drain", "node2", "bad DIMM, RMA 4411")]


def test_the_watcher_tags_its_own_drains_and_takes_over_slurm_s_not_responding(tmp_path):
    slurm = training(Node("node2", "down", [], reason="Not responding"))
    mgr = manager(tmp_path, slurm)
    mgr.tick()
    ((op, node, reason),) = [c for c in slurm.changes if c[1] == "node2"]
    assert (op, node) == ("drain", "node2") and reason.startswith("clusterops: spare: node down")
    key = ownership.load(mgr.drain_key_path, create=False)
    assert key.owns("node2", reason) and not key.owns("node1", reason)


# ---- the watcher's state file


def test_the_state_file_is_written_with_its_version_and_the_previous_format_reads(tmp_path):
    mgr = manager(tmp_path, training(Node("node2", "idle")))
    previous = {  # v1, as the watcher wrote it before formats carried versions
        "recoveries": [
            {
                "job_id": 7,
                "failed": "node2",
                "spare": "node3",
                "detected": 1.5,
                "requeued": True,
                "nudged": False,
            }
        ],
        "failovers": 3,
        "last_failover_s": 12.5,
    }
    mgr.state_file.parent.mkdir(parents=True)
    mgr.state_file.write_text(json.dumps(previous))
    state = mgr._load()
    assert (state.failovers, state.last_failover_s, state.recoveries[0].job_id) == (3, 12.5, 7)
    mgr._save(state)
    written = json.loads(mgr.state_file.read_text())
    assert written["v"] == STATE_VERSION and written["failovers"] == 3
    assert parse_state(written) == state


def test_a_newer_state_file_is_refused_with_one_line_and_left_as_it_is(tmp_path):
    slurm = training(Node("node2", "idle"))
    mgr = manager(tmp_path, slurm)
    mgr.state_file.parent.mkdir(parents=True)
    newer = json.dumps({"v": STATE_VERSION + 1, "failovers": 1, "recoveries": [], "shiny": {}})
    mgr.state_file.write_text(newer)
    with pytest.raises(StateFormatError) as e:
        mgr.tick()
    assert "newer than this clusterops knows" in str(e.value) and "\n" not in str(e.value)
    assert mgr.state_file.read_text() == newer


@pytest.mark.parametrize(
    "raw",
    [[], {"v": "2"}, {"v": True}, {"recoveries": [{"job_id": "x"}]}, {"failovers": -1}, {"recoveries": 5}],
)
def test_a_malformed_state_file_is_our_error(raw):
    with pytest.raises(StateFormatError):
        parse_state(raw)


def test_an_empty_state_reads_as_a_fresh_one():
    assert parse_state({}) == WatchState()


# ---- the node record in Slurm's Extra (written by spare/warmth.py)


def test_the_node_record_reads_the_previous_format_and_refuses_a_newer_one():
    previous = (
        'clusterops-warmth {"state":"warm","datasets_ready":true,"ckpt_step":7,"health":0,"updated":5.0}'
    )
    w = Warmth.decode(previous)
    assert (w.state, w.datasets_ready, w.ckpt_step, w.healthy) == ("warm", True, 7, True)
    current = json.loads(Warmth(state="warm", ckpt_step=7, updated=5.0).encode())
    assert current["clusterops"]["v"] == nodeinfo.FORMAT_VERSION
    # The next write moves a previous-format record to the current one.
    migrated = json.loads(nodeinfo.record_with("warmth", {"state": "cold"}, previous))
    assert migrated == {"clusterops": {"v": nodeinfo.FORMAT_VERSION, "warmth": {"state": "cold"}}}

    newer = json.dumps({"clusterops": {"v": nodeinfo.FORMAT_VERSION + 1, "warmth": {"state": "warm"}}})
    info = nodeinfo.read(newer)
    assert info.newer and "newer than this clusterops knows" in info.problem and "\n" not in info.problem
    assert Warmth.decode(newer).state == "cold"  # not interpreted
    with pytest.raises(SlurmError, match="newer"):
        nodeinfo.record_with("warmth", {"state": "warm"}, newer)


def test_a_planted_event_log_symlink_is_refused_and_the_watcher_goes_on(tmp_path, capsys):
    """The watcher runs as root: its event log planted as a symlink is not written through, and the
    failover it is logging is not stopped by that (the event goes to stderr, with why)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "events.ndjson").symlink_to(victim)
    mgr = manager(tmp_path, FakeSlurm({}, {}))
    event = mgr.event("failure_detected", node="node2", why="test")
    assert event["event"] == "spare.failure_detected" and event["node"] == "node2"
    assert victim.read_text() == "precious\n"
    err = capsys.readouterr().err
    assert "events.ndjson" in err and "spare.failure_detected" in err
