"""Shared fixtures: a real S3 endpoint on loopback, and the real local Slurm cluster (the sandbox)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from clusterops.proc import poll_until

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clusterops"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False):
    """Run the real `clusterops` CLI as a user would; returns CompletedProcess with text output."""
    result = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy(), cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(f"clusterops {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def wait_for(predicate, timeout: float, what: str, step: float = 0.25):
    """Poll `predicate` until it returns something truthy (returned), or fail saying what never happened."""
    ok, last = poll_until(predicate, timeout, step)
    if not ok:
        raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")
    return last


@contextlib.contextmanager
def own_sandbox(prefix: str, nodes: int):
    """A sandbox of the test module's own (so it may change the config); yields (Sandbox, env)."""
    reason = _sandbox_possible()
    if reason:
        pytest.fail(f"sandbox tests cannot run: {reason}")
    from clusterops.sandbox.cluster import Sandbox

    root = Path(tempfile.mkdtemp(prefix=f"co-{prefix}-", dir="/var/tmp"))
    sb = Sandbox(root)
    try:
        state = sb.up(nodes=nodes, timeout=90)
        yield sb, {**os.environ, **sb.exports(state)}
    finally:
        sb.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1, in this process; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield url
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A clean S3 (state reset) with bucket `test`, credentials in the environment; yields a boto3 client."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST")).close()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="test")
    return client


def _sandbox_possible() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox needs root"
    for binary in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"):
        if not Path(binary).exists():
            return f"{binary} missing (make install)"
    return None


@pytest.fixture(scope="session")
def sandbox():
    """A real 4-node Slurm cluster plus S3 for the whole session; yields (Sandbox, exports env dict)."""
    with own_sandbox("sandbox", 4) as sb_env:
        yield sb_env
