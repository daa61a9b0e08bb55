"""Where a staged dataset keeps its bookkeeping, and how READY is decided. Light: the prolog imports it.

A dataset staged into directory D keeps everything that is not data in a hidden sibling, D/../.D.clusterops:

    manifest.json   the manifest being staged (the reference every file is checked against)
    verified.jsonl  one line per file verified in D: path, size, mtime_ns, inode, crc32c (append-only)
    state.json      progress: bytes, files, GB/s, phase, failures (rewritten atomically)
    READY           written last, only when every file verified; holds the manifest fingerprint
    lock            flock'd by whoever is staging (released by the kernel on kill -9)

so that D itself holds exactly the dataset's files, byte for byte. Temp files live in D/.staging/ (same
filesystem as the data, so the final rename is atomic) and that directory is removed when the run ends.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGING_DIR = ".staging"


def meta_dir(dest: str | os.PathLike[str]) -> Path:
    d = Path(os.path.abspath(dest))
    return d.parent / f".{d.name}.clusterops"


def ready_path(dest: str | os.PathLike[str]) -> Path:
    return meta_dir(dest) / "READY"


def read_json_or_none(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


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
    if not isinstance(marker, dict):
        state = read_json_or_none(meta / "state.json")
        phase = state.get("phase") if isinstance(state, dict) else None
        if phase:
            done, total = state.get("files_verified", 0), state.get("files_total", 0)
            return Readiness(False, f"not READY ({phase}, {done}/{total} files verified)")
        return Readiness(False, "not staged here")
    fp = str(marker.get("fingerprint", ""))
    manifest = read_json_or_none(meta / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("fingerprint") != fp:
        return Readiness(False, "READY marker does not match the manifest being staged", fp)
    if deep:
        files = marker.get("files")
        if not isinstance(files, list):
            return Readiness(False, "READY marker lists no files", fp)
        root = Path(dest)
        for entry in files:
            try:
                path, size, mtime_ns = entry
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
    def from_dict(cls, data: dict[str, Any]) -> DatasetState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


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
    st = DatasetState.from_dict(raw) if isinstance(raw, dict) else DatasetState(name=d.name, dest=str(d))
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
