"""Shared fixtures: a real S3 endpoint on loopback, and the real local Slurm cluster (the sandbox)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from clusterops.proc import poll_until

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clusterops"]
TRACEBACK = "Traceback (most recent call last)"


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail one property-test case, instead of hanging the suite, when it runs past `seconds`."""

    def expired(signum, frame):
        raise AssertionError(f"one case ran past {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False):
    """Run the real `clusterops` CLI as a user would; returns CompletedProcess with text output. A Python
    traceback on stderr fails the test whatever the exit code: every error a user can cause is one line."""
    result = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy(), cwd=REPO
    )
    if TRACEBACK in result.stderr:
        raise AssertionError(f"clusterops {' '.join(args)} ended in a traceback:\n{result.stderr[-4000:]}")
    if check and result.returncode != 0:
        raise AssertionError(f"clusterops {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def wait_for(predicate, timeout: float, what: str, step: float = 0.25):
    """Poll `predicate` until it returns something truthy (returned), or fail saying what never happened."""
    ok, last = poll_until(predicate, timeout, step)
    if not ok:
        raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")
    return last


# Every Slurm-facing test runs on 24.11 (what users run); a compatibility subset also on 22.05.
SLURM_VERSIONS = ("24.11", "22.05")


def slurm_client(env: dict[str, str], **kw):
    """A SlurmClient for the sandbox whose exports are in `env`, running that sandbox's Slurm commands."""
    from clusterops.slurm import SlurmClient

    return SlurmClient(env["SLURM_CONF"], bin_dir=env["CLUSTEROPS_SLURM__BIN_DIR"], **kw)


@contextlib.contextmanager
def own_sandbox(prefix: str, nodes: int, slurm: str = "24.11", mode: str = "auto"):
    """A sandbox of the test module's own (so it may change the config); yields (Sandbox, env)."""
    reason = _sandbox_possible(slurm)
    if reason:
        pytest.fail(f"sandbox tests cannot run: {reason}")
    from clusterops.sandbox.cluster import Sandbox

    root = Path(tempfile.mkdtemp(prefix=f"co-{prefix}-{slurm}-", dir="/var/tmp"))
    sb = Sandbox(root)
    try:
        state = sb.up(nodes=nodes, timeout=90, slurm=slurm, mode=mode)
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


def _sandbox_possible(slurm: str = "24.11") -> str | None:
    if os.geteuid() != 0:
        return "the sandbox needs root"
    if slurm == "22.05":
        for binary in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"):
            if not Path(binary).exists():
                return f"{binary} missing (make install)"
        return None
    from clusterops.sandbox.sysroot import DEFAULT_ROOT, Sysroot

    if not Sysroot(DEFAULT_ROOT).ready:
        return f"no Slurm {slurm} root at {DEFAULT_ROOT} (make install builds it)"
    return None


@pytest.fixture(scope="session")
def sandbox():
    """A real 4-node Slurm 24.11 cluster plus S3 for the whole session; yields (Sandbox, exports env)."""
    with own_sandbox("sandbox", 4) as sb_env:
        yield sb_env


@pytest.fixture(scope="session")
def sandbox_2205():
    """The same on Slurm 22.05 (the host's packages), for the compatibility subset."""
    with own_sandbox("sandbox", 4, slurm="22.05") as sb_env:
        yield sb_env


@pytest.fixture(params=SLURM_VERSIONS)
def any_sandbox(request):
    """The session sandbox of each Slurm version in turn: a test that must hold on both."""
    return request.getfixturevalue("sandbox" if request.param == "24.11" else "sandbox_2205")


def ctld_pid(sb) -> int:
    """The pid of the sandbox's slurmctld process itself (nsenter execs in place: it is the recorded pid)."""
    import psutil

    p = psutil.Process(sb.state().slurmctld_pid)
    for q in [p, *p.children(recursive=True)]:
        if q.name() == "slurmctld":
            return q.pid
    raise AssertionError(f"no slurmctld under pid {p.pid}")
