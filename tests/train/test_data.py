"""The loader: an index-free seeded shuffle, disjoint per-rank streams, documents from the index, exact
state save/restore, and memory that does not grow with the planned number of steps."""

from __future__ import annotations

import tracemalloc

import pytest

from clusterops.data.shards import ShardWriter
from clusterops.train.data import Permutation, TokenLoader


def test_permutation_is_a_seeded_bijection():
    for n in (1, 2, 7, 1000, 4097):
        values = [Permutation(n, seed=5)(i) for i in range(n)]
        assert sorted(values) == list(range(n))
    a = [Permutation(1000, seed=1)(i) for i in range(20)]
    assert a == [Permutation(1000, seed=1)(i) for i in range(20)]
    assert a != [Permutation(1000, seed=2)(i) for i in range(20)]
    assert a != list(range(20))  # shuffled, not document order


def test_ranks_read_disjoint_streams_that_cover_an_epoch(corpus):
    loaders = [TokenLoader(corpus, 64, micro_batch=4, rank=r, world=2, seed=3) for r in range(2)]
    n = len(loaders[0])
    seen = [[], []]
    for r, loader in enumerate(loaders):
        for _ in range(n // 8):
            seen[r] += loader.next_batch().samples
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 2 * 4 * (n // 8)


def test_documents_and_positions_come_from_the_index(tmp_path):
    with ShardWriter(tmp_path / "d.ds") as w:
        w.write([5, 6, 7])
        w.write([8, 9, 10, 11, 12])
        w.write([13, 14, 15, 16, 17, 18, 19, 20])
    loader = TokenLoader(tmp_path, seq_len=15, micro_batch=1)
    batch = loader.next_batch()
    assert batch.tokens[0].tolist() == list(range(5, 20))
    assert batch.targets[0].tolist() == list(range(6, 21))
    assert batch.doc_ids[0].tolist() == [0] * 3 + [1] * 5 + [2] * 7
    assert batch.positions[0].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]


def test_restored_state_continues_the_exact_order(corpus):
    a = TokenLoader(corpus, 64, micro_batch=4, rank=1, world=2, seed=9)
    for _ in range(5):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(3)]
    b = TokenLoader(corpus, 64, micro_batch=4, rank=1, world=2, seed=9)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        assert got.samples == want.samples
        assert got.tokens.equal(want.tokens)
    c = TokenLoader(corpus, 64, micro_batch=4, seed=10)
    with pytest.raises(ValueError, match="seed"):
        c.load_state_dict(state)


def _loader_bytes(corpus, planned_steps: int) -> int:
    """Peak Python memory to build the loader as the loop does and read the last planned batch."""
    from clusterops.train import loop

    from .conftest import tiny_config

    cfg = tiny_config(corpus, steps=planned_steps)
    tracemalloc.start()
    loader = TokenLoader(loop.data_root(cfg, _single()), cfg.data.seq_len, cfg.data.micro_batch, seed=1)
    loader.load_state_dict(
        {**loader.state_dict(), "samples_seen": (planned_steps - 1) * cfg.data.micro_batch}
    )
    loader.next_batch()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _single():
    from clusterops.train.parallel import Dist

    return Dist()


def test_loader_memory_at_3_2m_planned_steps_equals_that_at_32k(corpus):
    small = _loader_bytes(corpus, 32_000)
    large = _loader_bytes(corpus, 3_200_000)
    assert small < 1 << 20
    assert abs(large - small) <= 2048, (small, large)  # an index would add 16 B x 3.2M x batch = ~200 MB
    # And a permutation over a trillion windows costs the same few hundred bytes.
    tracemalloc.start()
    Permutation(10**12, seed=1)(10**12 - 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 10
