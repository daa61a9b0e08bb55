"""Drains are owned exactly: only a reason carrying clusterops' valid tag is ours. A look-alike reason,
a tag moved to another node, an edited text or a copied reason is someone else's, and never written over."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field, replace

import pytest

from clusterops import config as config_mod
from clusterops.errors import ConfigError
from clusterops.health import drain, ownership
from clusterops.health.model import CheckResult, Report
from clusterops.slurm.records import Node
from clusterops.verdict import Status


def cfg_at(tmp_path, prefix: str = "clusterops:") -> config_mod.Config:
    cfg = config_mod.Config()
    cfg.paths.state_dir = str(tmp_path / "nodes" / "{node}" / "state")
    cfg.health.drain_prefix = prefix
    return cfg


def test_a_reason_we_signed_is_ours_and_a_look_alike_is_not(tmp_path):
    key = drain.key(cfg_at(tmp_path))
    ours = key.sign("node1", "clusterops: gpu: GPU 3: row remap pending")
    assert ours.startswith("clusterops: gpu: GPU 3: row remap pending #co1.")
    assert key.owns("node1", ours)
    for fake in (
        "clusterops:x by hand",
        "clusterops: gpu: GPU 3: row remap pending",
        "clusterops:x by hand #co1.1764660000.0123456789abcdef",  # a tag-shaped suffix, made up
        ours.replace("row remap", "ROW remap"),  # our tag on an edited text
        ours + " ",
    ):
        assert not key.owns("node1", fake), fake
    assert not key.owns("node2", ours)  # our tag, moved to another node
    other = ownership.DrainKey(os.urandom(32))
    assert not other.owns("node1", ours)  # a node with another key cannot claim it


def test_a_copied_reason_set_long_after_its_tag_is_not_ours(tmp_path):
    key = drain.key(cfg_at(tmp_path))
    t = int(time.time())
    reason = key.sign("node1", "clusterops: gpu: bad", now=t)
    assert key.owns("node1", reason, set_at=t + 2)
    assert "copied" in key.why_not("node1", reason, set_at=t + 3 * 86400)


def test_signed_reasons_fit_slurm_and_scontrol(tmp_path):
    key = drain.key(cfg_at(tmp_path))
    reason = key.sign("node1", "clusterops: gpu: a=b  " + "x" * 400, limit=drain.REASON_MAX)
    assert len(reason) <= drain.REASON_MAX and "=" not in reason and "  " not in reason
    assert key.owns("node1", reason)


def test_the_key_file_is_made_once_root_only_and_nothing_else_is_trusted(tmp_path):
    cfg = cfg_at(tmp_path)
    path = ownership.key_path(cfg)
    # Shared by every node's state (the sandbox's {node} dirs): the watcher and each hook read the same.
    assert path == tmp_path / "nodes" / ".keys" / "drain.key"
    first = drain.key(cfg)
    st = os.lstat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(os.lstat(path.parent).st_mode) == 0o700
    reason = first.sign("node1", "clusterops: x")
    assert drain.key(cfg).owns("node1", reason)  # the same key, read back

    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        drain.key(cfg)
    os.chmod(path, 0o600)
    os.chmod(path.parent, 0o777)
    with pytest.raises(ConfigError, match="writable by it alone"):
        drain.key(cfg)
    os.chmod(path.parent, 0o700)

    # A planted symlink is refused, never followed.
    planted = tmp_path / "other" / ".keys"
    planted.mkdir(parents=True)
    (tmp_path / "elsewhere").write_bytes(b"k" * 32)
    os.symlink(tmp_path / "elsewhere", planted / "drain.key")
    with pytest.raises(ConfigError, match="symlink"):
        ownership.load(planted / "drain.key")
    # Without create, a missing key is an error naming the file; nothing is made.
    with pytest.raises(ConfigError, match="missing"):
        ownership.load(tmp_path / "k2" / "drain.key", create=False)


def test_an_empty_drain_prefix_is_a_config_error_not_a_match_for_everything(tmp_path):
    with pytest.raises(ConfigError, match="drain_prefix"):
        drain.prefix_of(cfg_at(tmp_path, prefix=""))
    with pytest.raises(ConfigError, match="drain_prefix"):
        drain.drain_if_critical(cfg_at(tmp_path, prefix="  "), critical_report(), FakeSlurm({}))


# ---- the drain path against a Slurm that answers from records (what the JSON gives)


@dataclass
class FakeSlurm:
    nodes_by_name: dict[str, Node]
    drains: list[tuple[str, str]] = field(default_factory=list)

    def node(self, name: str) -> Node:
        return self.nodes_by_name[name]

    def drain(self, node: str, reason: str) -> None:
        self.drains.append((node, reason))
        n = self.nodes_by_name[node]
        self.nodes_by_name[node] = replace(n, flags=[*n.flags, "DRAIN"], reason=reason, reason_time=None)


def critical_report(node: str = "node1") -> Report:
    bad = CheckResult("gpu", Status.CRITICAL, "GPU 3: row remap pending", 0.01)
    return Report(node, "healthcheck", "p5", "fixture", time.time(), 0.1, [bad])


def test_the_hook_never_rewrites_a_person_s_drain_or_down_reason(tmp_path):
    cfg = cfg_at(tmp_path)
    slurm = FakeSlurm(
        {
            "node1": Node("node1", "idle", ["DRAIN"], reason="clusterops:x by hand"),
            "node2": Node("node2", "down", [], reason="bad DIMM, RMA 4411"),
        }
    )
    assert drain.drain_if_critical(cfg, critical_report("node1"), slurm) == (
        "not-ours",
        "clusterops:x by hand",
    )
    assert drain.drain_if_critical(cfg, critical_report("node2"), slurm) == ("not-ours", "bad DIMM, RMA 4411")
    assert slurm.drains == []


def test_the_hook_drains_with_a_tag_and_knows_its_own_drain_again(tmp_path):
    cfg = cfg_at(tmp_path)
    slurm = FakeSlurm({"node1": Node("node1", "idle", [])})
    action, reason = drain.drain_if_critical(cfg, critical_report(), slurm)
    assert action == "drained" and reason.startswith("clusterops: gpu: GPU 3: row remap pending #co1.")
    assert drain.key(cfg).owns("node1", reason)
    assert drain.drain_if_critical(cfg, critical_report(), slurm) == ("already", reason)
    assert len(slurm.drains) == 1


@dataclass
class ListingSlurm(FakeSlurm):
    def nodes(self) -> list[Node]:
        return list(self.nodes_by_name.values())


def test_undrain_considers_only_drains_with_our_valid_tag(tmp_path, monkeypatch):
    from clusterops.health import undrain

    cfg = cfg_at(tmp_path)
    ours = drain.key(cfg).sign("node3", "clusterops: gpu: GPU 3: row remap pending")
    slurm = ListingSlurm(
        {
            "node1": Node("node1", "idle", ["DRAIN"], reason="clusterops:x by hand"),
            "node2": Node("node2", "idle", ["DRAIN"], reason=ours),  # node3's tag, copied onto node2
            "node3": Node("node3", "idle", ["DRAIN"], reason=ours),
        }
    )
    monkeypatch.setattr(drain, "client", lambda cfg: slurm)
    monkeypatch.setenv("SLURMD_NODENAME", "node9")
    # Of every drained node, only node3's drain is ours (its hardware is not here, so it is skipped).
    assert [(r.node, r.action) for r in undrain.undrain(cfg)] == [("node3", "skipped")]
    named = {r.node: r for r in undrain.undrain(cfg, ["node1", "node2"])}
    assert named["node1"].action == "not-ours" and "no clusterops tag" in named["node1"].why
    assert named["node2"].action == "not-ours" and "does not verify" in named["node2"].why
    # Without the key (not copied to this host), nothing is ours; each tagged drain says why.
    ownership.key_path(cfg).unlink()
    results = undrain.undrain(cfg)
    assert [(r.node, r.action) for r in results] == [("node2", "not-ours"), ("node3", "not-ours")]
    assert all("missing" in r.why for r in results)
