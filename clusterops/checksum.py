"""CRC32C, the checksum S3 stores and returns itself, so a manifest entry can be checked against S3's
own record without downloading. awscrt computes it in hardware (~4 GB/s on one core here)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

from awscrt import checksums

CHUNK = 8 << 20


def crc32c_update(crc: int, data: bytes | memoryview) -> int:
    return checksums.crc32c(data, crc)


def crc32c_file(path: str | os.PathLike[str], progress: Callable[[int], None] | None = None) -> int:
    crc = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = checksums.crc32c(view[:n], crc)
            if progress:
                progress(n)
    return crc


def to_hex(crc: int) -> str:
    return f"{crc:08x}"


def to_s3(crc: int) -> str:
    """The base64 form S3 uses in ChecksumCRC32C headers."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def from_s3(value: str) -> int:
    return int.from_bytes(base64.b64decode(value), "big")
