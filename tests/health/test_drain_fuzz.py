"""Property tests: drain-reason parsing and tag checks, the node record and the watcher's state file.
Whatever the input, the outcome is a typed value or our own error, each case inside a time limit."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterops.health import ownership
from clusterops.slurm import nodeinfo
from clusterops.spare.manager import StateFormatError, WatchState, parse_state
from clusterops.spare.warmth import Warmth

LIMIT = settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
KEY = ownership.DrainKey(os.urandom(32))
NODE = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
# Reasons that look like ours: the prefix, free text, and a tag-shaped tail, plus anything at all.
TAGGY = st.builds(
    lambda text, t, mac: f"{text} #co1.{t}.{mac}",
    st.text(min_size=1, max_size=80),
    st.integers(min_value=0, max_value=10**12 - 1),
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
)
REASONS = st.one_of(st.text(max_size=300), TAGGY, st.just("clusterops:x by hand"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@LIMIT
@given(NODE, REASONS, st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40)))
def test_no_reason_not_signed_with_the_key_is_ever_ours(node, reason, set_at):
    tag = ownership.parse(reason)
    assert tag is None or isinstance(tag, ownership.Tag)
    assert KEY.owns(node, reason, set_at) is False
    assert isinstance(KEY.why_not(node, reason, set_at), str)


@LIMIT
@given(NODE, st.text(max_size=400).filter(lambda s: s.split()), st.integers(min_value=0, max_value=2**33))
def test_every_reason_we_sign_is_ours_on_that_node_only_and_fits_scontrol(node, text, now):
    reason = KEY.sign(node, text, limit=240, now=now)
    assert len(reason) <= 240 and "=" not in reason and reason == " ".join(reason.split())
    assert KEY.owns(node, reason, set_at=now)
    assert not KEY.owns(node + "x", reason, set_at=now)
    assert not KEY.owns(node, reason, set_at=now + ownership.REPLAY_WINDOW_S + 1)


@LIMIT
@given(
    st.one_of(
        st.text(max_size=400),
        JSON.map(lambda v: json.dumps(v)),
        JSON.map(lambda v: "clusterops-warmth " + json.dumps(v)),
    )
)
def test_the_node_record_parser_gives_a_record_whatever_the_extra(extra):
    info = nodeinfo.read(extra)
    assert isinstance(info, nodeinfo.NodeInfo) and isinstance(info.refusal(), str)
    assert isinstance(Warmth.decode(extra), Warmth)


@LIMIT
@given(st.dictionaries(st.sampled_from(["v", "recoveries", "failovers", "last_failover_s", "x"]), JSON))
def test_the_state_file_parser_gives_a_state_or_our_error(raw):
    try:
        assert isinstance(parse_state(raw), WatchState)
    except StateFormatError as e:
        assert "\n" not in str(e)
