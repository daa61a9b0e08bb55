"""Shard files and `data prepare` output trust nothing they read (issue 17): one line, exit 2, nothing
written outside the output folder, never through a planted symlink."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from clusterops.data import shards
from clusterops.errors import ClusteropsError
from tests.conftest import run_cli


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    (tmp_path / "in.txt").write_text("hello world")
    r = run_cli("data", "prepare", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    return tmp_path / "out"


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def test_inspect_takes_a_shard_file_directly(shard_dir):
    r = run_cli("data", "inspect", str(shard_dir / "shard_00000.ds"))
    assert r.returncode == 0 and "1 shards" in r.stdout, r.stderr
    # Its index or metadata names the same shard.
    for sibling in ("shard_00000.ds.index", "shard_00000.ds.metadata"):
        r = run_cli("data", "inspect", str(shard_dir / sibling))
        assert r.returncode == 0 and "shard_00000.ds:" in r.stdout, r.stderr


def test_inspect_of_a_file_that_is_no_shard_is_one_line(shard_dir, tmp_path):
    line = one_error_line(run_cli("data", "inspect", str(tmp_path / "in.txt")))
    assert "in.txt" in line and "not a shard" in line and "ValueError" not in line
    line = one_error_line(run_cli("data", "inspect", str(tmp_path / "missing")))
    assert "no such file" in line


@pytest.mark.parametrize(
    "metadata, words",
    [
        ("byte|2\n1_1\n", "line 2: token count"),
        ("byte|2\n-5\n", "line 2: token count"),
        ("byte|2\n99999999999999999999\n", "line 2: token count"),
        ("byte|3\n11\n", "token size 3"),
        ("by\x01te|2\n11\n", "control character"),
        ("byte|2\n", "two lines"),
    ],
)
def test_bad_metadata_is_named(shard_dir, metadata, words):
    (shard_dir / "shard_00000.ds.metadata").write_text(metadata)
    r = run_cli("data", "inspect", str(shard_dir))
    assert r.returncode == 2 and words in r.stdout, (r.stdout, r.stderr)


def test_unicode_digit_token_size_is_no_traceback(shard_dir):
    """`isdigit()` took '²' and int() then raised: a ValueError escaped validate_shard."""
    (shard_dir / "shard_00000.ds.metadata").write_text("byte|²\n12\n12 T\n")
    r = run_cli("data", "inspect", str(shard_dir))
    assert r.returncode == 0 and "ok " in r.stdout and "ValueError" not in r.stderr, (r.stdout, r.stderr)
    with shards.Shard(shard_dir / "shard_00000.ds") as s:
        assert s.metadata is not None and s.metadata.tokenizer == "byte|²" and s.token_size == 2


def test_metadata_that_is_a_fifo_does_not_hang(shard_dir):
    meta = shard_dir / "shard_00000.ds.metadata"
    meta.unlink()
    os.mkfifo(meta)
    with pytest.raises(shards.ShardError, match="not a regular file"):
        shards.read_metadata(meta)
    r = run_cli("data", "inspect", str(shard_dir), timeout=30)
    assert r.returncode == 2 and "not a regular file" in r.stdout


def test_bad_index_is_named(shard_dir):
    index = shard_dir / "shard_00000.ds.index"
    index.write_bytes(struct.pack("<2Q", 9, 3))
    r = run_cli("data", "inspect", str(shard_dir))
    assert r.returncode == 2 and "entry 1 (3) is below the one before (9)" in r.stdout
    with pytest.raises(shards.ShardError, match="below the one before"):
        shards.parse_index(index.read_bytes(), 12, str(index))
    assert shards.parse_index(struct.pack("<2Q", 3, 12), 12) == shards.ShardIndex(2, 12)
    for data, count in ((b"\0" * 9, None), (struct.pack("<Q", 5), 6), (b"", 4)):
        with pytest.raises(ClusteropsError):
            shards.parse_index(data, count)


def test_shard_error_is_ours_and_still_a_value_error():
    assert issubclass(shards.ShardError, ClusteropsError) and issubclass(shards.ShardError, ValueError)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".hidden", "x" * 65, "a\nb"])
def test_prepare_name_cannot_leave_the_output_folder(tmp_path, name):
    (tmp_path / "in.txt").write_text("hello")
    out = tmp_path / "deep" / "out"
    line = one_error_line(
        run_cli("data", "prepare", str(tmp_path / "in.txt"), "-o", str(out), "--name", name)
    )
    assert "--name" in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.txt"]


def test_prepare_never_writes_through_a_planted_symlink(tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # The temp names the writer used before: a user who can write to the folder plants them.
    for name in (".shard_00000.ds.part", ".shard_00000.ds.index.part", ".shard_00000.ds.metadata.part"):
        (out / name).symlink_to(victim)
    r = run_cli("data", "prepare", str(tmp_path / "in.txt"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious"
    assert shards.validate_shard(out / "shard_00000.ds").ok


def test_prepare_output_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere)
    line = one_error_line(run_cli("data", "prepare", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out")))
    assert "symlink" in line
    assert list(elsewhere.iterdir()) == []
