"""What S3 and the checkpoint directory hand us is input: a manifest or `latest` with bad values, a FIFO
in a step directory, a missing bucket, a destination that is a symlink. Each ends in one line naming the
input and the fault, exit 2, and nothing written."""

from __future__ import annotations

import json
import os

import pytest

from tests.checkpoint.conftest import SMALL, make_checkpoint
from tests.conftest import run_cli

MANIFEST_KEY = "r/step-5/clusterops-manifest.json"


def _pushed(cli_env, tmp_path) -> None:
    L = tmp_path / "L"
    make_checkpoint(L / "step-5", SMALL)
    run_cli("ckpt", "commit", str(L / "step-5"), "--step", "5", env=cli_env, check=True)
    run_cli("ckpt", "push", "--remote", "s3://test/r", env=cli_env, check=True)


def _one_line(result, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("clusterops: "), result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _file0(m):
    return m["files"][0]


MANIFEST_FAULTS = {
    "infinite step": (lambda m: m.update(step=float("inf")), "step"),
    "string step": (lambda m: m.update(step="5"), "step = '5'"),
    "bool tokens": (lambda m: m.update(tokens_seen=True), "tokens_seen = True"),
    "negative size": (lambda m: _file0(m).update(size=-1), "files[0].size = -1"),
    "NaN size": (lambda m: _file0(m).update(size=float("nan")), "NaN"),
    "dotdot path": (lambda m: _file0(m).update(path="../escape"), "leaves the checkpoint directory"),
    "absolute path": (lambda m: _file0(m).update(path="/etc/x"), "leaves the checkpoint directory"),
    "control char": (lambda m: _file0(m).update(path="a\x1b[2Jb"), "not plain text"),
    "file and dir": (
        lambda m: m["files"].extend([dict(_file0(m), path="d"), dict(_file0(m), path="d/e")]),
        "as a file and as a directory",
    ),
    "bad crc": (lambda m: _file0(m).update(crc32c="zz"), "crc32c"),
    "dir_name escape": (lambda m: m.update(dir_name="../../step-5"), "dir_name"),
    "newer format": (lambda m: m.update(format="clusterops-checkpoint/3"), "newer than this clusterops"),
}


@pytest.mark.parametrize("fault", sorted(MANIFEST_FAULTS))
def test_a_bad_remote_manifest_is_one_line_and_nothing_is_pulled(s3, cli_env, tmp_path, fault):
    _pushed(cli_env, tmp_path)
    mutate, words = MANIFEST_FAULTS[fault]
    manifest = json.loads(s3.get_object(Bucket="test", Key=MANIFEST_KEY)["Body"].read())
    mutate(manifest)
    s3.put_object(Bucket="test", Key=MANIFEST_KEY, Body=json.dumps(manifest).encode())
    D = tmp_path / "D"
    r = run_cli("ckpt", "pull", "--remote", "s3://test/r", "--dest", str(D), env=cli_env)
    _one_line(r, "s3://test/r/step-5/clusterops-manifest.json", words)
    assert not D.exists() or list(D.iterdir()) == []
    assert not (tmp_path / "escape").exists()


LATEST_FAULTS = {
    "infinite step": (b'{"step": Infinity}', "Infinity"),
    "huge step": (b'{"step": 1e400}', "step = inf"),
    "bool step": (b'{"step": true}', "step = True"),
    "not an object": (b"[5]", "not a JSON object"),
    "deep nesting": (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
    "dir elsewhere": (b'{"step": 5, "dir": "../../x"}', "does not name step 5"),
    "newer format": (b'{"format": "clusterops-latest/2", "step": 5}', "newer than this clusterops"),
}


@pytest.mark.parametrize("fault", sorted(LATEST_FAULTS))
def test_a_bad_latest_is_one_line_and_nothing_is_pulled(s3, cli_env, tmp_path, fault):
    _pushed(cli_env, tmp_path)
    body, words = LATEST_FAULTS[fault]
    s3.put_object(Bucket="test", Key="r/latest", Body=body)
    D = tmp_path / "D"
    r = run_cli("ckpt", "pull", "--remote", "s3://test/r", "--dest", str(D), env=cli_env)
    _one_line(r, "s3://test/r/latest", words)
    assert not D.exists() or list(D.iterdir()) == []


def test_latest_and_manifest_in_the_previous_format_still_pull(s3, cli_env, tmp_path):
    """`latest` before it carried a format (version 0), a manifest in clusterops-checkpoint/1."""
    _pushed(cli_env, tmp_path)
    latest = json.loads(s3.get_object(Bucket="test", Key="r/latest")["Body"].read())
    assert latest["format"] == "clusterops-latest/1"
    del latest["format"]
    s3.put_object(Bucket="test", Key="r/latest", Body=json.dumps(latest).encode())
    manifest = json.loads(s3.get_object(Bucket="test", Key=MANIFEST_KEY)["Body"].read())
    assert manifest["format"] == "clusterops-checkpoint/2"
    manifest["format"] = "clusterops-checkpoint/1"
    s3.put_object(Bucket="test", Key=MANIFEST_KEY, Body=json.dumps(manifest).encode())
    D = tmp_path / "D"
    r = run_cli("ckpt", "pull", "--remote", "s3://test/r", "--dest", str(D), env=cli_env, check=True)
    assert "pulled and verified" in r.stdout
    assert (D / "step-5" / "__0_0.distcp").read_bytes() == (tmp_path / "L/step-5/__0_0.distcp").read_bytes()


def test_a_fifo_in_place_of_a_committed_file_does_not_hang_push(s3, cli_env, tmp_path):
    L = tmp_path / "L"
    make_checkpoint(L / "step-5", SMALL)
    run_cli("ckpt", "commit", str(L / "step-5"), "--step", "5", env=cli_env, check=True)
    (L / "step-5" / "__1_0.distcp").unlink()
    os.mkfifo(L / "step-5" / "__1_0.distcp")
    r = run_cli("ckpt", "push", "--remote", "s3://test/r", env=cli_env, timeout=60)
    _one_line(r, "__1_0.distcp", "not a regular file")
    assert s3.list_objects_v2(Bucket="test", Prefix="r/").get("KeyCount", 0) == 0


def test_a_fifo_in_a_step_dir_is_refused_at_commit(s3, cli_env, tmp_path):
    L = tmp_path / "L"
    make_checkpoint(L / "step-5", SMALL)
    os.mkfifo(L / "step-5" / "pipe")
    r = run_cli("ckpt", "commit", str(L / "step-5"), "--step", "5", env=cli_env, timeout=60)
    _one_line(r, "pipe", "not a regular file")


def test_a_missing_bucket_is_one_line(s3, cli_env, tmp_path):
    L = tmp_path / "L"
    make_checkpoint(L / "step-5", SMALL)
    run_cli("ckpt", "commit", str(L / "step-5"), "--step", "5", env=cli_env, check=True)
    _one_line(run_cli("ckpt", "push", "--remote", "s3://no-such-bucket/r", env=cli_env), "NoSuchBucket")
    D = tmp_path / "D"
    r = run_cli("ckpt", "pull", "--remote", "s3://no-such-bucket/r", "--dest", str(D), env=cli_env)
    _one_line(r, "NoSuchBucket")
    assert not D.exists()


def test_pull_into_a_destination_that_is_a_symlink_is_refused(s3, cli_env, tmp_path):
    _pushed(cli_env, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "D").symlink_to(elsewhere)
    r = run_cli("ckpt", "pull", "--remote", "s3://test/r", "--dest", str(tmp_path / "D"), env=cli_env)
    _one_line(r, "is a symlink")
    assert list(elsewhere.iterdir()) == []


def test_prune_outside_the_configured_root_through_a_symlink_is_refused(s3, cli_env, tmp_path):
    """`--local` is a link inside the configured root that points elsewhere: resolved, then refused."""
    outside = tmp_path / "outside"
    for n in (1, 2, 3):
        make_checkpoint(outside / f"step-{n}", {"a": 10})
        run_cli("ckpt", "commit", str(outside / f"step-{n}"), "--step", str(n), env=cli_env, check=True)
    (tmp_path / "L").mkdir()
    (tmp_path / "L" / "sub").symlink_to(outside)
    r = run_cli(
        "ckpt", "prune", "--local", str(tmp_path / "L" / "sub"), "--remote", "s3://test/r", "--keep", "1",
        env=cli_env,
    )  # fmt: skip
    _one_line(r, "outside the configured checkpoint root")
    assert sorted(p.name for p in outside.iterdir()) == ["step-1", "step-2", "step-3"]
