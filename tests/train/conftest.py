"""Fixtures for the trainer tests: a small synthetic corpus and a tiny, fast config."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be fetched from a hub here


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and the shared 2-core host suffers from oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A 128k-token synthetic corpus in datatrove layout (two shards with .index and .metadata)."""
    from clusterops.train.data import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("corpus"), vocab_size=256, tokens=1 << 17, seed=0)


def tiny_config(data_path, steps: int = 12, **train):
    from clusterops.train.config import from_dict

    raw = {
        "model": {"preset": "tiny"},
        "data": {"path": str(data_path), "seq_len": 64, "micro_batch": 4, "seed": 7},
        "train": {"steps": steps, "seed": 3, "dtype": "fp32", "threads": 1, "log_every": 1, **train},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 3, "schedule": "wsd", "decay_fraction": 0.2},
        "checkpoint": {"interval_s": 0.0},
    }
    return from_dict(raw, "test")
