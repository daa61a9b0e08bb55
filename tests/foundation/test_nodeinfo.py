"""The per-node record in Slurm's Extra field: parsing and merging, then the record against a real Slurm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from clusterops.errors import UsageError
from clusterops.slurm import SlurmError, nodeinfo
from clusterops.spare.warmth import Warmth
from tests import conftest
from tests.conftest import run_cli

# ---------------------------------------------------------------------------------------------------------
# parse, merge, validate (no Slurm)


def test_empty_and_blank_extra_is_an_empty_record():
    for extra in ("", None, "   "):
        info = nodeinfo.read(extra)
        assert (info.entries, info.others, info.foreign_text, info.problem) == ({}, {}, None, "")
        assert info.refusal() == ""


def test_record_is_read_with_other_tools_keys():
    info = nodeinfo.read('{"clusterops":{"v":1,"warmth":{"state":"warm"}},"rack":"r12","gpu":{"n":8}}')
    assert info.version == 1
    assert info.entries == {"warmth": {"state": "warm"}}
    assert info.others == {"rack": "r12", "gpu": {"n": 8}}
    assert info.problem == "" and info.refusal() == ""


def test_merge_sets_only_our_key_and_keeps_every_other():
    base = '{"clusterops":{"v":1,"warmth":{"state":"warm"}},"rack":"r12"}'
    out = json.loads(nodeinfo.record_with("heartbeat", {"step": 5}, base))
    ours = {"v": 1, "warmth": {"state": "warm"}, "heartbeat": {"step": 5}}
    assert out == {"clusterops": ours, "rack": "r12"}
    # Compact, one line, ASCII: what scontrol gets as one argument.
    text = nodeinfo.record_with("warmth", {"detail": "café\nx"}, base)
    assert " " not in text and "\n" not in text and text.isascii()
    assert json.loads(text)["clusterops"]["warmth"] == {"detail": "café\nx"}


def test_clearing_the_last_key_removes_our_namespace_and_keeps_others():
    info = nodeinfo.read('{"clusterops":{"v":1,"warmth":{"state":"warm"}},"rack":"r12"}')
    assert nodeinfo.encode(info.merged("warmth", nodeinfo._DELETE)) == '{"rack":"r12"}'
    info = nodeinfo.read('{"clusterops":{"v":1,"warmth":{"state":"warm"}}}')
    assert nodeinfo.encode(info.merged("warmth", nodeinfo._DELETE)) == ""


@pytest.mark.parametrize(
    "extra",
    ["rack 12, maintenance", "not {json", "[1,2]", "42", '"a string"', '{"a":NaN}', "{" * 5000, "[" * 50000],
    ids=["text", "broken-json", "list", "number", "string", "nan", "open-braces", "deep-nesting"],
)
def test_foreign_or_garbage_extra_is_kept_verbatim_and_not_overwritten(extra):
    info = nodeinfo.read(extra)
    assert info.foreign_text == extra and info.entries == {} and info.problem
    assert "not overwriting" in info.refusal()
    with pytest.raises(SlurmError, match="not clusterops' record"):
        nodeinfo.record_with("warmth", {"state": "warm"}, extra)
    assert info.refusal(force=True) == ""  # forced: the operator said so


def test_newer_format_is_read_only_even_when_forced():
    extra = '{"clusterops":{"v":2,"warmth":{"state":"warm"},"new":1},"rack":"r12"}'
    info = nodeinfo.read(extra)
    assert info.newer and info.version == 2 and info.entries == {}  # not interpreted
    assert info.others == {"rack": "r12"}
    assert "v2, newer than this clusterops knows (v1)" in info.refusal(force=True)
    with pytest.raises(SlurmError, match="newer"):
        nodeinfo.record_with("warmth", {"state": "cold"}, extra)


@pytest.mark.parametrize("ours", ['"text"', "[1]", '{"warmth":{}}', '{"v":"1"}', '{"v":true}', '{"v":0}'])
def test_a_malformed_record_of_ours_is_reported_and_needs_force(ours):
    info = nodeinfo.read('{"clusterops":' + ours + ',"rack":"r12"}')
    assert info.problem and info.entries == {} and info.others == {"rack": "r12"}
    assert info.refusal() and info.refusal(force=True) == ""


def test_old_warmth_form_is_read_and_migrated_on_write():
    legacy = 'clusterops-warmth {"ckpt_step":7,"health":0,"state":"warm"}'
    info = nodeinfo.read(legacy)
    assert info.legacy and info.entries == {"warmth": {"ckpt_step": 7, "health": 0, "state": "warm"}}
    assert info.refusal() == ""  # ours: may be written over
    out = json.loads(nodeinfo.record_with("heartbeat", {"step": 1}, legacy))
    assert out == {"clusterops": {"v": 1, "warmth": info.entries["warmth"], "heartbeat": {"step": 1}}}
    broken = nodeinfo.read("clusterops-warmth {oops")
    assert broken.legacy and "unreadable" in broken.problem and broken.refusal() == ""


def test_unknown_key_is_refused():
    with pytest.raises(UsageError, match="unknown"):
        nodeinfo.check_key("warmthh")


@pytest.mark.parametrize(
    "value", [float("nan"), {"a": float("inf")}, [float("-inf")], {1, 2}, b"x", object()]
)
def test_values_are_plain_json_only(value):
    with pytest.raises(UsageError, match="not plain JSON"):
        nodeinfo.record_with("warmth", value)


def test_oversized_record_and_field_are_refused():
    big = {"detail": "x" * nodeinfo.MAX_RECORD_BYTES}
    with pytest.raises(UsageError, match="1024-byte limit"):
        nodeinfo.record_with("warmth", big)
    just_fits = {"d": "x" * (nodeinfo.MAX_RECORD_BYTES - len('{"v":1,"warmth":{"d":""}}'))}
    assert (
        len(
            json.dumps(
                json.loads(nodeinfo.record_with("warmth", just_fits))["clusterops"], separators=(",", ":")
            )
        )
        == nodeinfo.MAX_RECORD_BYTES
    )
    huge_foreign = json.dumps({"blob": "y" * nodeinfo.MAX_EXTRA_BYTES})
    with pytest.raises(UsageError, match="Extra would be"):
        nodeinfo.record_with("warmth", {"state": "warm"}, huge_foreign)


def test_warmth_round_trips_through_the_record_and_reads_the_old_form():
    w = Warmth(state="warm", datasets_ready=True, datasets=["fw"], ckpt_step=12, health=0, updated=5.5)
    assert Warmth.decode(w.encode()) == w
    assert json.loads(w.encode())["clusterops"]["warmth"]["ckpt_step"] == 12
    old = Warmth.decode('clusterops-warmth {"state":"warm","ckpt_step":7,"health":0}')
    assert (old.state, old.ckpt_step, old.healthy) == ("warm", 7, True)
    assert Warmth.decode("") == Warmth()


def test_warmth_reports_what_it_cannot_read():
    assert "not clusterops' record" in Warmth.decode("rack=12").detail
    assert "newer" in Warmth.decode('{"clusterops":{"v":9}}').detail
    w = Warmth.decode('{"clusterops":{"v":1,"warmth":{"state":"warm","ckpt_step":"7","health":true}}}')
    assert w.state == "warm" and w.ckpt_step is None and w.health is None
    assert "ckpt_step" in w.detail and "health" in w.detail
    assert Warmth.decode('{"clusterops":{"v":1,"warmth":[1]}}').detail == "unreadable warmth record"


def test_warmth_with_many_datasets_fits_the_record():
    names = [f"dataset-{i:03d}-with-a-long-name" for i in range(100)]
    w = Warmth(state="warm", datasets=names, detail="é" * 200, updated=1.0)
    record = w.to_record()
    assert len(json.dumps(record, separators=(",", ":"))) <= 700
    assert record["datasets_total"] == 100 and record["datasets"] == names[: len(record["datasets"])]
    back = Warmth.decode(w.encode())
    assert back.state == "warm" and back.datasets_total == 100


# ---------------------------------------------------------------------------------------------------------
# the record against a real Slurm, on every version: SANDBOX_FIXTURES names the fixture giving each
# version's sandbox (yielding (Sandbox, env)). The session `sandbox` runs the default release (24.11);
# 22.05 uses the session's 22.05 sandbox where conftest has one, else a module sandbox of its own.

SANDBOX_FIXTURES = {
    "22.05": "sandbox_2205" if hasattr(conftest, "sandbox_2205") else "nodeinfo_sandbox_2205",
    "24.11": "sandbox",
}
NODE = "node4"


@pytest.fixture(scope="module")
def nodeinfo_sandbox_2205():
    """A real 4-node Slurm 22.05 cluster (the host's packages) for this module."""
    if os.geteuid() != 0:
        pytest.fail("sandbox tests cannot run: the sandbox needs root")
    from clusterops.sandbox.cluster import Sandbox

    root = Path(tempfile.mkdtemp(prefix="co-nodeinfo-22.05-", dir="/var/tmp"))
    sb = Sandbox(root)
    try:
        state = sb.up(nodes=4, slurm="22.05", timeout=90)
        yield sb, {**os.environ, **sb.exports(state)}
    finally:
        sb.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=sorted(SANDBOX_FIXTURES))
