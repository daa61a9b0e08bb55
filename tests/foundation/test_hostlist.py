import pytest

from clusterops.errors import UsageError
from clusterops.slurm.hostlist import expand


@pytest.mark.parametrize(
    "text,names",
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("node[1-2,7],gpu-a[08-10]", ["node1", "node2", "node7", "gpu-a08", "gpu-a09", "gpu-a10"]),
        ("p5-[001-002]-x", ["p5-001-x", "p5-002-x"]),
        ("a,b", ["a", "b"]),
    ],
)
def test_expand(text, names):
    assert expand(text) == names


def test_bad_range():
    with pytest.raises(UsageError, match="bad range"):
        expand("node[a-3]")
