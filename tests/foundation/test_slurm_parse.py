"""The parsers against output recorded from real Slurm (tests/fixtures/slurm; 24.11 by record.py there).

22.05 prints openapi/v0.0.38 JSON, 24.11 data_parser/v0.0.42: both must give the same typed records,
and anything unreadable (truncated, mistyped, an unknown format) must be one SlurmError, never another
exception.
"""

import json
from pathlib import Path

import pytest

from clusterops.slurm import SlurmError
from clusterops.slurm.command import parse_jobs, parse_kv_line, parse_nodes, parse_reservations
from clusterops.slurm.normalize import parse_version
from clusterops.slurm.records import Job, Node, Reservation

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
REC24 = json.loads((FIX / "recorded-24.11.json").read_text())


def load(name: str):
    return json.loads((FIX / name).read_text())


# 22.05 (openapi/v0.0.38)


def test_nodes_from_real_sinfo():
    nodes = {n.name: n for n in parse_nodes(load("sinfo-22.05.json"))}
    assert sorted(nodes) == ["node1", "node2", "node3", "node4"]
    assert nodes["node3"].drained and nodes["node3"].reason == "clusterops: gpu: row remap pending"
    assert nodes["node3"].state == "idle" and nodes["node3"].flags == ["DRAIN"]
    assert not nodes["node3"].usable and nodes["node1"].usable
    assert nodes["node1"].partitions == ["main"] and nodes["node1"].cpus == 2
    assert nodes["node2"].address.endswith(".12")


def test_jobs_from_real_squeue():
    jobs = {j.job_id: j for j in parse_jobs(load("squeue-22.05.json"))}
    assert jobs[4].state == "RUNNING" and jobs[4].nodes == ["node1", "node2"] and jobs[4].active
    assert jobs[4].node_count == 2 and type(jobs[4].node_count) is int
    assert jobs[5].nodes == ["node1", "node2", "node3", "node4"]
    assert jobs[1].state == "COMPLETED" and not jobs[1].active and jobs[1].exit_code == 0
    assert jobs[2].state == "CANCELLED" and jobs[2].nodes == []
    assert all(j.user == "root" and j.restart_count == 0 and not j.held for j in jobs.values())


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


# 24.11 (data_parser/v0.0.42)


def test_version_from_sinfo_v():
    assert parse_version((FIX / "sinfo-V-24.11.txt").read_text()) == (24, 11, 5)
    assert parse_version("slurm 22.05.8\n") == (22, 5, 8)
    with pytest.raises(SlurmError, match="cannot read a Slurm version"):
        parse_version("sinfo: error: resolve_ctls_from_dns_srv\n")


@pytest.mark.parametrize("fixture", ["scontrol-nodes-24.11.json", "sinfo-24.11.json"])
def test_nodes_2411(fixture):
    nodes = {n.name: n for n in parse_nodes(load(fixture))}
    assert sorted(nodes) == ["node1", "node2"]
    drained, spare = nodes["node2"], nodes["node1"]
    # ["IDLE", "RESERVED", "DRAIN"]: a base state and its flags, as 22.05 gave them.
    assert drained.state == "idle" and "DRAIN" in drained.flags and "RESERVED" in drained.flags
    assert drained.drained and not drained.usable and drained.reason == REC24["drain_reason"]
    assert spare.state == "mixed" and spare.flags == [] and spare.usable and spare.reason == ""
    assert spare.extra == REC24["extra"] and drained.extra == ""
    assert all(n.partitions == ["main"] and n.cpus == 2 and type(n.cpus) is int for n in nodes.values())


def test_scontrol_nodes_carry_what_sinfo_aggregates_away():
    by_scontrol = {n.name: n for n in parse_nodes(load("scontrol-nodes-24.11.json"))}
    by_sinfo = {n.name: n for n in parse_nodes(load("sinfo-24.11.json"))}
    assert by_scontrol["node1"].address == "127.0.0.1"
    for name, n in by_sinfo.items():
        full = by_scontrol[name]
        assert (n.state, n.flags, n.reason, n.extra) == (full.state, full.flags, full.reason, full.extra)


