"""Root never writes, locks or reads through a path someone planted: a symlink, a hard link or a FIFO
where clusterops keeps its locks, event logs, textfiles and state is refused, and its target untouched."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from clusterops import fsutil, telemetry
from clusterops.checkpoint.lock import Lock
from clusterops.errors import ClusteropsError, UnsafePathError

VICTIM_TEXT = "root:x:0:0:precious\n"


@pytest.fixture
def victim(tmp_path):
    """A file that must come out of every test byte for byte as it went in."""
    v = tmp_path / "victim"
    v.write_text(VICTIM_TEXT)
    v.chmod(0o600)
    yield v
    assert v.read_text() == VICTIM_TEXT
    assert stat.S_IMODE(v.stat().st_mode) == 0o600


def planted(tmp_path, name: str, victim) -> os.PathLike:
    d = tmp_path / "shared"
    d.mkdir(exist_ok=True)
    link = d / name
    link.symlink_to(victim)
    return link


def test_event_log_through_a_symlink_is_refused(tmp_path, victim):
    link = planted(tmp_path, "events.ndjson", victim)
    with pytest.raises(UnsafePathError) as e:
        telemetry.log_event(link, "drain", node="node1")
    assert str(link) in str(e.value) and "symlink" in str(e.value) and "\n" not in str(e.value)
    # still an OSError, so a hook that shrugs off an unwritable log keeps running
    assert isinstance(e.value, OSError) and isinstance(e.value, ClusteropsError)
    with pytest.raises(UnsafePathError):
        telemetry.read_events(link)


def test_event_log_to_a_dangling_symlink_creates_nothing(tmp_path):
    target = tmp_path / "would-be-created"
    link = planted(tmp_path, "events.ndjson", target)
    with pytest.raises(UnsafePathError):
        telemetry.log_event(link, "drain")
    assert not target.exists()


def test_event_log_hard_link_and_fifo_are_refused(tmp_path, victim):
    d = tmp_path / "shared"
    d.mkdir()
    os.link(victim, d / "events.ndjson")
    with pytest.raises(UnsafePathError, match="hard links"):
        telemetry.log_event(d / "events.ndjson", "x")
    fifo = d / "fifo.ndjson"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def write():
        try:
            telemetry.log_event(fifo, "x")
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "log_event blocked on a FIFO"
    assert len(errors) == 1 and isinstance(errors[0], UnsafePathError)


def test_event_log_still_appends_normally(tmp_path):
    log = tmp_path / "log" / "events.ndjson"
    telemetry.log_event(log, "a", n=1)
    telemetry.log_event(log, "b", n=2)
    with open(log, "ab") as f:
        f.write(b"[" * 100000 + b"\n" + b"\xff\xfe\n" + b"7\n" + b'{"event": "torn"')
    assert [e["event"] for e in telemetry.read_events(log)] == ["a", "b"]
    assert {e["v"] for e in telemetry.read_events(log)} == {telemetry.EVENT_FORMAT}


def test_checkpoint_lock_through_a_symlink_is_refused(tmp_path, victim):
    link = planted(tmp_path, "ckpt-sync.lock", victim)
    with pytest.raises(UnsafePathError, match="symlink"), Lock(link):
        pass


def test_checkpoint_lock_still_locks(tmp_path):
    path = tmp_path / "state" / "ckpt-sync.lock"
    with Lock(path) as first:
        assert first.acquired
        with Lock(path) as second:
            assert not second.acquired and second.holder == str(os.getpid())
    assert not path.is_symlink()


def test_staging_lock_through_a_symlink_is_refused(tmp_path, victim):
    from clusterops.staging.engine import _Lock

    meta = tmp_path / "shared"
    planted(tmp_path, "lock", victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        _Lock(meta)


def test_atomic_write_refuses_a_symlinked_target(tmp_path, victim):
    link = planted(tmp_path, "health-state.json", victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        fsutil.atomic_write_json(link, {"v": 1})
    assert link.is_symlink()
    assert [p.name for p in link.parent.iterdir()] == ["health-state.json"]  # no temp left behind


def test_textfile_through_a_symlink_is_refused(tmp_path, victim):
    planted(tmp_path, "clusterops_health.prom", victim)
    metric = telemetry.Metric("clusterops_up", "1 when up").add(1)
    with pytest.raises(UnsafePathError):
        telemetry.write_textfile(tmp_path / "shared", "clusterops_health", [metric])


def test_atomic_write_temp_is_private_and_mode_applied(tmp_path, monkeypatch):
    seen: list[int] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    out = fsutil.atomic_write_text(tmp_path / "a.txt", "x", mode=0o640)
    assert out.read_text() == "x" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert seen == [0o640]


def test_read_json_refuses_a_symlink(tmp_path, victim):
    link = planted(tmp_path, "spare-state.json", victim)
    with pytest.raises(UnsafePathError):
        fsutil.read_json(link)
    real = tmp_path / "real.json"
    fsutil.atomic_write_json(real, {"a": 1})
    assert fsutil.read_json(real) == {"a": 1}


def test_a_hook_shrugs_off_a_planted_event_log(tmp_path, victim):
    """health's event writer treats a refused log like a full disk: the hook runs on, the victim is kept."""
    from clusterops import config
    from clusterops.health import export

    cfg = config.Config()
    cfg.health.event_log = str(planted(tmp_path, "health.ndjson", victim))
    export.event(cfg, "node1", "hook_error", hook="prolog")  # no exception
    assert victim.read_text() == VICTIM_TEXT
    assert Path(cfg.health.event_log).is_symlink()
