"""Two processes over gloo: FSDP2 matches one process, TP=2 matches TP=1 over 20 steps from the same full
weights, and TP weight shards are distinct at init (the SmolLM3 seed bug makes them copies)."""

from __future__ import annotations

import json
import socket

import pytest

from clusterops.train import loop

from .conftest import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(corpus, tmp_path_factory):
    import torch.multiprocessing as mp

    from . import dist_worker

    out = tmp_path_factory.mktemp("dist")
    mp.spawn(dist_worker.main, args=(2, _free_port(), str(corpus), str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_fsdp2_on_two_processes_matches_one_process(two_ranks, corpus):
    reference = loop.run(tiny_config(corpus, steps=8)).losses  # micro_batch 4 in one process
    for rank in two_ranks:
        assert rank["fsdp"] == pytest.approx(reference, abs=1e-5)


def test_tp2_losses_match_tp1_over_20_steps(two_ranks, corpus):
    reference = loop.run(tiny_config(corpus, steps=20)).losses
    assert len(reference) == 20 and reference[-1] < reference[0]
    for rank in two_ranks:
        assert rank["tp"] == pytest.approx(reference, abs=1e-4)


def assert_tp_shards_distinct(shards: list[list[float]]) -> None:
    assert shards[0] != shards[1], "TP ranks initialised identical weight shards (one seed for every TP rank)"


def test_tp2_weight_shards_are_not_copies_at_init(two_ranks):
    assert_tp_shards_distinct(two_ranks[0]["seeded_shards"])


def test_the_check_fails_with_the_smollm3_seed_bug_reintroduced(two_ranks):
    with pytest.raises(AssertionError, match="identical weight shards"):
        assert_tp_shards_distinct(two_ranks[0]["buggy_shards"])
