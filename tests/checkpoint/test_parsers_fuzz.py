"""Property tests over the checkpoint manifest and `latest` parsers: whatever bytes S3 or a step directory
hands them, the outcome is a typed record or our own one-line error, never anything else, never a hang."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterops.checkpoint.layout import FORMAT, Manifest, parse_step
from clusterops.checkpoint.remote import Latest, parse_latest
from clusterops.errors import ClusteropsError
from tests.conftest import time_limit

LIMIT_S = 2  # per case: a parser that needs longer on a few KiB is a bug
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

paths = st.one_of(
    st.sampled_from(
        [".metadata", "__0_0.distcp", "a/b", "../x", "/abs", "a//b", "./a", "a\x00b", "", "a\nb", "a", "a/c"]
    ),
    st.text(max_size=30),
)

files = st.lists(
    st.fixed_dictionaries(
        {
            "path": paths,
            "size": json_values | st.integers(0, 2**40),
            "crc32c": st.sampled_from(["1a2b3c4d", "x"]),
        }
    ),
    max_size=5,
)

manifests = st.fixed_dictionaries(
    {
        "format": st.sampled_from([FORMAT, "clusterops-checkpoint/1", "clusterops-checkpoint/9", "x/1"])
        | json_values,
        "step": st.integers(-5, 2**64) | json_values,
        "files": files | json_values,
    },
    optional={
        "tokens_seen": st.integers(-1, 2**64) | json_values,
        "dir_name": st.sampled_from(["step-5", "../step-5", "step-5/x", ""]) | json_values,
        "expected_files": st.none() | st.lists(paths, max_size=3) | json_values,
        "parts": st.none() | st.integers(-1, 5) | json_values,
        "complete": st.booleans() | json_values,
        "extra": st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values,
        "host": st.text(max_size=10) | json_values,
        "created_at": st.text(max_size=10) | json_values,
    },
)


def _check_manifest(data: bytes) -> None:
    with time_limit(LIMIT_S):
        try:
            m = Manifest.from_bytes(data, "fuzz")
        except ClusteropsError as e:
            assert "\n" not in str(e).strip() and str(e).startswith("fuzz")
            return
    assert isinstance(m.step, int) and m.step >= 0
    assert all(isinstance(f.size, int) and f.size >= 0 for f in m.files)
    assert all(not f.path.startswith("/") and ".." not in f.path.split("/") for f in m.files)
    assert not m.dir_name or parse_step(m.dir_name) is not None
    Manifest.from_bytes(m.to_bytes(), "again")  # what we parse, we can write and read back


@FUZZ
@given(manifests)
def test_manifest_from_structured_json(d):
    _check_manifest(json.dumps(d).encode())


@FUZZ
@given(st.binary(max_size=2000))
def test_manifest_from_any_bytes(data):
    _check_manifest(data)


@FUZZ
@given(st.integers(1, 50_000), st.sampled_from([b"[", b'{"a":']))
def test_manifest_deeply_nested(depth, opener):
    _check_manifest(opener * depth)


latests = st.dictionaries(
    st.sampled_from(["format", "step", "dir", "manifest", "updated_at", "host", "other"]),
    json_values
    | st.sampled_from(["clusterops-latest/1", "clusterops-latest/0", "clusterops-latest/7", "step-5"]),
    max_size=6,
)


def _check_latest(data: bytes) -> None:
    with time_limit(LIMIT_S):
        try:
            latest = parse_latest(data, "fuzz")
        except ClusteropsError as e:
            assert "\n" not in str(e).strip() and str(e).startswith("fuzz")
            return
    assert isinstance(latest, Latest) and isinstance(latest.step, int) and latest.step >= 0
    assert latest.format in (0, 1)


@FUZZ
@given(latests)
def test_latest_from_structured_json(d):
    _check_latest(json.dumps(d).encode())


@FUZZ
@given(st.binary(max_size=500) | st.text(max_size=200).map(str.encode))
def test_latest_from_any_bytes(data):
    _check_latest(data)


def test_the_properties_see_both_outcomes():
    """The generators reach valid records, not only errors."""
    good = {"format": FORMAT, "step": 5, "files": [{"path": "a", "size": 1, "crc32c": "1a2b3c4d"}]}
    assert Manifest.from_bytes(json.dumps(good).encode(), "x").step == 5
    assert parse_latest(b'{"step": 5}', "x").format == 0
    assert parse_latest(b'{"format": "clusterops-latest/1", "step": 5, "dir": "step-5"}', "x").step == 5
