"""Crashes and a misbehaving S3: kill -9 mid-push, 503s, connection resets and cut bodies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.checkpoint.conftest import SMALL, make_checkpoint
from tests.conftest import REPO, run_cli


def _keys(s3, prefix: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket="test", Prefix=prefix).get("Contents", [])}


def test_kill_9_mid_push_then_rerun_completes_and_nothing_pointed_at_partial_data(s3, cli_env, tmp_path):
    L, D = tmp_path / "L", tmp_path / "D"
    make_checkpoint(L / "step-300", {**SMALL, "__3_0.distcp": 24 << 20, "__4_0.distcp": 3 << 20})
    run_cli("ckpt", "commit", str(L / "step-300"), "--step", "300", env=cli_env, check=True)
    slow = {**cli_env, "CLUSTEROPS_S3__BANDWIDTH_MBPS": "8", "CLUSTEROPS_S3__MAX_CONCURRENCY": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterops", "ckpt", "push", "--remote", "s3://test/k"],
        env=slow,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not _keys(s3, "k/step-300/") and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    landed = _keys(s3, "k/")
    assert landed, "the push was killed before it uploaded anything"
    assert "k/step-300/clusterops-manifest.json" not in landed
    assert "k/latest" not in landed

    done = run_cli("ckpt", "push", "--remote", "s3://test/k", env=cli_env, check=True)
    assert "step 300: complete and verified" in done.stdout
    run_cli("ckpt", "pull", "--remote", "s3://test/k", "--dest", str(D), env=cli_env, check=True)
    assert subprocess.run(["diff", "-r", str(L), str(D)]).returncode == 0


def test_push_and_pull_complete_through_503s_resets_and_cut_bodies(s3, cli_env, tmp_path, fault_proxy):
    proxy, faults = fault_proxy
    L, D = tmp_path / "L", tmp_path / "D"
    make_checkpoint(L / "step-400", {**SMALL, "__3_0.distcp": 12 << 20})
    run_cli("ckpt", "commit", str(L / "step-400"), "--step", "400", env=cli_env, check=True)
    env = {**cli_env, "AWS_ENDPOINT_URL": proxy.url}
    faults.slowdown_every, faults.reset_every, faults.truncate_every = 5, 7, 2

    pushed = run_cli("ckpt", "push", "--remote", "s3://test/f", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "step 400: complete and verified" in pushed.stdout
    pulled = run_cli("ckpt", "pull", "--remote", "s3://test/f", "--dest", str(D), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert subprocess.run(["diff", "-r", str(L), str(D)]).returncode == 0

    happened = {what for _, _, what in faults.log}
    assert {"503", "reset-before", "reset-after", "truncated"} <= happened, happened
    # Marker order on the wire: no data write after the manifest, and latest only after the manifest.
    writes = [(m, p) for m, p, what in faults.log if m in ("PUT", "POST") and what == "200"]
    paths = [p.split("?")[0] for _, p in writes]
    manifest_at = max(i for i, p in enumerate(paths) if p.endswith("/clusterops-manifest.json"))
    latest_at = max(i for i, p in enumerate(paths) if p.endswith("/f/latest"))
    data_at = [i for i, p in enumerate(paths) if "/step-400/__" in p or p.endswith("/.metadata")]
    assert max(data_at) < manifest_at < latest_at


def test_exit_code_tells_the_truth_when_s3_keeps_failing(s3, cli_env, tmp_path, fault_proxy):
    proxy, faults = fault_proxy
    L = tmp_path / "L"
    make_checkpoint(L / "step-9", SMALL)
    run_cli("ckpt", "commit", str(L / "step-9"), "--step", "9", env=cli_env, check=True)
    faults.slowdown_every = 1  # every request: SlowDown
    env = {**cli_env, "AWS_ENDPOINT_URL": proxy.url, "CLUSTEROPS_S3__MAX_ATTEMPTS": "2"}
    r = run_cli("ckpt", "push", "--remote", "s3://test/e", env=env)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not _keys(s3, "e/")
