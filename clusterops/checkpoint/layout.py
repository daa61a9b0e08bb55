"""The local checkpoint layout: one directory per step, committed when its manifest is written, last.

Directories: ROOT/step-<N>; `step-100` and `step-00000100` both parse to step 100 (we write unpadded).
`step_<N>`, `iter_<N>` (Megatron-LM) and a bare `<N>` (nanotron) parse too, so other trainers' roots
work unchanged. Anything else under ROOT (temp dirs of a pull, `latest` files, ...) is ignored.

A directory is committed when MANIFEST_NAME (`clusterops-manifest.json`) exists in it. `commit()` hashes
every file, then writes the manifest atomically (temp, fsync, rename), so a manifest never describes a
half-written checkpoint. The manifest JSON (keys sorted, 2-space indent):

    {
      "format": "clusterops-checkpoint/2",  # /1 (read too): RNG state in rng-rank<R>.pt, not .safetensors
      "step": 100,                    # training step
      "tokens_seen": 409600000,       # tokens consumed when the checkpoint was taken (0: unknown)
      "dir_name": "step-100",         # the local directory name, restored by a pull
      "created_at": "2026-11-28T03:25:00Z",
      "host": "node1",                # who committed it (clusterops.config.node_name())
      "files": [                      # every file under the directory but the manifest, sorted by path
        {"path": "__0_0.distcp", "size": 6056, "crc32c": "1a2b3c4d"},   # crc32c: 8 lowercase hex digits
        ...
      ],
      "total_bytes": 7284,
      "expected_files": [".metadata", "__0_0.distcp", "__1_0.distcp"] | null,
      "parts": null | 2,              # the checkpoint is spread over this many nodes (non-DCP multi-node)
      "complete": true,               # this directory holds the whole checkpoint
      "extra": {}                     # free-form, from the caller
    }

torch.distributed.checkpoint directories: `.metadata` names every `*.distcp` file the save wrote (read
without torch, see dcp.py; a `.metadata` that is no DCP pickle is just another file). With it,
`expected_files` is that list, and a named file absent here makes the directory one node's part of a
multi-node checkpoint (`complete: false`); a file shorter than the metadata says is refused. `*.distcp`
files without a `.metadata` are a part too (another node holds the metadata). A remote checkpoint
becomes whole when the union of its parts covers `expected_files` (see remote.py).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

from clusterops import checksum
from clusterops.checkpoint import dcp
from clusterops.checkpoint.safeio import read_regular
from clusterops.errors import UsageError
from clusterops.fsutil import atomic_write_bytes

MANIFEST_NAME = "clusterops-manifest.json"
FORMAT_NAME = "clusterops-checkpoint"
FORMAT_VERSION = 2
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
READS = (FORMAT_VERSION - 1, FORMAT_VERSION)  # the current format and the previous one
MANIFEST_MAX = 256 << 20  # bytes: a million files' entries fit well inside
NAME_MAX = 4096  # characters of a path, host or date field
STEP_RE = re.compile(r"^(?:step-|step_|iter_)?(\d+)$")


class ManifestError(UsageError):
    """A manifest is missing, unreadable, or does not describe the files next to it."""


class NewerFormatError(ManifestError):
    """A record in a format newer than this clusterops reads: upgrade, never skip past it."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, '/'-separated
    size: int
    crc32c: str  # 8 lowercase hex digits


