"""Staging from a real S3 endpoint (moto on loopback), the daemon surviving kill -9, and the prolog gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterops import config as config_mod
from clusterops.staging import engine, gate, state
from clusterops.staging import manifest as mf
from tests.conftest import CLI, REPO, run_cli


def put_dataset(s3, prefix: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        s3.put_object(Bucket="test", Key=f"{prefix}/{rel}", Body=data, ChecksumAlgorithm="CRC32C")


def test_s3_prefix_manifest_and_run(s3, s3_endpoint, tmp_path):
    files = {"a.ds": os.urandom(700_000), "sub/b.ds": os.urandom(1234), "sub/b.ds.index": b""}
    put_dataset(s3, "ds/v1", files)
    env = {**os.environ, "CLUSTEROPS_S3__ENDPOINT_URL": s3_endpoint}
    r = run_cli("stage", "manifest", "s3://test/ds/v1", "-o", str(tmp_path / "M.json"), env=env)
    assert r.returncode == 0, r.stderr
    m = mf.load(tmp_path / "M.json")
    assert m.source == "s3://test/ds/v1/" and {f.path for f in m.files} == set(files)
    r = run_cli("stage", "run", str(tmp_path / "M.json"), "--dest", str(tmp_path / "D"), env=env)
    assert r.returncode == 0, r.stderr
    for rel, data in files.items():
        assert (tmp_path / "D" / rel).read_bytes() == data
    assert state.status(tmp_path / "D")["ready"] is True

    # The object changes after the manifest was made: named, not READY.
    s3.put_object(Bucket="test", Key="ds/v1/sub/b.ds", Body=os.urandom(1234))
    r = run_cli("stage", "run", str(tmp_path / "M.json"), "--dest", str(tmp_path / "D2"), env=env)
    assert r.returncode == 1 and "sub/b.ds" in r.stderr
    assert state.status(tmp_path / "D2")["ready"] is False


class CutBodies:
    """The real client, but every first GET of an object has its body cut after `cut` bytes, the way a
    dropped connection cuts it (botocore raises ResponseStreamingError mid-read)."""

    def __init__(self, client, cut: int):
        self.client, self.cut, self.cuts = client, cut, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def get_object(self, **kw):
        from botocore.exceptions import ResponseStreamingError

        resp = self.client.get_object(**kw)
        if "Range" in kw:
            return resp
        body, cut, cuts = resp["Body"], self.cut, self.cuts

        class Body:
            sent = 0

            def read(self, n):
                if self.sent >= cut:
                    cuts.append(kw["Key"])
                    raise ResponseStreamingError(error="connection reset mid-body")
                data = body.read(min(n, cut - self.sent))
                self.sent += len(data)
                return data

            def close(self):
                body.close()

        return {**resp, "Body": Body()}


def test_s3_cut_body_resumes_with_a_range(s3, tmp_path):
    data = os.urandom(300_000)
    put_dataset(s3, "cut", {"x.ds": data})
    client = CutBodies(s3, cut=100_000)
    m = mf.build_from_s3("s3://test/cut", s3)
    src = engine.S3Source("s3://test/cut", client)
    result = engine.stage(m, src, tmp_path / "D", engine.Options(workers=1, buffer_bytes=64 << 10))
    assert client.cuts == ["cut/x.ds"]
    assert result.ready and (tmp_path / "D/x.ds").read_bytes() == data


def write_config(tmp_path: Path, datasets: list[str], extra: str = "") -> Path:
    cfg = tmp_path / "co.toml"
    cfg.write_text(
        "[paths]\n"
        f'local_root = "{tmp_path}/nodes/{{node}}/nvme"\n'
        f'state_dir = "{tmp_path}/nodes/{{node}}/state"\n'
        "[staging]\n"
        f"datasets = {json.dumps(datasets)}\n"
        "max_workers = 2\n" + extra
    )
    return cfg


def test_daemon_survives_kill9_and_converges(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"s{i}.ds").write_bytes(os.urandom((2 << 20) + i))
    run_cli("stage", "manifest", str(src), "-o", str(tmp_path / "fw.json"), "--name", "fw", check=True)
    # Commit (sync, rename, record) every 4 MiB, so a kill lands after some files are recorded.
    cfg = write_config(tmp_path, [f"fw={tmp_path / 'fw.json'}"], "bandwidth_mbps = 8.0\ncommit_mb = 4\n")
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(cfg), "CLUSTEROPS_NODE": "n1"}
    dest = tmp_path / "nodes/n1/nvme/datasets/fw"
    meta = state.meta_dir(dest)
    proc = subprocess.Popen([*CLI, "stage", "daemon"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rec = meta / "verified.jsonl"
            if rec.exists() and len(rec.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert state.status(dest)["ready"] is False
    # The per-node state file in the state dir shows progress, not READY.
    mirrored = json.loads((tmp_path / "nodes/n1/state/staging/fw.json").read_text())
    assert mirrored["ready"] is False and mirrored["files_total"] == 6

    r = run_cli("stage", "daemon", "--once", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fw: READY" in r.stdout and "already verified" in r.stdout
    st = state.status(dest)
    assert st["ready"] is True and st["files_verified"] == 6
    for p in src.iterdir():
        assert (dest / p.name).read_bytes() == p.read_bytes()
    mirrored = json.loads((tmp_path / "nodes/n1/state/staging/fw.json").read_text())
    assert mirrored["ready"] is True
    # A second round is a no-op.
    r = run_cli("stage", "daemon", "--once", env=env)
    assert r.returncode == 0 and "staging" not in r.stdout
    # `stage status` with no --dest lists the node's datasets.
    r = run_cli("stage", "status", "--json", env=env)
    assert [d["name"] for d in json.loads(r.stdout)["datasets"]] == ["fw"]


def test_gate_comment_parsing_is_strict():
    assert gate.parse_comment("datasets=fineweb-edu,code") == (["fineweb-edu", "code"], None)
    assert gate.parse_comment("run 42; datasets=a.b_c") == (["a.b_c"], None)
    assert gate.parse_comment("") == ([], None)
    assert gate.parse_comment("just a note") == ([], None)
    bads = ("datasets=../etc", "datasets=a,,b", "datasets=", "datasets=$(reboot)", "datasets=a datasets=b")
    for bad in bads:
        names, error = gate.parse_comment(bad)
        assert names == [] and error, bad
    assert gate.parse_comment("datasets=" + ",".join(f"d{i}" for i in range(17)))[1]


def test_gate_refuses_bad_environment_and_unready_datasets(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.ds").write_bytes(b"abc" * 1000)
    cfg = config_mod.load(write_config(tmp_path, []), env={})
    root = state.datasets_root(config_mod.node_path(cfg.paths.local_root, "n1"))
    engine.stage(mf.build_from_dir(src, name="fw"), engine.DirSource(src), root / "fw")

    ok, msg = gate.check_datasets(cfg, ["fw"], "n1", "7")
    assert ok, msg
    ok, msg = gate.check_datasets(cfg, ["fw", "other"], "n1", "7")
    assert not ok and "other (not staged here)" in msg
    ok, msg = gate.check_datasets(cfg, ["fw"], "n2", "7")
    assert not ok and "n2" in msg

    for env in (
        {"SLURM_JOB_ID": "12; reboot", "SLURMD_NODENAME": "n1"},
        {"SLURM_JOB_ID": "", "SLURMD_NODENAME": "n1"},
        {"SLURM_JOB_ID": "12", "SLURMD_NODENAME": "../n1"},
        {"SLURM_JOB_ID": "12", "SLURMD_NODENAME": "n1", "SLURM_CONF": "relative/slurm.conf"},
    ):
        ok, msg = gate.check_job_datasets(cfg, env)
        assert not ok and "dataset gate" in msg, env


@pytest.mark.parametrize(
    "line, comment",
    [
        ("JobId=12 JobName=x UserId=root(0) Comment=datasets=fw,code StdErr=/tmp/o", "datasets=fw,code"),
        ("JobId=12 JobName=x Comment=run 3 datasets=fw Power= MailUser=root", "run 3 datasets=fw"),
        ("JobId=12 JobName=x Power=", ""),
    ],
)
def test_gate_reads_comment_from_scontrol_line(monkeypatch, line, comment):
    from clusterops import proc

    monkeypatch.setattr(proc, "run", lambda argv, timeout, env: proc.Result(list(argv), 0, line + "\n", ""))
    assert gate.job_comment("12", "/etc/slurm/slurm.conf", 5) == comment


def test_daemon_follows_a_bare_directory_source(tmp_path):
    """No published manifest: the daemon builds one, reuses it while the source's listing is unchanged,
    and converges to a changed source (new content copied, removed files pruned)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.ds").write_bytes(b"a" * 5000)
    (src / "sub/b.ds").write_bytes(b"b" * 7000)
    cfg = write_config(tmp_path, [f"raw={src}"])
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(cfg), "CLUSTEROPS_NODE": "n1"}
    dest = tmp_path / "nodes/n1/nvme/datasets/raw"
    r = run_cli("stage", "daemon", "--once", env=env)
    assert r.returncode == 0 and "raw: READY" in r.stdout, r.stdout + r.stderr
    r = run_cli("stage", "daemon", "--once", env=env)
    assert r.returncode == 0 and "staging" not in r.stdout  # unchanged listing: nothing read, nothing copied

    (src / "a.ds").write_bytes(b"A" * 6000)
    (src / "sub/b.ds").unlink()
    r = run_cli("stage", "daemon", "--once", env=env)
    assert r.returncode == 0 and "raw: READY" in r.stdout, r.stdout + r.stderr
    assert (dest / "a.ds").read_bytes() == b"A" * 6000
    assert not (dest / "sub/b.ds").exists()
    assert state.status(dest)["ready"] is True


