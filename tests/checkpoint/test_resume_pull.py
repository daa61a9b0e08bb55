"""What a requeued job does on each node before it resumes: pull the whole checkpoint over its own part."""

from __future__ import annotations

from clusterops.checkpoint import layout
from tests.checkpoint.conftest import make_checkpoint
from tests.conftest import run_cli


def test_pull_replaces_this_nodes_part_with_the_whole_checkpoint(s3, cli_env, tmp_path):
    remote = "s3://test/run"
    halves = {"node1": {"a.bin": 300_000, "b.bin": 1000}, "node2": {"c.bin": 200_000, "d.bin": 10}}
    for node, files in halves.items():
        root = tmp_path / node / "L"
        make_checkpoint(root / "step-5", files)
        env = {**cli_env, "CLUSTEROPS_NODE": node}
        run_cli("ckpt", "commit", str(root / "step-5"), "--step", "5", "--parts", "2", env=env, check=True)
        run_cli("ckpt", "push", "--local", str(root), "--remote", remote, env=env, check=True)
    part = tmp_path / "node1" / "L" / "step-5"
    assert not layout.read_manifest(part).complete

    env = {**cli_env, "CLUSTEROPS_NODE": "node1"}
    r = run_cli(
        "ckpt", "pull", "--remote", remote, "--dest", str(tmp_path / "{node}" / "L"), env=env, check=True
    )
    assert "pulled and verified" in r.stdout
    whole = layout.read_manifest(part)
    assert whole.complete and sorted(whole.by_path()) == ["a.bin", "b.bin", "c.bin", "d.bin"]
    assert layout.verify(part).ok
    assert sorted(p.name for p in (tmp_path / "node1" / "L").iterdir()) == [
        "step-5"
    ]  # nothing set aside left

    # A local directory that is not a part of this checkpoint is never overwritten.
    other = tmp_path / "node3" / "L"
    make_checkpoint(other / "step-5", {"a.bin": 5})
    run_cli("ckpt", "commit", str(other / "step-5"), "--step", "5", "--parts", "2", env=env, check=True)
    refused = run_cli("ckpt", "pull", "--remote", remote, "--dest", str(other), env=env)
    assert refused.returncode != 0 and "move it away" in refused.stderr
    assert (other / "step-5" / "a.bin").stat().st_size == 5


def test_pull_missing_ok_on_a_first_start(s3, cli_env, tmp_path):
    r = run_cli(
        "ckpt",
        "pull",
        "--remote",
        "s3://test/empty",
        "--dest",
        str(tmp_path / "D"),
        "--missing-ok",
        "--json",
        env=cli_env,
    )
    assert r.returncode == 0 and "nothing to pull" in r.stdout
    plain = run_cli("ckpt", "pull", "--remote", "s3://test/empty", "--dest", str(tmp_path / "D"), env=cli_env)
    assert plain.returncode != 0
    assert not (tmp_path / "D").exists() or not any((tmp_path / "D").iterdir())
