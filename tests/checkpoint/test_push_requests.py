"""A push checks each file it uploaded against S3's record once (not again before the manifest), and the
node that completes a multi-node checkpoint still checks every other node's files."""

from __future__ import annotations

from clusterops.checkpoint import layout
from clusterops.checkpoint.push import push
from clusterops.checkpoint.transfer import Transfers
from tests.checkpoint.conftest import SMALL, make_checkpoint


def count_heads(client) -> list[str]:
    keys: list[str] = []
    client.meta.events.register(
        "before-parameter-build.s3.HeadObject", lambda params, **kw: keys.append(params["Key"])
    )
    return keys


def test_a_fresh_push_heads_each_file_once(remote, tmp_path):
    root = tmp_path / "L"
    layout.commit(make_checkpoint(root / "step-10", SMALL), 10)
    heads = count_heads(remote.client)
    with Transfers(remote.client) as tx:
        result = push(root, remote, tx, "n1")
    assert result.state == "complete"
    assert sorted(heads) == sorted(f"r/step-10/{name}" for name in SMALL)
    assert remote.latest().step == 10


def test_the_completing_node_still_checks_the_other_nodes_files(remote, tmp_path):
    halves = {"n1": {"__0_0.distcp": 300_000}, "n2": {"__1_0.distcp": 200_000}}
    roots = {}
    for node, files in halves.items():
        roots[node] = tmp_path / node
        layout.commit(make_checkpoint(roots[node] / "step-20", files), 20, parts=2)
    with Transfers(remote.client) as tx:
        assert push(roots["n2"], remote, tx, "n2").state == "waiting"
    # n2's object rots in S3 after n2 verified it: n1, completing the set, must not trust n2's check.
    remote.client.put_object(Bucket="test", Key="r/step-20/__1_0.distcp", Body=b"\0" * 200_000)
    heads = count_heads(remote.client)
    with Transfers(remote.client) as tx:
        result = push(roots["n1"], remote, tx, "n1")
    assert result.state == "waiting" and result.missing == ["__1_0.distcp"]
    assert remote.manifest(20) is None and remote.latest() is None
    assert sorted(heads) == ["r/step-20/__0_0.distcp", "r/step-20/__1_0.distcp"]