def test_jobs_2411():
    jobs = {j.job_id: j for j in parse_jobs(load("squeue-all-24.11.json"))}
    run, held, failed = jobs[REC24["running"]], jobs[REC24["held"]], jobs[REC24["failed"]]
    assert run.state == "RUNNING" and run.active and run.nodes == ["node1"] and run.name == "train"
    assert run.node_count == 1 and type(run.node_count) is int and not run.held
    assert held.state == "PENDING" and held.held and held.reason == "JobHeldUser" and held.nodes == []
    assert failed.state == "FAILED" and failed.exit_code == 3 and failed.reason == "NonZeroExitCode"
    assert all(j.user == "root" and j.partition == "main" and j.restart_count == 0 for j in jobs.values())
    # Plain `squeue --json` on 24.11 lists unfinished jobs only; the backend asks with --states=all.
    unfinished = sorted(j.job_id for j in parse_jobs(load("squeue-24.11.json")))
    assert unfinished == sorted([run.job_id, held.job_id])


def test_one_job_2411():
    (by_squeue,) = parse_jobs(load("squeue-job-24.11.json"))
    (by_scontrol,) = parse_jobs(load("scontrol-job-24.11.json"))
    assert by_squeue == by_scontrol and by_scontrol.job_id == REC24["running"]
    (held,) = parse_jobs(load("scontrol-job-held-24.11.json"))
    assert held.held and held.reason == "JobHeldUser"
    (failed,) = parse_jobs(load("scontrol-job-failed-24.11.json"))
    assert failed.state == "FAILED" and failed.exit_code == 3
    # scontrol knows a finished job and answers an unknown one with an empty list (exit 0);
    # squeue --jobs shows neither.
    assert parse_jobs(load("squeue-job-failed-24.11.json")) == []
    assert parse_jobs(load("scontrol-nojob-24.11.json")) == []
    assert (FIX / "scontrol-nojob-24.11.rc").read_text().split()[0] == "0"
    assert "Invalid job id" in (FIX / "squeue-nojob-24.11.rc").read_text()


def test_reservations_2411():
    (res,) = parse_reservations(load("scontrol-reservations-24.11.json"))
    assert res.name == "training" and res.nodes == ["node2"] and res.users == ["root"]
    assert "IGNORE_JOBS" in res.flags and res.state == "ACTIVE"
    assert res.start < res.end and res.start.count("-") == 2 and "T" in res.start
    # The same text form as JSON, so callers need not know which scontrol answered.
    assert parse_reservations((FIX / "scontrol-reservations-24.11.json").read_text()) == [res]
    assert parse_reservations(load("scontrol-noreservations-24.11.json")) == []


def test_format_comes_from_meta_not_shape():
    payload = load("squeue-24.11.json")
    payload["meta"]["plugin"]["data_parser"] = ""
    with pytest.raises(SlurmError, match="unknown JSON format"):
        parse_jobs(payload)
    payload = load("sinfo-22.05.json")
    del payload["meta"]
    with pytest.raises(SlurmError, match="meta"):
        parse_nodes(payload)
    # A 22.05 payload labelled as 24.11's format is read as 24.11's, and fails on the field that differs.
    payload = load("squeue-22.05.json")
    payload["meta"]["plugin"]["data_parser"] = "data_parser/v0.0.42"
    with pytest.raises(SlurmError, match=r"jobs\[0\]\.job_state: expected a list of states, got string"):
        parse_jobs(payload)


def test_error_names_command_version_and_field():
    payload = load("squeue-24.11.json")
    payload["jobs"][1]["node_count"] = [1]
    with pytest.raises(SlurmError) as e:
        parse_jobs(payload, "squeue --json")
    assert str(e.value) == (
        "squeue --json (Slurm 24.11.5, data_parser/v0.0.42): jobs[1].node_count: expected a number, got list"
    )
    payload = load("scontrol-nodes-24.11.json")
    del payload["nodes"][0]["name"]
    with pytest.raises(SlurmError, match=r"nodes\[0\]\.name: missing"):
        parse_nodes(payload)
    payload = load("sinfo-24.11.json")
    del payload["sinfo"]
    with pytest.raises(SlurmError, match=r"sinfo --json \(Slurm 24.11.5.*\): nodes: missing"):
        parse_nodes(payload)


