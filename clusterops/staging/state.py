"""Where a staged dataset keeps its bookkeeping, and how READY is decided. Light: the prolog imports it.

A dataset staged into directory D keeps everything that is not data in a hidden sibling, D/../.D.clusterops:

    manifest.json   the manifest being staged (the reference every file is checked against)
    verified.jsonl  one line per file verified in D: path, size, mtime_ns, inode, crc32c (append-only)
    state.json      progress: bytes, files, GB/s, phase, failures (rewritten atomically)
    READY           written last, only when every file verified; holds the manifest fingerprint
    lock            flock'd by whoever is staging (released by the kernel on kill -9)

state.json and READY carry a format version ("version"): 2 now, 1 (no key) before. Readers take both and
refuse a newer one. Everything here is opened without following a symlink, and only if a regular file.

so that D itself holds exactly the dataset's files, byte for byte. Temp files live in D/.staging/ (same
filesystem as the data, so the final rename is atomic) and that directory is removed when the run ends.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterops.errors import UnsafePathError, UsageError

STAGING_DIR = ".staging"
STATE_VERSION = 2
STATE_READS = (1, 2)
# state.json and READY are small; manifest.json is as large as the manifest.
_MAX_JSON_BYTES = 4 << 30


class StateFormatError(UsageError):
    """A state file was written by a newer clusterops (or is not one of ours)."""


def format_version(data: Any, where: str) -> int:
    """The format of a state file we wrote (1 when it has none); a newer one is refused in one line."""
    version = data.get("version", 1) if isinstance(data, dict) else 1
    if type(version) is not int or version < 1:
        raise StateFormatError(f"{where}: version must be a positive integer, got {version!r:.40}")
    if version not in STATE_READS:
        raise StateFormatError(
            f"{where}: format {version} is newer than this clusterops reads ({STATE_READS[0]} and"
            f" {STATE_READS[-1]}): upgrade clusterops"
        )
    return version


def dataset_dir(root: str | os.PathLike[str], name: str) -> Path:
    """ROOT/NAME for a dataset name, checked: a valid name, and (symlinks resolved) still under ROOT."""
    from clusterops.staging.manifest import check_name

    why = check_name(name)
    if why:
        raise UsageError(f"{root}: {why}")
    base = Path(os.path.abspath(root))
    dest = base / name
    require_under(dest, base)
    return dest


def require_under(dest: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Refuse a destination that is a symlink, or that (resolved) is not inside `root`."""
    d = Path(os.path.abspath(dest))
    if os.path.islink(d):
        raise UnsafePathError(d, "is a symlink")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(d))
    if real == real_root or not real.is_relative_to(real_root):
        raise UsageError(f"{d}: leaves the datasets root {root} (resolves to {real})")


