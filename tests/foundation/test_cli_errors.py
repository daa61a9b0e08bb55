"""Bad input and bad paths end in one line on stderr and exit 2, never a Python traceback; a bug (an
error no input should cause) keeps its traceback, and CLUSTEROPS_DEBUG=1 shows it for input errors too."""

from __future__ import annotations

import json
import os

import pytest

from clusterops.cli.common import DEBUG_ENV, input_error
from clusterops.errors import ConfigError, UnsafePathError
from tests.conftest import TRACEBACK, run_cli


def _open(path: str) -> None:
    with open(path):
        pass


def _throw(e: BaseException):
    raise e


def _raised(fn):
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the error is what the test looks at
        return e
    raise AssertionError("nothing raised")


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda: _open("/nonexistent/co-x"), "/nonexistent/co-x: No such file or directory"),
        (lambda: _open("/"), "/: Is a directory"),
        (lambda: _open("/etc/hostname/x"), "/etc/hostname/x: Not a directory"),
        (lambda: json.loads('{"a": '), "not valid JSON: Expecting value (line 1, column 7)"),
        (lambda: json.loads("[" * 100000 + "]" * 100000), "input is nested too deeply"),
        (lambda: b"\xff".decode(), "input is not UTF-8 text (byte 0"),
        (lambda: int("twelve"), "invalid literal for int() with base 10: 'twelve' (ValueError at "),
        (lambda: _throw(ConfigError("c.toml: key 'a.b' bad\nsecond")), "c.toml: key 'a.b' bad"),
        (lambda: _throw(UnsafePathError("/x/lock", "is a symlink")), "/x/lock: is a symlink"),
    ],
)
def test_input_errors_become_one_line_and_exit_2(make, expect, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    line, code = input_error(_raised(make))
    assert line.startswith(expect) and "\n" not in line and code == 2


def test_s3_refusals_and_overflow_are_one_line(monkeypatch):
    from botocore.exceptions import ClientError, NoCredentialsError

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    missing = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "ListObjectsV2")
    assert input_error(missing) == (f"S3: {missing}", 2)
    assert input_error(NoCredentialsError()) == ("S3: Unable to locate credentials", 2)
    line, code = input_error(_raised(lambda: int(float("inf"))))
    assert line.startswith("number out of range: cannot convert float infinity") and code == 2


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert input_error(_raised(lambda: {}["missing"])) is None
    assert input_error(_raised(lambda: None.attr)) is None  # type: ignore[attr-defined]
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert input_error(_raised(lambda: int("x"))) is None


@pytest.fixture
def conf(tmp_path):
    """A config that keeps every path the CLI might touch under tmp_path."""
    c = tmp_path / "c.toml"
    c.write_text(
        f'[paths]\nstate_dir = "{tmp_path}/state"\nlocal_root = "{tmp_path}/nvme"\n'
        f'log_dir = "{tmp_path}/log"\n'
        f'textfile_dir = "{tmp_path}/textfile"\n[checkpoint]\nlocal_root = "{tmp_path}/ckpt"\n'
    )
    return c


def one_line(r, *needles: str) -> str:
    assert TRACEBACK not in r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterops: "), r.stderr
    for n in needles:
        assert n in lines[0]
    return lines[0]


def _cli(conf, *args: str, debug: bool = False):
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    if debug:
        env[DEBUG_ENV] = "1"
    # run_cli itself fails a test on a traceback: call it only where none is expected.
    if debug:
        import subprocess

        from tests.conftest import CLI, REPO

        return subprocess.run(
            [*CLI, "-c", str(conf), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
        )
    return run_cli("-c", str(conf), *args, env=env)


def test_a_directory_given_as_a_trainer_config(conf, tmp_path):
    one_line(_cli(conf, "train", "run", str(tmp_path)), str(tmp_path), "Is a directory")


def test_deep_json_as_a_staging_manifest(conf, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    one_line(_cli(conf, "stage", "run", str(deep)), "nested too deeply")
    assert not (tmp_path / "nvme").exists()  # nothing staged


def test_a_non_shard_file_given_to_data_inspect(conf, tmp_path):
    f = tmp_path / "notes.json"
    f.write_text("{}")
    one_line(_cli(conf, "data", "inspect", str(f)), str(f))


def test_debug_env_shows_the_traceback(conf, tmp_path):
    r = _cli(conf, "train", "run", str(tmp_path), debug=True)
    assert r.returncode != 0 and TRACEBACK in r.stderr and "IsADirectoryError" in r.stderr


def test_run_cli_fails_a_test_on_a_traceback():
    with pytest.raises(AssertionError, match="ended in a traceback"):
        run_cli("train", "run", "/", env={**os.environ, DEBUG_ENV: "1"})


def test_a_missing_bucket_is_one_line(conf, tmp_path, s3, s3_endpoint):
    conf.write_text(conf.read_text() + f'[s3]\nendpoint_url = "{s3_endpoint}"\n')
    one_line(_cli(conf, "stage", "run", "s3://no-such-bucket/ds"), "S3: ", "NoSuchBucket")
    assert not (tmp_path / "nvme").exists()