def test_unknown_data_parser_versions():
    newer = load("scontrol-nodes-24.11.json")
    newer["meta"]["plugin"]["data_parser"] = "data_parser/v0.0.43"
    assert [n.name for n in parse_nodes(newer)] == ["node1", "node2"]  # read with the newest reader
    del newer["nodes"][1]["state"]
    with pytest.raises(
        SlurmError,
        match=r"v0\.0\.43, newer than the newest known data_parser/v0\.0\.42\): "
        r"nodes\[1\]\.state: missing",
    ):
        parse_nodes(newer)
    for label, match in (
        ("data_parser/v0.0.30", "older than any known"),
        ("data_parser/latest", "not a data_parser version"),
    ):
        old = load("squeue-24.11.json")
        old["meta"]["plugin"]["data_parser"] = label
        with pytest.raises(SlurmError, match=match):
            parse_jobs(old)


# Fuzz: every path of every recorded payload, every type in its place, removed, and truncated text.

PARSERS = {
    "sinfo-22.05.json": parse_nodes,
    "squeue-22.05.json": parse_jobs,
    "sinfo-24.11.json": parse_nodes,
    "scontrol-nodes-24.11.json": parse_nodes,
    "squeue-all-24.11.json": parse_jobs,
    "scontrol-job-failed-24.11.json": parse_jobs,
    "scontrol-reservations-24.11.json": parse_reservations,
    "scontrol-noreservations-24.11.json": parse_reservations,
}
REPLACEMENTS = (
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    "",
    "x",
    "[",
    [],
    ["x"],
    [{}],
    {},
    {"set": True, "infinite": False, "number": 1},
    {"set": True, "infinite": True, "number": 0},
    {"set": "yes"},
)
FIELD_TYPES = {
    Node: {
        "name": str,
        "state": str,
        "flags": list,
        "reason": str,
        "partitions": list,
        "features": list,
        "address": str,
        "cpus": int,
        "extra": str,
    },
    Job: {
        "job_id": int,
        "name": str,
        "state": str,
        "nodes": list,
        "reason": str,
        "restart_count": int,
        "partition": str,
        "reservation": str,
        "user": str,
        "node_count": int,
        "flags": list,
        "held": bool,
    },
    Reservation: {
        "name": str,
        "nodes": list,
        "start": str,
        "end": str,
        "users": list,
        "flags": list,
        "state": str,
    },
}


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def outcome(parse, payload) -> str:
    """'ok' for a well-typed parse, 'error' for a SlurmError; anything else fails the test."""
    try:
        records = parse(payload)
    except SlurmError as e:
        assert str(e).strip() and "\n" not in str(e)
        return "error"
    assert isinstance(records, list)
    for rec in records:
        for name, typ in FIELD_TYPES[type(rec)].items():
            value = getattr(rec, name)
            assert type(value) is typ, (name, value)
            if typ is list:
                assert all(type(v) is str for v in value), (name, value)
    return "ok"


def checked(parse, payload, fixture, case) -> str:
    try:
        return outcome(parse, payload)
    except Exception as e:  # noqa: BLE001 - name the case that escaped
        raise AssertionError(f"{fixture} {case}: {type(e).__name__}: {e}") from e


@pytest.mark.parametrize("fixture", sorted(PARSERS))
def test_fuzz_mutated_fields(fixture):
    parse, original = PARSERS[fixture], load(fixture)
    seen = {"ok": 0, "error": 0}
    for path in list(paths(original)):
        for replacement in (*REPLACEMENTS, "<removed>"):
            if not path:  # the whole payload replaced
                if replacement != "<removed>":
                    seen[checked(parse, replacement, fixture, path)] += 1
                continue
            parent = original
            for key in path[:-1]:
                parent = parent[key]
            old = parent[path[-1]]
            if replacement == "<removed>":
                if isinstance(parent, list):
                    continue
                del parent[path[-1]]
            else:
                parent[path[-1]] = replacement
            try:
                seen[checked(parse, original, fixture, (*path, replacement))] += 1
            finally:
                parent[path[-1]] = old  # a removed key comes back last: order does not matter here
    assert seen["error"] > 0 and seen["ok"] > 0  # the mutations reach fields the parser reads, and others


@pytest.mark.parametrize("fixture", [*sorted(PARSERS), "reservations-22.05.txt"])
def test_fuzz_truncated_text(fixture):
    parse = PARSERS.get(fixture, parse_reservations)
    text = (FIX / fixture).read_text()
    step = max(1, len(text) // 300)
    for cut in range(0, len(text), step):
        checked(parse, text[:cut], fixture, f"cut at {cut}")
    assert outcome(parse, text) == "ok"