@dataclass
class Manifest:
    step: int
    files: list[FileEntry]
    tokens_seen: int = 0
    dir_name: str = ""
    created_at: str = ""
    host: str = ""
    expected_files: list[str] | None = None
    parts: int | None = None
    complete: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        return d

    def to_bytes(self) -> bytes:
        import json

        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Manifest:
        """The typed manifest of parsed JSON `d`; a ManifestError naming `where`, the field and the value
        for anything else (wrong type, negative or non-finite number, a path that leaves the directory)."""
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: not a clusterops checkpoint manifest (not a JSON object)")
        fmt = format_version(d.get("format"), FORMAT_NAME, READS, where)
        files_raw = d.get("files")
        if not isinstance(files_raw, list):
            raise ManifestError(f"{where}: files = {_show(files_raw)}, not a list")
        files = []
        for i, f in enumerate(files_raw):
            if not isinstance(f, dict):
                raise ManifestError(f"{where}: files[{i}] = {_show(f)}, not an object")
            path = _relpath(f.get("path"), f"{where}: files[{i}].path")
            crc = f.get("crc32c")
            if not isinstance(crc, str) or not _CRC_RE.match(crc):
                raise ManifestError(f"{where}: files[{i}].crc32c = {_show(crc)}, not 8 lowercase hex digits")
            files.append(FileEntry(path, _count(f.get("size"), f"{where}: files[{i}].size"), crc))
        paths = {f.path for f in files}
        if len(paths) != len(files):
            raise ManifestError(f"{where}: files lists a path twice")
        for f in files:
            parent = f.path.rpartition("/")[0]
            while parent:
                if parent in paths:
                    raise ManifestError(f"{where}: {parent!r} is listed as a file and as a directory")
                parent = parent.rpartition("/")[0]
        expected = d.get("expected_files")
        if expected is not None:
            if not isinstance(expected, list):
                raise ManifestError(f"{where}: expected_files = {_show(expected)}, not a list or null")
            expected = [_relpath(e, f"{where}: expected_files[{i}]") for i, e in enumerate(expected)]
        parts = d.get("parts")
        if parts is not None and _count(parts, f"{where}: parts") < 1:
            raise ManifestError(f"{where}: parts = {parts}, must be >= 1 or null")
        complete = d.get("complete", True)
        if not isinstance(complete, bool):
            raise ManifestError(f"{where}: complete = {_show(complete)}, not true or false")
        extra = d.get("extra") or {}
        if not isinstance(extra, dict):
            raise ManifestError(f"{where}: extra = {_show(extra)}, not an object")
        dir_name = _text(d.get("dir_name", ""), f"{where}: dir_name")
        if dir_name and (parse_step(dir_name) is None or "/" in dir_name):
            raise ManifestError(f"{where}: dir_name = {_show(dir_name)}, not a step directory name")
        m = cls(
            step=_count(d.get("step"), f"{where}: step"),
            files=files,
            tokens_seen=_count(d.get("tokens_seen", 0), f"{where}: tokens_seen"),
            dir_name=dir_name,
            created_at=_text(d.get("created_at", ""), f"{where}: created_at"),
            host=_text(d.get("host", ""), f"{where}: host"),
            expected_files=expected,
            parts=parts,
            complete=complete,
            extra=dict(extra),
            format=f"{FORMAT_NAME}/{fmt}",
        )
        return m

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        if len(data) > MANIFEST_MAX:
            raise ManifestError(f"{where}: {len(data)} bytes, more than a manifest may hold ({MANIFEST_MAX})")
        return cls.from_dict(load_json(data, where), where)


_CRC_RE = re.compile(r"^[0-9a-f]{8}$")


