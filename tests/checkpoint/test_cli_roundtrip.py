"""The operator's path through the real CLI: commit, push, status, pull; and what fails, fails loudly."""

from __future__ import annotations

import json
import subprocess

from tests.checkpoint.conftest import SMALL, make_checkpoint
from tests.conftest import run_cli


def test_commit_push_status_pull_reproduces_the_checkpoint_byte_for_byte(s3, cli_env, tmp_path):
    L, D = tmp_path / "L", tmp_path / "D"
    make_checkpoint(L / "step-100", {**SMALL, "__3_0.distcp": 11 << 20})  # > one 5 MiB part: multipart
    run_cli("ckpt", "commit", str(L / "step-100"), "--step", "100", env=cli_env, check=True)

    pushed = run_cli(
        "ckpt", "push", "--local", str(L), "--remote", "s3://test/ckpts", env=cli_env, check=True
    )
    assert "step 100: complete and verified" in pushed.stdout

    st = run_cli("ckpt", "status", "--local", str(L), "--remote", "s3://test/ckpts", "--json", env=cli_env)
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["remote_latest"] == 100
    assert [(e["step"], e["uploaded"], e["verified"]) for e in status["local"]] == [(100, True, True)]
    prom = (tmp_path / "textfile" / "clusterops_ckpt.prom").read_text()
    assert 'clusterops_ckpt_upload_lag_seconds{remote="s3://test/ckpts"} 0' in prom
    assert "clusterops_ckpt_newest_upload_age_seconds" in prom

    pulled = run_cli("ckpt", "pull", "--remote", "s3://test/ckpts", "--dest", str(D), env=cli_env, check=True)
    assert "pulled and verified" in pulled.stdout
    assert subprocess.run(["diff", "-r", str(L), str(D)]).returncode == 0

    again = run_cli("ckpt", "pull", "--remote", "s3://test/ckpts", "--dest", str(D), env=cli_env, check=True)
    assert "already here and verified" in again.stdout

    # S3 order: manifest and latest exist; the manifest object is the local manifest, byte for byte.
    body = s3.get_object(Bucket="test", Key="ckpts/step-100/clusterops-manifest.json")["Body"].read()
    assert body == (L / "step-100" / "clusterops-manifest.json").read_bytes()
    assert json.loads(s3.get_object(Bucket="test", Key="ckpts/latest")["Body"].read())["step"] == 100


def test_push_uploads_only_what_s3_lacks_and_repairs_a_corrupted_object(s3, cli_env, tmp_path):
    L = tmp_path / "L"
    make_checkpoint(L / "step-7", SMALL)
    run_cli("ckpt", "commit", str(L / "step-7"), "--step", "7", env=cli_env, check=True)
    run_cli("ckpt", "push", "--remote", "s3://test/p", env=cli_env, check=True)
    again = run_cli("ckpt", "push", "--remote", "s3://test/p", env=cli_env, check=True)
    assert "already complete" in again.stdout and "files" not in again.stdout

    # Same size, other bytes: S3's CRC32C no longer matches the manifest, so push sends it again.
    s3.put_object(
        Bucket="test",
        Key="p/step-7/__1_0.distcp",
        Body=b"\0" * SMALL["__1_0.distcp"],
        ChecksumAlgorithm="CRC32C",
    )
    fixed = run_cli("ckpt", "push", "--remote", "s3://test/p", env=cli_env, check=True)
    assert "1 files" in fixed.stdout
    data = s3.get_object(Bucket="test", Key="p/step-7/__1_0.distcp")["Body"].read()
    assert data == (L / "step-7" / "__1_0.distcp").read_bytes()


def test_pull_of_a_checkpoint_missing_an_object_fails_clearly_and_writes_nothing(s3, cli_env, tmp_path):
    L, D = tmp_path / "L", tmp_path / "D"
    make_checkpoint(L / "step-5", SMALL)
    run_cli("ckpt", "commit", str(L / "step-5"), "--step", "5", env=cli_env, check=True)
    run_cli("ckpt", "push", "--remote", "s3://test/m", env=cli_env, check=True)
    s3.delete_object(Bucket="test", Key="m/step-5/__1_0.distcp")

    r = run_cli("ckpt", "pull", "--remote", "s3://test/m", "--dest", str(D), env=cli_env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "clusterops: s3://test/m: step 5 is missing 1 object(s) in S3 (first: __1_0.distcp); "
        "nothing was written"
    ]
    assert list(D.iterdir()) == []


def test_pull_of_a_corrupted_object_fails_the_checksum_and_leaves_nothing(s3, cli_env, tmp_path):
    L, D = tmp_path / "L", tmp_path / "D"
    make_checkpoint(L / "step-6", SMALL)
    run_cli("ckpt", "commit", str(L / "step-6"), "--step", "6", env=cli_env, check=True)
    run_cli("ckpt", "push", "--remote", "s3://test/c", env=cli_env, check=True)
    s3.put_object(Bucket="test", Key="c/step-6/__0_0.distcp", Body=b"x" * SMALL["__0_0.distcp"])

    r = run_cli("ckpt", "pull", "--remote", "s3://test/c", "--dest", str(D), env=cli_env)
    assert r.returncode == 2
    assert "__0_0.distcp: downloaded bytes fail CRC32C against the manifest" in r.stderr
    assert list(D.iterdir()) == []


def test_bad_input_gets_one_line_and_a_nonzero_exit(s3, cli_env, tmp_path):
    r = run_cli("ckpt", "commit", str(tmp_path / "nope"), "--step", "1", env=cli_env)
    assert (
        r.returncode == 2
        and r.stderr.strip() == f"clusterops: {tmp_path / 'nope'}: no such checkpoint directory"
    )
    r = run_cli("ckpt", "pull", "--remote", "s3://test/empty", "--dest", str(tmp_path / "D"), env=cli_env)
    assert r.returncode == 2 and "no `latest` pointer" in r.stderr
    r = run_cli("ckpt", "push", "--remote", "s3://test/x", env=cli_env)
    assert r.returncode == 0 and "no committed checkpoint" in r.stdout
