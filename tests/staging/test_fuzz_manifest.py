"""Property tests over the staging manifest parser (issue 17): whatever the input, the outcome is a
Manifest or our own error, within a time limit per case."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterops.errors import ClusteropsError
from clusterops.staging import manifest as mf

CASE = settings(deadline=2000, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
paths = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["a", "b.ds", "..", ".", "", ".staging", "x y", "é", "\x00", "\\", "c:"]), max_size=5
    ).map("/".join),
)
entries = st.one_of(
    st.fixed_dictionaries(
        {"path": paths, "size": st.one_of(st.integers(min_value=-5, max_value=2**64), json_values)},
        optional={
            "crc32c": st.one_of(st.sampled_from(["00000000", "deadbeef", "DEADBEEF", "0"]), json_values)
        },
    ),
    json_values,
)
manifests = st.fixed_dictionaries(
    {"files": st.one_of(st.lists(entries, max_size=8), json_values)},
    optional={
        "version": st.one_of(st.integers(min_value=-1, max_value=4), json_values),
        "name": st.one_of(st.sampled_from(["fw", "../escape", "", "a" * 70]), json_values),
        "source": json_values,
        "fingerprint": json_values,
        "files_total": json_values,
        "bytes_total": json_values,
    },
)


def outcome(text: str) -> mf.Manifest | None:
    try:
        m = mf.parse(text, "fuzz.json")
    except ClusteropsError as e:
        assert str(e).startswith("fuzz.json") and "\n" not in str(e)
        return None
    assert isinstance(m, mf.Manifest)
    for f in m.files:
        assert mf.check_relpath(f.path) is None and 0 <= f.size < 2**63 and len(f.crc32c) == 8
    assert m.name == "" or mf.check_name(m.name) is None
    return m


@CASE
@given(manifests)
def test_structured_manifests_parse_or_fail_in_one_line(data):
    m = outcome(json.dumps(data, allow_nan=True))
    if m is not None:  # what parsed renders and parses back to the same set
        assert mf.parse(m.render()).fingerprint == m.fingerprint


@CASE
@given(st.text(max_size=300))
def test_any_text_parses_or_fails_in_one_line(text):
    outcome(text)


@CASE
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_in_one_line(data):
    try:
        m = mf.parse_bytes(data, "fuzz.json")
    except ClusteropsError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(m, mf.Manifest)


@CASE
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_one_line(depth, opener):
    outcome('{"files": [], "x": ' + opener * depth)
