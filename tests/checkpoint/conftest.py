"""Checkpoint test helpers: DCP-like checkpoint directories, CLI environments, the fault proxy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.checkpoint.faultproxy import FaultProxy, Faults


def make_checkpoint(step_dir: Path, sizes: dict[str, int]) -> Path:
    """A directory of random files, like a DCP save: {relative name: bytes}."""
    step_dir.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        p = step_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return step_dir


SMALL = {".metadata": 3000, "__0_0.distcp": 2 << 20, "__1_0.distcp": 700_000, "__2_0.distcp": 12_345}


@pytest.fixture
def remote(s3):
    """The checkpoint store under s3://test/r, through our own S3 client."""
    from clusterops import config
    from clusterops import s3 as s3mod
    from clusterops.checkpoint.remote import Remote

    return Remote(s3mod.client(config.Config().s3), "s3://test/r")


@pytest.fixture
def cli_env(s3, tmp_path):
    """Environment for the real CLI against the test S3 (bucket `test`), small parts, its own state dir."""
    cfg = tmp_path / "clusterops.toml"
    cfg.write_text(
        "[paths]\n"
        f'state_dir = "{tmp_path}/state"\n'
        f'textfile_dir = "{tmp_path}/textfile"\n'
        "[checkpoint]\n"
        f'local_root = "{tmp_path}/L"\n'
        "[s3]\n"
        'bucket = "test"\n'
        "multipart_chunk_mb = 5\n"
        "download_chunk_mb = 2\n"
        "max_attempts = 10\n"
    )
    (tmp_path / "textfile").mkdir()
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(cfg), "CLUSTEROPS_NODE": "node1"}
    return env


@pytest.fixture
def fault_proxy(s3_endpoint):
    faults = Faults()
    with FaultProxy(s3_endpoint, faults) as proxy:
        yield proxy, faults