def live(request):
    """(SlurmClient, Sandbox, env) for one real Slurm of the version in the test id; NODE's Extra blank
    before and after."""
    sb, env = request.getfixturevalue(SANDBOX_FIXTURES[request.param])
    client = sb.client()
    version = subprocess.run(["scontrol", "--version"], env=env, capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1].startswith(request.param), version.stdout
    client.set_extra(NODE, "")
    yield client, sb, env
    client.set_extra(NODE, "")


def _scontrol_extra(env, value: str) -> None:
    """An admin or another tool setting the whole field by hand."""
    argv = ["scontrol", "update", f"NodeName={NODE}", f"Extra={value}"]
    subprocess.run(argv, env=env, check=True, timeout=30)


def _extra(client) -> str:
    return client.node(NODE).extra


def test_live_two_writers_in_sequence_both_keys_survive(live):
    client, _, _ = live
    warm = Warmth(state="warm", ckpt_step=3, health=0, updated=1.0).to_record()
    nodeinfo.update(client, NODE, "warmth", warm)
    nodeinfo.update(client, NODE, "heartbeat", {"step": 40, "ts": 2.5})
    info = nodeinfo.read(_extra(client))
    assert info.entries == {"warmth": warm, "heartbeat": {"step": 40, "ts": 2.5}} and info.version == 1
    assert Warmth.decode(_extra(client)).ckpt_step == 3
    Warmth.clear(client, NODE)  # what `spare remove` does
    assert nodeinfo.read(_extra(client)).entries == {"heartbeat": {"step": 40, "ts": 2.5}}
    nodeinfo.clear(client, NODE, "heartbeat")
    assert _extra(client) == ""


