"""Staging trusts no manifest, dataset name, destination or state file (issue 17): each attack here
wrote or deleted outside what it should, hung, or ended in a traceback before; now it is one line,
exit 2, and nothing outside the datasets root changes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from clusterops import config as config_mod
from clusterops.staging import daemon, engine, state
from clusterops.staging import manifest as mf
from tests.conftest import run_cli


def tree_of(root: Path) -> dict[str, bytes]:
    """Every file under root (links as their target text): what must stay unchanged."""
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = b"<dir>"
    return out


@pytest.fixture
def world(tmp_path: Path):
    """A source directory, its manifest, and a config whose datasets root is under tmp_path/nodes."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.ds").write_bytes(os.urandom(5000))
    (src / "sub/b.ds").write_bytes(os.urandom(300))
    manifest = tmp_path / "M.json"
    run_cli("stage", "manifest", str(src), "-o", str(manifest), "--name", "fw", check=True)
    cfg = tmp_path / "co.toml"
    cfg.write_text(
        "[paths]\n"
        f'local_root = "{tmp_path}/nodes/{{node}}/nvme"\n'
        f'state_dir = "{tmp_path}/nodes/{{node}}/state"\n'
        "[staging]\nmax_workers = 2\n"
    )
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(cfg), "CLUSTEROPS_NODE": "n1"}
    return src, manifest, env, tmp_path / "nodes/n1/nvme/datasets"


def rewrite(manifest: Path, **changes) -> dict:
    m = json.loads(manifest.read_text())
    m.update(changes)
    manifest.write_text(json.dumps(m, indent=1))
    return m


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize(
    "name", ["../escape", "../../x", "/abs", "a/b", "..", "x\nnewline", "é" * 3, "a" * 65]
)
def test_dataset_name_that_leaves_the_root_is_refused(world, tmp_path, name):
    """Checked after landing: a manifest whose name is ../escape makes `stage run M` exit 2 with one
    line, writing nothing outside the datasets root (nor inside it)."""
    _, manifest, env, root = world
    rewrite(manifest, name=name)
    before = tree_of(tmp_path)
    line = one_error_line(run_cli("stage", "run", str(manifest), env=env))
    assert "name" in line and repr(name)[:20] in line and str(manifest) in line
    assert tree_of(tmp_path) == before
    assert not root.exists()


def test_source_named_dotdot_cannot_become_the_dataset_directory(world, tmp_path):
    """No name in the manifest: the default directory comes from the source's last component, checked."""
    src, manifest, env, root = world
    rewrite(manifest, name="", source=str(src) + "/..")
    before = tree_of(tmp_path)
    line = one_error_line(run_cli("stage", "run", str(manifest), env=env))
    assert "'..'" in line
    assert tree_of(tmp_path) == before


def test_default_destination_is_under_the_datasets_root(world):
    src, manifest, env, root = world
    r = run_cli("stage", "run", str(manifest), env=env)
    assert r.returncode == 0, r.stderr
    assert (root / "fw/a.ds").read_bytes() == (src / "a.ds").read_bytes()


def test_destination_that_is_a_symlink_is_refused(world, tmp_path):
    _, manifest, env, root = world
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "D"
    link.symlink_to(elsewhere)
    line = one_error_line(run_cli("stage", "run", str(manifest), "--dest", str(link), env=env))
    assert "symlink" in line
    assert list(elsewhere.iterdir()) == []

    # The same in the datasets root: root/fw planted as a link out of it.
    root.mkdir(parents=True)
    (root / "fw").symlink_to(elsewhere)
    line = one_error_line(run_cli("stage", "run", str(manifest), env=env))
    assert "symlink" in line
    assert list(elsewhere.iterdir()) == []


def test_bookkeeping_files_are_never_written_through_a_symlink(world, tmp_path):
    """verified.jsonl planted as a symlink to a file root must not touch: the run refuses in one line."""
    src, manifest, env, root = world
    assert run_cli("stage", "run", str(manifest), env=env).returncode == 0
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    meta = state.meta_dir(root / "fw")
    (meta / "verified.jsonl").unlink()
    (meta / "verified.jsonl").symlink_to(victim)
    (root / "fw/a.ds").unlink()  # something to copy, and so to record
    line = one_error_line(run_cli("stage", "run", str(manifest), env=env))
    assert "verified.jsonl" in line and "symlink" in line
    assert victim.read_text() == "precious\n"


