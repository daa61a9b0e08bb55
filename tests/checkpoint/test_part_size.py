"""Upload part sizes respect S3's 10,000-part limit whatever the configured size."""

import pytest

from clusterops.checkpoint.transfer import MAX_PARTS, MiB, part_size_for

GiB = 1 << 30


@pytest.mark.parametrize("size", [1, 8 * MiB, 78 * GiB, 78 * GiB + 1, 200 * GiB, 1 << 40, 5 << 40])
def test_part_size_keeps_parts_within_the_limit(size):
    part = part_size_for(size, 8 * MiB)
    parts = -(-size // part)
    assert parts <= MAX_PARTS, (size, part, parts)
    assert part % MiB == 0 and part >= 8 * MiB
    if size <= 8 * MiB * MAX_PARTS:
        assert part == 8 * MiB  # no growth where none is needed
    else:
        assert -(-size // (part - MiB)) > MAX_PARTS  # the smallest whole-MiB size that fits