def test_live_foreign_key_set_by_scontrol_survives_our_writes(live):
    client, sb, env = live
    _scontrol_extra(env, '{"rack":"r12","site":{"row":3}}')
    nodeinfo.update(client, NODE, "warmth", {"state": "warming"})
    nodeinfo.update(client, NODE, "warmth", {"state": "warm"})
    body = json.loads(_extra(client))
    assert body == {"rack": "r12", "site": {"row": 3}, "clusterops": {"v": 1, "warmth": {"state": "warm"}}}
    nodeinfo.clear(client, NODE, "warmth")
    assert json.loads(_extra(client)) == {"rack": "r12", "site": {"row": 3}}


def test_live_foreign_text_is_not_overwritten_unless_forced(live):
    client, sb, env = live
    _scontrol_extra(env, "rack 12 under maintenance")
    with pytest.raises(SlurmError, match="not clusterops' record"):
        nodeinfo.update(client, NODE, "warmth", {"state": "warm"})
    nodeinfo.clear(client, NODE, "warmth")  # nothing of ours there: no write
    assert _extra(client) == "rack 12 under maintenance"
    nodeinfo.update(client, NODE, "warmth", {"state": "warm"}, force=True)
    assert nodeinfo.read(_extra(client)).entries == {"warmth": {"state": "warm"}}