def ensure_dir(path: Path) -> Path:
    """mkdir -p, then insist that what is there is a real directory, not a symlink to one."""
    path.mkdir(parents=True, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafePathError(path, "is a symlink or not a directory")
    return path


def meta_dir(dest: str | os.PathLike[str]) -> Path:
    d = Path(os.path.abspath(dest))
    return d.parent / f".{d.name}.clusterops"


def ready_path(dest: str | os.PathLike[str]) -> Path:
    return meta_dir(dest) / "READY"


def read_json_or_none(path: Path) -> Any:
    """A JSON file we wrote, or None where it is missing, unreadable, not a regular file (a symlink, a
    FIFO) or not JSON: the caller then treats the dataset as not staged or not READY."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_JSON_BYTES:
            return None
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    finally:
        os.close(fd)


def is_staged_dataset(dest: str | os.PathLike[str]) -> str | None:
    """Why `dest` is not a dataset this clusterops staged, or None when it is: its bookkeeping directory
    is a real directory owned by us, holding a state.json (a regular file, owned by us) that names
    exactly this directory. A look-alike `.NAME.clusterops` made by someone else does not pass."""
    d = Path(os.path.abspath(dest))
    meta = meta_dir(d)
    try:
        mst = os.lstat(meta)
    except OSError:
        return f"no {meta}"
    if not stat.S_ISDIR(mst.st_mode) or mst.st_uid != os.geteuid():
        return f"{meta} is not a directory of ours"
    if os.path.islink(d):
        return f"{d} is a symlink"
    try:
        fd = os.open(meta / "state.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return f"no staging state in {meta}"
    try:
        sst = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(sst.st_mode) or sst.st_uid != os.geteuid():
        return f"{meta / 'state.json'} is not a state file of ours"
    raw = read_json_or_none(meta / "state.json")
    if not isinstance(raw, dict) or raw.get("dest") != str(d):
        return f"{meta / 'state.json'} does not name {d}"
    return None


_HEAD_FINGERPRINT = re.compile(rb'\n  "fingerprint": "([0-9a-f]{64})",\n')


def manifest_fingerprint(path: Path) -> str | None:
    """The fingerprint of the manifest being staged. Manifest.render puts it in the first lines, so the
    prolog and each daemon round read a few hundred bytes, not a million entries; a file laid out any
    other way is read whole."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, 4096, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    files_at = head.find(b'"files"')
    m = _HEAD_FINGERPRINT.search(head)
    if m and head.startswith(b"{\n") and (files_at < 0 or m.start() < files_at):
        return m.group(1).decode()
    data = read_json_or_none(path)
    fp = data.get("fingerprint") if isinstance(data, dict) else None
    return fp if isinstance(fp, str) else None


@dataclass
class Readiness:
    ready: bool
    reason: str
    fingerprint: str = ""


def check_ready(dest: str | os.PathLike[str], deep: bool = True) -> Readiness:
    """READY marker present, same fingerprint as the manifest being staged, and (deep) every file there
    with the size and mtime it had when verified: a wiped or edited local disk is not READY."""
    meta = meta_dir(dest)
    marker = read_json_or_none(meta / "READY")
    try:
        format_version(marker, str(meta / "READY"))
    except StateFormatError as e:
        return Readiness(False, str(e))
    if not isinstance(marker, dict):
        state = read_json_or_none(meta / "state.json")
        phase = state.get("phase") if isinstance(state, dict) else None
        if phase:
            done, total = state.get("files_verified", "?"), state.get("files_total", "?")
            return Readiness(False, f"not READY ({phase}, {done}/{total} files verified)")
        return Readiness(False, "not staged here")
    fp = marker.get("fingerprint", "")
    if not isinstance(fp, str):
        return Readiness(False, "READY marker holds no fingerprint")
    if manifest_fingerprint(meta / "manifest.json") != fp:
        return Readiness(False, "READY marker does not match the manifest being staged", fp)
    if deep:
        files = marker.get("files")
        if not isinstance(files, list):
            return Readiness(False, "READY marker lists no files", fp)
        root = Path(dest)
        for entry in files:
            try:
                path, size, mtime_ns = entry
                if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/"):
                    raise ValueError(path)
                st = os.stat(root / path)
            except (OSError, ValueError, TypeError):
                name = entry[0] if isinstance(entry, list) and entry else entry
                return Readiness(False, f"{name}: missing", fp)
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                return Readiness(False, f"{path}: changed since it was verified", fp)
    return Readiness(True, "READY", fp)


@dataclass
class DatasetState:
    """What `stage status` shows for one dataset; state.json on disk."""

    name: str
    dest: str
    version: int = STATE_VERSION
    source: str = ""
    fingerprint: str = ""
    phase: str = "new"  # new | checking | copying | ready | failed | interrupted | evicted
    files_total: int = 0
    files_verified: int = 0
    bytes_total: int = 0
    bytes_verified: int = 0
    bytes_copied: int = 0  # this run
    gbps: float = 0.0  # this run's copy rate, GB/s (1e9)
    started_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float = 0.0
    pid: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "state.json") -> DatasetState:
        """From a state file: a newer format is refused; a field of the wrong type is left at its
        default (the file is advisory: READY decides)."""
        format_version(data, where)
        out = cls(name=str(data.get("name", "")), dest=str(data.get("dest", "")))
        for key in cls.__dataclass_fields__:
            if key in ("name", "dest", "version") or key not in data:
                continue
            value, default = data[key], getattr(out, key)
            if isinstance(default, bool) or isinstance(value, bool):
                continue
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            if type(value) is not type(default):
                continue
            if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
                continue
            if key == "failed":
                value = [
                    f for f in value if isinstance(f, dict) and all(isinstance(v, str) for v in f.values())
                ]
            setattr(out, key, value)
        return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(dest: str | os.PathLike[str], deep: bool = True) -> dict[str, Any]:
    """One dataset's status: its recorded state plus the READY decision made now."""
    d = Path(os.path.abspath(dest))
    raw = read_json_or_none(meta_dir(d) / "state.json")
    st = DatasetState(name=d.name, dest=str(d))
    if isinstance(raw, dict):
        try:
            st = DatasetState.from_dict(raw, str(meta_dir(d) / "state.json"))
            st.name, st.dest = st.name or d.name, str(d)
        except StateFormatError as e:
            out = {**st.to_dict(), "phase": "unknown", "ready": False, "reason": str(e), "message": str(e)}
            return {**out, "dest": str(d), "age_s": None}
    readiness = check_ready(d, deep=deep)
    out = st.to_dict()
    if st.phase in ("checking", "copying") and not _alive(st.pid):
        out["phase"] = "interrupted"
    out["ready"] = readiness.ready
    out["reason"] = readiness.reason
    if readiness.ready:
        out["phase"] = "ready"
    out["dest"] = str(d)
    out["age_s"] = round(time.time() - st.updated_at, 1) if st.updated_at else None
    return out


def datasets_root(local_root: str | os.PathLike[str]) -> Path:
    """Where the daemon puts datasets on a node: LOCAL_ROOT/datasets/NAME."""
    return Path(local_root) / "datasets"


def list_datasets(local_root: str | os.PathLike[str]) -> list[Path]:
    root = datasets_root(local_root)
    if not root.is_dir():
        return []
    found = set()
    for p in root.iterdir():
        if p.name.startswith(".") and p.name.endswith(".clusterops") and p.is_dir():
            found.add(root / p.name[1 : -len(".clusterops")])
        elif not p.name.startswith(".") and p.is_dir():
            found.add(p)
    return sorted(found)
