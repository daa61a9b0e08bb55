"""Retention that never loses the only verified copy, and a sync that never runs twice at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from clusterops.checkpoint import layout, prune
from clusterops.checkpoint.push import push
from clusterops.checkpoint.transfer import Transfers
from clusterops.errors import UsageError
from tests.checkpoint.conftest import SMALL, make_checkpoint
from tests.conftest import REPO, run_cli


def _commit(root, step, sizes=SMALL):
    d = make_checkpoint(root / f"step-{step}", sizes)
    layout.commit(d, step)
    return d


def test_prune_keeps_a_local_checkpoint_until_its_s3_copy_is_verified(remote, tmp_path):
    root = tmp_path / "L"
    old, new = _commit(root, 10), _commit(root, 20)
    with Transfers(remote.client) as tx:
        push(root, remote, tx, "n1")  # only the newest, step 20, goes up

    actions = prune.prune_local(root, root, remote, keep=1)
    assert {(a.step, a.action) for a in actions} == {(20, "keep"), (10, "keep")}
    assert old.is_dir() and new.is_dir()
    assert "not verified" in next(a.reason for a in actions if a.step == 10)

    with Transfers(remote.client) as tx:
        push(root, remote, tx, "n1", step=10)
    # S3's copy of step 10 rotted: it is no longer a verified copy, so the local one must stay.
    remote.client.put_object(Bucket="test", Key="r/step-10/__1_0.distcp", Body=b"\1" * SMALL["__1_0.distcp"])
    assert {(a.step, a.action) for a in prune.prune_local(root, root, remote, keep=1)} == {
        (20, "keep"),
        (10, "keep"),
    }

    with Transfers(remote.client) as tx:
        push(root, remote, tx, "n1", step=10)  # repairs the object
    actions = prune.prune_local(root, root, remote, keep=1)
    assert {(a.step, a.action) for a in actions} == {(20, "keep"), (10, "delete")}
    assert not old.exists() and new.is_dir()
    assert [p.name for p in root.iterdir()] == ["step-20"]


def test_prune_never_touches_uncommitted_dirs_or_paths_outside_the_configured_root(remote, tmp_path):
    root = tmp_path / "L"
    make_checkpoint(root / "step-5", SMALL)  # a save in progress: no manifest
    _commit(root, 6)
    assert {(a.step, a.action) for a in prune.prune_local(root, root, remote, keep=1)} == {
        (5, "keep"),
        (6, "keep"),
    }
    with pytest.raises(UsageError, match="outside the configured checkpoint root"):
        prune.prune_local(tmp_path / "elsewhere", root, remote, keep=1)


def test_prune_cli_refuses_a_root_outside_the_configured_one(s3, cli_env, tmp_path):
    r = run_cli("ckpt", "prune", "--local", "/etc", "--remote", "s3://test/r", env=cli_env)
    assert r.returncode == 2
    assert (
        r.stderr.strip() == f"clusterops: /etc: outside the configured checkpoint root {tmp_path / 'L'}; "
        "refusing to delete there"
    )


def test_remote_retention_keeps_latest_newest_and_milestones(remote, tmp_path):
    root = tmp_path / "L"
    with Transfers(remote.client) as tx:
        for step in (100, 200, 300, 400):
            _commit(root, step, {"__0_0.distcp": 1000, ".metadata": 10})
            push(root, remote, tx, "n1")
    assert remote.latest().step == 400
    actions = prune.prune_remote(remote, keep=1, milestone_every=200)
    assert {(a.step, a.action) for a in actions} == {
        (400, "keep"),
        (300, "delete"),
        (200, "keep"),
        (100, "delete"),
    }
    assert remote.steps() == [200, 400]
    assert prune.prune_remote(remote, keep=0, milestone_every=0) == []  # 0: remote retention off


def test_two_overlapping_syncs_one_works_one_exits_0(s3, cli_env, tmp_path):
    root = tmp_path / "L"
    _commit(root, 50, {**SMALL, "__3_0.distcp": 6 << 20})
    # 1 MB/s keeps the first sync holding the lock for ~9 s, long enough for a second start on a busy host.
    slow = {**cli_env, "CLUSTEROPS_S3__BANDWIDTH_MBPS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "clusterops", "ckpt", "sync", "--remote", "s3://test/s"],
        env=slow,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "state" / "ckpt-sync.lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.05)
    second = run_cli("ckpt", "sync", "--remote", "s3://test/s", env=cli_env)
    out, err = first.communicate(timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"another ckpt sync holds {lock} (pid {first.pid}); nothing to do" in second.stdout
    assert first.returncode == 0, err
    assert "step 50: complete and verified" in out
    assert (tmp_path / "textfile" / "clusterops_ckpt.prom").is_file()