def test_live_newer_record_is_left_alone(live):
    client, sb, env = live
    newer = '{"clusterops":{"v":2,"warmth":{"s":1}}}'
    _scontrol_extra(env, newer)
    for act in (
        lambda: nodeinfo.update(client, NODE, "warmth", {"state": "warm"}, force=True),
        lambda: nodeinfo.clear(client, NODE, "warmth"),
    ):
        with pytest.raises(SlurmError, match="format v2, newer"):
            act()
    assert _extra(client) == newer
    assert "newer" in Warmth.decode(_extra(client)).detail


def test_live_old_warmth_form_is_migrated_on_next_write(live):
    client, sb, env = live
    _scontrol_extra(env, 'clusterops-warmth {"state":"warm","ckpt_step":7,"health":0}')
    assert Warmth.decode(_extra(client)).ckpt_step == 7
    nodeinfo.update(client, NODE, "heartbeat", {"step": 1})
    warmth = {"state": "warm", "ckpt_step": 7, "health": 0}
    assert json.loads(_extra(client)) == {"clusterops": {"v": 1, "warmth": warmth, "heartbeat": {"step": 1}}}


class _Raced:
    """A real client; right after our first write lands, a racing writer's stale read-modify-write lands
    too (the whole field as it was before ours, plus its own key), as two writers without a lock would."""

    def __init__(self, client) -> None:
        self.client = client
        self.writes = 0

    def node(self, name: str):
        return self.client.node(name)

    def set_extra(self, node: str, value: str) -> None:
        before = self.client.node(node).extra
        self.client.set_extra(node, value)
        self.writes += 1
        if self.writes == 1:
            self.client.set_extra(node, nodeinfo.record_with("heartbeat", {"step": 99}, before))


def test_live_a_racing_writer_is_detected_and_our_write_repeated(live):
    client, sb, env = live
    _scontrol_extra(env, '{"rack":"r12"}')
    raced = _Raced(sb.client())
    nodeinfo.update(raced, NODE, "warmth", {"state": "warm"})
    assert raced.writes == 2  # the first write was lost to the racer, seen, and made again
    assert json.loads(_extra(client)) == {
        "rack": "r12",
        "clusterops": {"v": 1, "warmth": {"state": "warm"}, "heartbeat": {"step": 99}},
    }


def test_live_concurrent_writers_of_different_keys_both_end_present(live):
    client, sb, env = live
    _scontrol_extra(env, '{"rack":"r12"}')
    rounds = 3
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(key: str) -> None:
        own = sb.client()
        try:
            for i in range(rounds):
                barrier.wait(timeout=60)  # start each round together: the reads overlap
                nodeinfo.update(own, NODE, key, {"round": i})
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(k,)) for k in ("warmth", "heartbeat")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    body = json.loads(_extra(client))
    assert body == {
        "rack": "r12",
        "clusterops": {"v": 1, "warmth": {"round": rounds - 1}, "heartbeat": {"round": rounds - 1}},
    }


def test_live_cli_slurm_nodes_json_shows_the_record(live):
    client, sb, env = live
    w = Warmth(state="warm", ckpt_step=9, health=0, updated=3.0)
    nodeinfo.update(client, NODE, "warmth", w.to_record())
    out = run_cli("slurm", "nodes", "--json", env=env, check=True)
    node = next(n for n in json.loads(out.stdout)["nodes"] if n["name"] == NODE)
    record = json.loads(node["extra"])  # the field as Slurm holds it: our compact record
    assert record["clusterops"]["v"] == 1 and record["clusterops"]["warmth"]["ckpt_step"] == 9
    assert Warmth.decode(node["extra"]) == w