def test_daemon_evicts_a_dataset_taken_out_of_the_config_unless_in_use(tmp_path):
    """Converging means both ways: a dataset no longer listed leaves the node, but not while a process
    (a job still reading it) has one of its files open; a directory that is not ours is never touched."""
    srcs = {}
    for name in ("keep", "drop"):
        srcs[name] = tmp_path / f"src-{name}"
        srcs[name].mkdir()
        (srcs[name] / "x.ds").write_bytes(name.encode() * 3000)
    env = {**os.environ, "CLUSTEROPS_NODE": "n1"}
    env["CLUSTEROPS_CONFIG"] = str(write_config(tmp_path, [f"{n}={p}" for n, p in srcs.items()]))
    root = tmp_path / "nodes/n1/nvme/datasets"
    assert run_cli("stage", "daemon", "--once", env=env).returncode == 0
    assert state.status(root / "drop")["ready"] is True
    (root / "foreign").mkdir()  # somebody else's directory beside ours
    (root / "foreign" / "f").write_text("not ours")

    env["CLUSTEROPS_CONFIG"] = str(write_config(tmp_path, [f"keep={srcs['keep']}"]))
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; f=open(sys.argv[1],'rb'); print('open', flush=True); time.sleep(60)",
            str(root / "drop" / "x.ds"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        r = run_cli("stage", "daemon", "--once", env=env)
        assert r.returncode == 0, r.stderr
        assert f"drop: no longer configured, kept while in use by pid {reader.pid}" in r.stdout, r.stdout
        assert state.status(root / "drop")["ready"] is True
    finally:
        reader.kill()
        reader.wait()
    r = run_cli("stage", "daemon", "--once", env=env)
    assert r.returncode == 0 and "drop: no longer configured, evicted" in r.stdout, r.stdout
    assert not (root / "drop").exists() and not state.meta_dir(root / "drop").exists()
    assert state.status(root / "keep")["ready"] is True
    assert (root / "foreign" / "f").read_text() == "not ours"