def load_json(data: bytes, where: str) -> Any:
    """Strict JSON from untrusted bytes: no NaN/Infinity, no nesting deep enough to exhaust the stack."""
    import json

    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ManifestError(f"{where}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ManifestError(f"{where}: not valid JSON ({' '.join(str(e).split())[:160]})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def format_version(value: Any, name: str, reads: tuple[int, ...], where: str) -> int:
    """The version N of `value` == 'NAME/N' when this clusterops reads it; else a one-line refusal."""
    prefix = f"{name}/"
    if not isinstance(value, str) or not value.startswith(prefix) or not value[len(prefix) :].isdigit():
        raise ManifestError(f"{where}: format = {_show(value)}, not {name!r} (format {prefix}{reads[-1]})")
    version = int(value[len(prefix) :][:9])
    if version > reads[-1]:
        raise NewerFormatError(
            f"{where}: format {value} is newer than this clusterops reads ({prefix}{reads[-1]}); upgrade it"
        )
    if version not in reads:
        raise ManifestError(f"{where}: format {value} is too old; this clusterops reads {reads}")
    return version


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 63:
        raise ManifestError(f"{what} = {_show(value)}, not a whole number >= 0")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > NAME_MAX or _has_control(value):
        raise ManifestError(f"{what} = {_show(value)}, not plain text")
    return value


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _relpath(value: Any, what: str) -> str:
    rel = _text(value, what)
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise ManifestError(f"{what} = {_show(rel)} leaves the checkpoint directory")
    if rel == MANIFEST_NAME:
        raise ManifestError(f"{what} = {_show(rel)}: the manifest cannot list itself")
    return rel


@dataclass(frozen=True)
class StepDir:
    step: int
    path: Path
    committed: bool


@dataclass
class VerifyReport:
    step_dir: Path
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok


def step_dir_name(step: int) -> str:
    return f"step-{step}"


def parse_step(name: str) -> int | None:
    """The step a directory name stands for, or None when it is not a step directory."""
    m = STEP_RE.match(name)
    return int(m.group(1)) if m else None


def manifest_path(step_dir: str | os.PathLike[str]) -> Path:
    return Path(step_dir) / MANIFEST_NAME


def is_committed(step_dir: str | os.PathLike[str]) -> bool:
    return manifest_path(step_dir).is_file()


def read_manifest(step_dir: str | os.PathLike[str]) -> Manifest:
    path = manifest_path(step_dir)
    try:
        return Manifest.from_bytes(read_regular(path, MANIFEST_MAX), str(path))
    except FileNotFoundError:
        raise ManifestError(f"{step_dir}: not committed (no {MANIFEST_NAME})") from None


def list_files(step_dir: str | os.PathLike[str]) -> list[str]:
    """Every regular file under `step_dir` but the manifest (and its temp files), '/'-separated, sorted."""
    root = Path(step_dir)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rel == MANIFEST_NAME or (name.startswith(f".{MANIFEST_NAME}.") and name.endswith(".tmp")):
                continue
            if full.is_symlink() or not full.is_file():
                raise UsageError(f"{full}: not a regular file; a checkpoint holds plain files only")
            out.append(rel)
    return sorted(out)


def commit(
    step_dir: str | os.PathLike[str],
    step: int,
    tokens_seen: int = 0,
    extra: dict[str, Any] | None = None,
    parts: int | None = None,
) -> Manifest:
    """List, size and CRC32C every file of `step_dir`, then write its manifest last. Idempotent: an already
    committed directory with the same step and files returns its manifest unchanged."""
    from clusterops.config import node_name

    root = Path(step_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such checkpoint directory")
    if step < 0:
        raise UsageError(f"--step {step}: must be >= 0")
    names = list_files(root)
    if is_committed(root):
        existing = read_manifest(root)
        if existing.step != step:
            raise ManifestError(f"{root}: already committed as step {existing.step}, not {step}")
        sizes = {p: (root / p).stat().st_size for p in names}
        if {f.path: f.size for f in existing.files} != sizes:
            raise ManifestError(
                f"{root}: committed earlier, but its files changed since; a committed checkpoint is "
                f"immutable (remove {MANIFEST_NAME} to commit it again)"
            )
        return existing
    if not names:
        raise UsageError(f"{root}: empty directory, nothing to commit")

    try:
        expected = dcp.expected_files(root)
    except UsageError:
        # A `.metadata` that is not a DCP pickle (another framework's, or random bytes): an ordinary
        # file of a single-directory checkpoint.
        expected = None
    complete = True
    if expected is not None:
        for rel, min_size in expected.items():
            p = root / rel
            if p.is_file() and p.stat().st_size < min_size:
                raise UsageError(f"{p}: {p.stat().st_size} bytes, but .metadata says at least {min_size}")
        complete = set(expected) <= set(names)
    elif dcp.is_dcp_part(names):
        complete = False
    if parts is not None:
        if parts < 1:
            raise UsageError(f"--parts {parts}: must be >= 1")
        complete = complete and parts == 1

    files = [FileEntry(rel, (root / rel).stat().st_size, _crc_hex(root / rel)) for rel in names]
    manifest = Manifest(
        step=step,
        files=files,
        tokens_seen=int(tokens_seen),
        dir_name=root.resolve().name,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        host=node_name(),
        expected_files=sorted(expected) if expected is not None else None,
        parts=parts,
        complete=complete,
        extra=dict(extra or {}),
    )
    write_manifest(root, manifest)
    return manifest


def write_manifest(step_dir: str | os.PathLike[str], manifest: Manifest | bytes) -> Path:
    data = manifest if isinstance(manifest, bytes) else manifest.to_bytes()
    return atomic_write_bytes(manifest_path(step_dir), data)


def require_plain_files(step_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Every file `manifest` lists is a regular file here (not a symlink, FIFO, device or directory)."""
    root = Path(step_dir)
    for f in manifest.files:
        p = root / f.path
        try:
            mode = os.lstat(p).st_mode
        except FileNotFoundError:
            raise ManifestError(f"{p}: listed in the manifest but missing") from None
        except NotADirectoryError:
            raise ManifestError(f"{p}: listed in the manifest, but a parent is a file") from None
        if not S_ISREG(mode):
            raise ManifestError(f"{p}: not a regular file; a checkpoint holds plain files only")


def verify(step_dir: str | os.PathLike[str], checksums: bool = True) -> VerifyReport:
    """Check every file the manifest lists: present, same size, and (unless checksums=False) same CRC32C."""
    root = Path(step_dir)
    report = VerifyReport(root)
    try:
        manifest = read_manifest(root)
    except ManifestError as e:
        report.problems.append(str(e))
        return report
    for f in manifest.files:
        p = root / f.path
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            report.problems.append(f"{p}: missing")
            continue
        if not S_ISREG(st.st_mode):
            report.problems.append(f"{p}: not a regular file")
            continue
        size = st.st_size
        if size != f.size:
            report.problems.append(f"{p}: {size} bytes, manifest says {f.size}")
        elif checksums and _crc_hex(p) != f.crc32c:
            report.problems.append(f"{p}: CRC32C differs from the manifest")
    return report


def list_steps(root: str | os.PathLike[str]) -> list[StepDir]:
    """Step directories under `root`, committed or not, oldest first."""
    base = Path(root)
    if not base.is_dir():
        return []
    out = []
    for child in base.iterdir():
        step = parse_step(child.name)
        if step is not None and child.is_dir() and not child.is_symlink():
            out.append(StepDir(step, child, is_committed(child)))
    out.sort(key=lambda s: (s.step, s.path.name))
    return out


def newest_committed(root: str | os.PathLike[str]) -> StepDir | None:
    committed = [s for s in list_steps(root) if s.committed]
    return committed[-1] if committed else None


def _crc_hex(path: Path) -> str:
    return checksum.to_hex(checksum.crc32c_file(path))
