"""Property tests over the shard metadata and index parsers (issue 17): a typed value or our own error,
within a time limit per case."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterops.data import shards
from clusterops.errors import ClusteropsError

CASE = settings(deadline=2000, max_examples=300)

lines = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[a-z]{0,8}\|[0-9²٣]{0,3}", fullmatch=True),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


@CASE
@given(st.one_of(st.text(max_size=200), st.lists(lines, max_size=4).map("\n".join)))
def test_metadata_parses_or_fails_in_one_line(text):
    try:
        meta = shards.parse_metadata(text, "m.ds.metadata")
    except ClusteropsError as e:
        assert str(e).startswith("m.ds.metadata") and "\n" not in str(e)
    else:
        assert isinstance(meta, shards.ShardMetadata)
        assert meta.token_size in (None, 2, 4) and 0 <= meta.token_count < 2**63
        assert shards.parse_metadata(meta.render(), "again").token_count == meta.token_count


@CASE
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.integers(0, 2**64 - 1), max_size=30).map(
            lambda ends: struct.pack(f"<{len(ends)}Q", *ends)
        ),
        st.lists(st.integers(0, 1000), max_size=30).map(lambda xs: struct.pack(f"<{len(xs)}Q", *sorted(xs))),
    ),
    st.one_of(st.none(), st.integers(0, 2**64)),
)
def test_index_parses_or_fails_in_one_line(data, token_count):
    try:
        index = shards.parse_index(data, token_count, "i.ds.index")
    except ClusteropsError as e:
        assert str(e).startswith("i.ds.index") and "\n" not in str(e)
    else:
        assert isinstance(index, shards.ShardIndex) and index.documents == len(data) // 8
        if token_count is not None and index.documents:
            assert index.last_end == token_count
