"""The built-in synthetic corpus is written by root on a shared host: it must never land where another user
pointed it. It lives in this user's own 0700 directory of the temp dir, checked before every use."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from clusterops.config import node_name
from clusterops.errors import UsageError
from tests.conftest import REPO, run_cli


def _cfg():
    from clusterops.train.config import from_dict

    return from_dict(
        {
            "model": {"preset": "tiny"},
            "data": {"path": "", "seq_len": 64, "micro_batch": 4, "synthetic_tokens": 1 << 14},
            "train": {"steps": 1, "dtype": "fp32", "threads": 1},
        }
    )


def _data_root(cfg) -> Path:
    from clusterops.train import loop
    from clusterops.train.parallel import Dist

    return loop.data_root(cfg, Dist())


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The temp dir the trainer sees: a directory of this test, not the machine's shared /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_symlink_planted_at_the_old_predictable_name_is_not_written_through(tmp_path):
    """Before: $TMPDIR/clusterops-synthetic-v<V>-t<T>-<node>, so a link planted there took root's writes."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    tokens = 1 << 20  # tiny.toml's default
    (tmp / f"clusterops-synthetic-v256-t{tokens}-{node_name()}").symlink_to(victim)
    config = tmp_path / "c.toml"
    config.write_text((REPO / "configs/tiny.toml").read_text())
    env = {**os.environ, "TMPDIR": str(tmp)}
    r = run_cli("train", "run", str(config), "--steps", "1", env=env, timeout=400)
    assert r.returncode == 0, r.stderr
    assert list(victim.iterdir()) == []
    private = tmp / f"clusterops-{os.getuid()}"
    assert (os.stat(private).st_mode & 0o777) == 0o700
    assert any(private.glob("clusterops-synthetic-*/*.ds"))


def test_the_corpus_is_written_in_a_private_directory(private_tmp):
    root = _data_root(_cfg())
    private = private_tmp / f"clusterops-{os.getuid()}"
    assert root.parent == private and any(root.glob("*.ds"))
    st = os.lstat(private)
    assert st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700


def test_a_symlink_planted_as_the_private_directory_is_refused(private_tmp, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (private_tmp / f"clusterops-{os.getuid()}").symlink_to(victim)
    with pytest.raises(UsageError, match="not a plain directory"):
        _data_root(_cfg())
    assert list(victim.iterdir()) == []


def test_a_private_directory_others_can_write_is_refused(private_tmp):
    d = private_tmp / f"clusterops-{os.getuid()}"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    with pytest.raises(UsageError, match="mode 777"):
        _data_root(_cfg())
    assert list(d.iterdir()) == []
