"""fsutil.DirectWriter: O_DIRECT where a piece allows it, else the page cache; the same bytes either way."""

import errno
import os

import pytest

from clusterops import fsutil
from clusterops.fsutil import DirectWriter, aligned_buffer

PIECE = 256 << 10


def _direct_ok(path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
        return True
    except OSError:
        return False


def _write(path, data: bytes, buf, piece: int = PIECE) -> bool:
    """Write `data` in pieces through `buf`; whether O_DIRECT was still in use at the end."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    writer = DirectWriter(fd, path)
    view = memoryview(buf)
    try:
        for off in range(0, len(data), piece):
            n = min(piece, len(data) - off)
            view[:n] = data[off : off + n]
            writer.pwrite(view[:n], off)
        return writer.use_direct
    finally:
        writer.close()
        os.close(fd)


def test_aligned_pieces_go_direct_and_the_tail_through_the_cache(tmp_path):
    path = tmp_path / "f"
    if not _direct_ok(path):
        pytest.skip(f"{tmp_path}: this filesystem has no O_DIRECT")
    data = os.urandom(5 * PIECE + 1234)  # five aligned pieces and a tail of 1234 bytes
    assert _write(path, data, aligned_buffer(PIECE)), "an aligned piece from aligned memory was refused"
    assert path.read_bytes() == data


def test_unaligned_memory_falls_back_to_the_cache_without_losing_bytes(tmp_path):
    data = os.urandom(3 * PIECE)
    odd = memoryview(bytearray(PIECE + 1))[1:]  # odd address: O_DIRECT says EINVAL
    assert not _write(tmp_path / "f", data, odd)
    assert (tmp_path / "f").read_bytes() == data


def test_a_filesystem_without_o_direct_gets_ordinary_writes(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(fsutil.os, "open", no_direct)
    data = os.urandom(2 * PIECE + 7)
    assert not _write(tmp_path / "f", data, aligned_buffer(PIECE))
    assert (tmp_path / "f").read_bytes() == data