def test_temp_directory_planted_as_a_symlink_gets_no_data(world, tmp_path):
    src, manifest, env, root = world
    trap = tmp_path / "trap"
    trap.mkdir()
    (root / "fw").mkdir(parents=True)
    (root / "fw" / state.STAGING_DIR).symlink_to(trap)
    seen: list[str] = []
    m = mf.load(manifest)
    stager = engine.Stager(m, engine.DirSource(src), root / "fw", engine.Options(workers=1), root=root)
    real_copy = stager._copy_one

    def spy(entry, buf):
        out = real_copy(entry, buf)
        seen.extend(p.name for p in trap.iterdir())
        return out

    stager._copy_one = spy
    result = stager.run()
    assert not result.ready and {f["path"] for f in result.failed} == {"a.ds", "sub/b.ds"}
    assert all("symlink" in f["error"] for f in result.failed), result.failed
    assert seen == [] and list(trap.iterdir()) == []


def test_evict_refuses_a_directory_that_is_not_a_staged_dataset(tmp_path):
    """A look-alike bookkeeping directory beside someone's data does not make it ours to delete."""
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    (tmp_path / ".home.clusterops").mkdir()
    line = one_error_line(run_cli("stage", "evict", str(victim)))
    assert "not a staged dataset" in line and "nothing removed" in line
    assert (victim / "thesis.tex").read_text() == "years of work"

    # A state file naming another directory does not pass either.
    (tmp_path / ".home.clusterops/state.json").write_text(json.dumps({"dest": str(tmp_path / "other")}))
    line = one_error_line(run_cli("stage", "evict", str(victim)))
    assert "does not name" in line
    assert (victim / "thesis.tex").exists()


def test_evict_removes_what_it_staged(world):
    _, manifest, env, root = world
    assert run_cli("stage", "run", str(manifest), env=env).returncode == 0
    r = run_cli("stage", "evict", str(root / "fw"), env=env)
    assert r.returncode == 0, r.stderr
    assert not (root / "fw").exists() and not state.meta_dir(root / "fw").exists()


def test_daemon_evicts_only_its_own_datasets(world, tmp_path):
    _, manifest, env, root = world
    foreign = root / "foreign"
    foreign.mkdir(parents=True)
    (foreign / "keep").write_text("x")
    state.meta_dir(foreign).mkdir()  # a look-alike, no state of ours
    cfg = config_mod.load(Path(env["CLUSTEROPS_CONFIG"]), env={})
    said: list[str] = []
    assert daemon.evict_unlisted(cfg, root, set(), said.append) == []
    assert (foreign / "keep").read_text() == "x"


@pytest.mark.parametrize(
    "body, words",
    [
        ('{"files": [{"path": "a", "size": NaN, "crc32c": "00000000"}]}', "non-finite"),
        ('{"files": [{"path": "a", "size": 1e400, "crc32c": "00000000"}]}', "size"),
        ('{"files": [{"path": "a", "size": -1, "crc32c": "00000000"}]}', "size"),
        ('{"files": [{"path": "a", "size": 1, "crc32c": "0000000G"}]}', "crc32c"),
        ('{"files": [{"path": "a\\u0000b", "size": 1, "crc32c": "00000000"}]}', "control"),
        ('{"files": [{"path": "a\\ud800", "size": 1, "crc32c": "00000000"}]}', "UTF-8"),
        ('{"files": [{"path": "' + "x" * 300 + '", "size": 1, "crc32c": "00000000"}]}', "longer than"),
        ('{"files": [{"path": "a", "size": 1, "crc32c": "00000000"}, 7]}', "not an object"),
        (
            '{"files": [{"path": "a", "size": 1, "crc32c": "00000000"},'
            ' {"path": "a/b", "size": 1, "crc32c": "00000000"}]}',
            "both a file and a directory",
        ),
        ('{"files": [], "source": 5}', "source"),
        ('{"files": [], "version": 3}', "newer than this clusterops reads"),
        ('{"files": [], "version": "2"}', "version"),
        ('{"files": [], "fingerprint": 12}', "fingerprint"),
        ('{"version": 2, "files_total": 4, "files": []}', "files_total"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_manifest_is_one_line_naming_the_field(tmp_path, body, words):
    m = tmp_path / "bad.json"
    m.write_text(body)
    line = one_error_line(run_cli("stage", "run", str(m), "--dest", str(tmp_path / "D"), "--source", "/x"))
    assert words in line and str(m) in line, line
    assert not (tmp_path / "D").exists()


def test_manifest_that_is_a_fifo_or_not_utf8_is_one_line(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    line = one_error_line(run_cli("stage", "run", str(fifo), "--dest", str(tmp_path / "D"), timeout=30))
    assert "not a regular file" in line
    binary = tmp_path / "bin.json"
    binary.write_bytes(b'{"files": [], "name": "\xff"}')
    line = one_error_line(run_cli("stage", "run", str(binary), "--dest", str(tmp_path / "D")))
    assert "not UTF-8" in line


def _manifest_text(n: int) -> str:
    files = [
        mf.FileEntry(f"d{i % 100:02d}/f{i:07d}.ds", i, f"{i * 2654435761 % 2**32:08x}") for i in range(n)
    ]
    return mf.Manifest("/src", files, name="big").render()


def test_parsing_is_linear_not_quadratic():
    """20,000 entries took 20 s before (a regex search of the whole text per entry); 100,000 now parse
    in about a second. The bound is loose for a busy 2-core machine, far below the old quadratic cost."""
    small, big = _manifest_text(10_000), _manifest_text(100_000)
    t0 = time.perf_counter()
    mf.parse(small)
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = mf.parse(big)
    t_big = time.perf_counter() - t0
    assert len(m.files) == 100_000 and m.fingerprint == json.loads(big)["fingerprint"]
    assert t_big < 15.0, t_big
    assert t_big < 40 * max(t_small, 0.01), (t_small, t_big)  # 10x the entries: ~10x the time, not 100x


def test_error_line_is_found_in_a_large_manifest_quickly():
    text = _manifest_text(50_000).replace('"d05/f0040005.ds"', '"../x"')
    t0 = time.perf_counter()
    with pytest.raises(mf.ManifestError) as e:
        mf.parse(text, "big.json")
    assert time.perf_counter() - t0 < 15.0
    line = next(i + 1 for i, t in enumerate(text.splitlines()) if '"../x"' in t)
    assert str(e.value).startswith(f"big.json line {line}: path '../x' leaves the dataset root")


def test_daemon_does_not_parse_an_unchanged_manifest_again(world, monkeypatch):
    _, manifest, env, root = world
    cfg_path = Path(env["CLUSTEROPS_CONFIG"])
    cfg_path.write_text(cfg_path.read_text() + f"datasets = {json.dumps([f'fw={manifest}'])}\n")
    monkeypatch.setenv("CLUSTEROPS_NODE", "n1")
    cfg = config_mod.load(cfg_path, env={})
    parses: list[str] = []
    real = mf.parse

    def counting(text, where="manifest"):
        parses.append(where)
        return real(text, where)

    monkeypatch.setattr(mf, "parse", counting)
    cache = daemon.ManifestCache()
    for _ in range(3):
        [status] = daemon.converge_once(cfg, cache=cache)
        assert status["ready"] is True, status
    assert parses == [str(manifest)]

    # Changed content (same size, new mtime): parsed again, once.
    rewrite(manifest, name="fw2")
    os.utime(manifest, ns=(time.time_ns(), time.time_ns() + 10**9))
    daemon.converge_once(cfg, cache=cache)
    daemon.converge_once(cfg, cache=cache)
    assert parses == [str(manifest)] * 2


# -- format versions -----------------------------------------------------------------------------------

# A manifest as the previous format (1) wrote it: the same fields, counts not checked.
PREVIOUS_MANIFEST = """{
  "version": 1,
  "name": "fw",
  "source": "/data/fw",
  "fingerprint": "%s",
  "files_total": 99,
  "bytes_total": 5,
  "files": [
    {"path": "a.ds", "size": 5, "crc32c": "0b7b1e0a"}
  ]
}
"""


def test_previous_manifest_format_is_read():
    fp = mf.fingerprint([mf.FileEntry("a.ds", 5, "0b7b1e0a")])
    m = mf.parse(PREVIOUS_MANIFEST % fp, "old.json")
    assert m.name == "fw" and m.files == [mf.FileEntry("a.ds", 5, "0b7b1e0a")] and m.fingerprint == fp
    # No version at all is format 1 too.
    assert mf.parse('{"files": []}').files == []
    # What we write now is format 2, and reads back.
    assert json.loads(m.render())["version"] == mf.VERSION == 2
    assert mf.parse(m.render()).fingerprint == fp


def test_previous_state_files_are_read_and_newer_ones_refused(world, tmp_path):
    src, manifest, env, root = world
    assert run_cli("stage", "run", str(manifest), env=env).returncode == 0
    meta = state.meta_dir(root / "fw")
    st_now = json.loads((meta / "state.json").read_text())
    ready_now = json.loads((meta / "READY").read_text())
    assert st_now["version"] == state.STATE_VERSION == 2 and ready_now["version"] == 2

    # Format 1: the same files without "version" (as clusterops wrote them before).
    for name, data in (("state.json", st_now), ("READY", ready_now)):
        (meta / name).write_text(json.dumps({k: v for k, v in data.items() if k != "version"}))
    s = state.status(root / "fw")
    assert s["ready"] is True and s["files_verified"] == 2
    r = run_cli("stage", "run", str(manifest), env=env)
    assert r.returncode == 0, r.stderr

    # A newer state file: the run refuses in one line and leaves it as it is.
    newer = {**st_now, "version": 3}
    (meta / "state.json").write_text(json.dumps(newer))
    line = one_error_line(run_cli("stage", "run", str(manifest), env=env))
    assert "format 3 is newer" in line and "state.json" in line
    assert json.loads((meta / "state.json").read_text()) == newer
    s = state.status(root / "fw")
    assert s["ready"] is False and "format 3 is newer" in s["reason"]

    # A newer READY marker is not READY.
    (meta / "state.json").write_text(json.dumps(st_now))
    (meta / "READY").write_text(json.dumps({**ready_now, "version": 3}))
    readiness = state.check_ready(root / "fw")
    assert not readiness.ready and "format 3 is newer" in readiness.reason


def test_state_file_with_wrong_types_does_not_break_status(world):
    _, manifest, env, root = world
    assert run_cli("stage", "run", str(manifest), env=env).returncode == 0
    meta = state.meta_dir(root / "fw")
    (meta / "state.json").write_text(
        json.dumps(
            {"dest": str(root / "fw"), "files_verified": "lots", "gbps": 1e999, "failed": [1, {"a": 2}]}
        )
    )
    r = run_cli("stage", "status", "--dest", str(root / "fw"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)["datasets"]
    assert row["name"] == "fw" and row["ready"] is True and row["files_verified"] == 0 and row["gbps"] == 0.0
    r = run_cli("stage", "status", "--dest", str(root / "fw"), env=env)
    assert r.returncode == 0 and "READY" in r.stdout, r.stderr


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"name": "../escape", "source": "s3://test/x/", "files": []}', "dataset name '../escape'"),
        (
            b'{"source": "s3://test/x/", "files": [{"path": "a", "size": Infinity, "crc32c": "00000000"}]}',
            "non-finite",
        ),
        (b'{"source": "s3://test/x/", "files": [], "version": 9}', "format 9 is newer"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"files": ' + b"[" * 50_000, "nested too deeply"),
    ],
)
def test_remote_manifest_is_validated_like_a_local_one(s3, tmp_path, body, words):
    """A manifest fetched from S3 by the daemon: the same checks, one line naming the object."""
    s3.put_object(Bucket="test", Key="manifests/bad.json", Body=body)
    cfg = config_mod.Config()  # defaults: the client is the test's own
    spec = daemon.DatasetSpec("fw", "s3://test/manifests/bad.json")
    with pytest.raises(mf.ManifestError) as e:
        daemon.resolve(spec, cfg, s3client=s3, dest=tmp_path / "datasets/fw")
    assert str(e.value).startswith("s3://test/manifests/bad.json") and words in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "datasets").exists()


def test_stage_manifest_names_only_valid_datasets(tmp_path):
    src = tmp_path / "my data"
    src.mkdir()
    (src / "a.ds").write_bytes(b"x")
    line = one_error_line(
        run_cli("stage", "manifest", str(src), "-o", str(tmp_path / "M.json"), "--name", "../x")
    )
    assert "--name" in line and "'../x'" in line and not (tmp_path / "M.json").exists()
    # A source whose own name is no dataset name: the manifest is unnamed, and still reads back.
    r = run_cli("stage", "manifest", str(src), "-o", str(tmp_path / "M.json"))
    assert r.returncode == 0, r.stderr
    assert mf.load(tmp_path / "M.json").name == ""
    r = run_cli("stage", "run", str(tmp_path / "M.json"), "--dest", str(tmp_path / "D"))
    assert r.returncode == 0 and (tmp_path / "D/a.ds").read_bytes() == b"x", r.stderr


def test_readiness_reads_the_fingerprint_from_the_manifest_head(world, monkeypatch):
    """The prolog and each daemon round decide READY without parsing the staged manifest's entries."""
    _, manifest, env, root = world
    assert run_cli("stage", "run", str(manifest), env=env).returncode == 0
    whole_reads: list[Path] = []
    real = state.read_json_or_none

    def spy(path):
        if path.name == "manifest.json":
            whole_reads.append(path)
        return real(path)

    monkeypatch.setattr(state, "read_json_or_none", spy)
    assert state.check_ready(root / "fw").ready
    assert whole_reads == []
