"""Dataset manifests: every file's relative path, size and CRC32C, plus a fingerprint of the whole set.

On disk a manifest is JSON with one file entry per line, so an error can name the line it is on.
Paths are checked on load and on build: no `..`, nothing absolute, no symlink that leaves the root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from clusterops import checksum
from clusterops.errors import UsageError

# Format 2 (current) checks files_total and bytes_total against the list; format 1 (the previous one, also
# a manifest with no "version") carried them as information only. Both are read; a newer one is refused.
VERSION = 2
READS = (1, 2)
# Names the stager keeps for itself inside and beside a dataset directory.
RESERVED_PREFIXES = (".staging",)
# A dataset's name is a directory under the datasets root and a key in the config.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Bounds on what a manifest may claim: far beyond any real dataset, small enough that a hostile file
# cannot make the reader allocate without limit.
MAX_MANIFEST_BYTES = 4 << 30
MAX_FILES = 50_000_000
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_FILE_SIZE = (1 << 63) - 1
MAX_SOURCE_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The common case, checked in one match: printable ASCII components of 1-63 characters (so a path of at
# most 1024 characters is within every byte limit). Anything else takes check_relpath's full walk.
_PLAIN_PATH = re.compile(r"[\x20-\x2e\x30-\x5b\x5d-\x7e]{1,63}(?:/[\x20-\x2e\x30-\x5b\x5d-\x7e]{1,63})*")
_PLAIN_PATHS = re.compile(rf"{_PLAIN_PATH.pattern}(?:\n{_PLAIN_PATH.pattern})*")
_CRC_RE = re.compile(r"[0-9a-f]{8}")
_CRCS = re.compile(r"[0-9a-f]{8}(?:\n[0-9a-f]{8})*")
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")


class ManifestError(UsageError):
    """A manifest (or the source it describes) is malformed or unsafe."""


class FileEntry(NamedTuple):
    """One file of a dataset. A tuple, so that a million of them are made and sorted at C speed."""

    path: str  # POSIX, relative to the dataset root
    size: int
    crc32c: str  # 8 hex digits

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "crc32c": self.crc32c}


@dataclass
class Manifest:
    source: str
    files: list[FileEntry]
    name: str = ""
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        self.files = sorted(self.files)  # by path: paths are unique, so the tuples' order is theirs
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.files, presorted=True)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def render(self) -> str:
        head = {
            "version": VERSION,
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "files_total": len(self.files),
            "bytes_total": self.total_bytes,
        }
        lines = ["{"]
        for key, value in head.items():
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
        lines.append('  "files": [')
        body = [f"    {json.dumps(f.to_dict(), sort_keys=False)}" for f in self.files]
        lines.append(",\n".join(body))
        lines.append("  ]")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        from clusterops.fsutil import atomic_write_text

        return atomic_write_text(path, self.render())


_FINGERPRINT_LINE = "%s\0%d\0%s\n"  # path, size, crc32c of one FileEntry


def fingerprint(files: list[FileEntry], presorted: bool = False) -> str:
    """sha256 over the sorted (path, size, crc) triples: two manifests of the same data agree."""
    ordered = files if presorted else sorted(files)
    h = hashlib.sha256()
    step = 65536  # hashed in slices: one update per entry costs more than the hashing itself
    for i in range(0, len(ordered), step):
        h.update("".join(map(_FINGERPRINT_LINE.__mod__, ordered[i : i + step])).encode())
    return h.hexdigest()


def check_name(name: object) -> str | None:
    """Why `name` is not a dataset name (a directory under the datasets root), or None when it is."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return (
            f"dataset name {_show(name)} is not 1-64 letters, digits, '.', '_' or '-'"
            " starting with a letter or digit"
        )
    return None


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_relpath(path: object) -> str | None:
    """Why `path` is not a safe relative path inside a dataset, or None when it is."""
    if type(path) is str and len(path) <= 1024 and _PLAIN_PATH.fullmatch(path):
        first = path.split("/", 1)[0]
        if (
            "/." not in path
            and not first.startswith(".")
            or (
                "/./" not in f"/{path}/"
                and "/../" not in f"/{path}/"
                and not first.startswith(RESERVED_PREFIXES)
            )
        ):
            return None
    if not isinstance(path, str) or not path:
        return f"path must be a non-empty string, got {_show(path)}"
    if "\\" in path or _CONTROL.search(path):
        return f"path {_show(path)} holds a backslash or a control character"
    try:
        size = len(path.encode())
    except UnicodeEncodeError:
        return f"path {_show(path)} is not valid UTF-8"
    if size > MAX_PATH_BYTES:
        return f"path {_show(path)} is longer than {MAX_PATH_BYTES} bytes"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":" and path[0].isalpha()):
        return f"path {_show(path)} is absolute"
    parts = path.split("/")
    if ".." in parts:
        return f"path {_show(path)} leaves the dataset root ('..')"
    if "" in parts or "." in parts:
        return f"path {_show(path)} is not normalised (empty or '.' component)"
    if parts[0].startswith(RESERVED_PREFIXES):
        return f"path {_show(path)} uses a name the stager reserves ({parts[0]})"
    if any(len(p) > MAX_COMPONENT_BYTES // 4 and len(p.encode()) > MAX_COMPONENT_BYTES for p in parts):
        return f"path {_show(path)} has a component longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; a FIFO, device or directory is refused
    without blocking on it. Errors are one line naming the file."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ManifestError(f"{p}: {what} not found") from None
    except OSError as e:
        raise ManifestError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestError(f"{p}: {what} is not a regular file")
        if st.st_size > limit:
            raise ManifestError(f"{p}: {what} is {st.st_size} bytes, more than the {limit} allowed")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ManifestError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ManifestError(f"{p}: {what} is more than the {limit} bytes allowed")
    return data


def load(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file; errors name the file and line."""
    return parse_bytes(read_bounded(path, MAX_MANIFEST_BYTES, "manifest"), str(path))


def parse_bytes(data: bytes, where: str = "manifest") -> Manifest:
    """A manifest from raw bytes (a file, an S3 object): UTF-8 JSON, at most MAX_MANIFEST_BYTES."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{where}: manifest is {len(data)} bytes, more than the {MAX_MANIFEST_BYTES} allowed"
        )
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise ManifestError(f"{where}: not UTF-8 text (byte {e.start})") from None
    return parse(text, where)


def _refuse_constant(name: str) -> Any:
    raise ManifestError(f"non-finite number {name} is not allowed")


def parse(text: str, where: str = "manifest") -> Manifest:
    """Validate a manifest into typed records, in time linear in its size. Every error is one line
    naming the file, the line (or entry) and the field."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: manifest is longer than the {MAX_MANIFEST_BYTES} bytes allowed")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where} line {e.lineno}: not valid JSON: {e.msg}") from None
    except ManifestError as e:
        raise ManifestError(f"{where}: {e}") from None
    except RecursionError:
        raise ManifestError(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ManifestError(f"{where}: not a clusterops manifest (no 'files' list)")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"{where}: version must be a positive integer, got {_show(version)}")
    if version not in READS:
        raise ManifestError(
            f"{where}: manifest format {version} is newer than this clusterops reads"
            f" ({READS[0]} and {READS[-1]}): upgrade clusterops"
        )
    raw_files = data["files"]
    if len(raw_files) > MAX_FILES:
        raise ManifestError(f"{where}: {len(raw_files)} files, more than the {MAX_FILES} allowed")
    name = data.get("name", "")
    if name != "":
        why = check_name(name)
        if why:
            raise ManifestError(f"{where}: name: {why}")
    source = data.get("source", "")
    if not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS or _CONTROL.search(source):
        raise ManifestError(
            f"{where}: source must be a path or s3:// URL of at most {MAX_SOURCE_CHARS} characters"
            f" without control characters, got {_show(source)}"
        )
    try:
        source.encode()
    except UnicodeEncodeError:
        raise ManifestError(f"{where}: source {_show(source)} is not valid UTF-8") from None

    def fail(i: int, why: str) -> ManifestError:
        line = _entry_line(text, i)
        at = f"{where} line {line}" if line else f"{where} entry {i + 1}"
        return ManifestError(f"{at}: {why}")

    files = _entries_fast(raw_files)
    if files is None:  # something is wrong: the entry-by-entry walk finds the first fault and its line
        files = _entries_checked(raw_files, fail)
    paths = {f.path for f in files}
    # A file and a directory of the same name cannot both exist: no file's path may be another's parent.
    level = {p.rpartition("/")[0] for p in paths}
    level.discard("")
    dirs: set[str] = set()
    while level:
        dirs |= level
        level = {d.rpartition("/")[0] for d in level} - dirs
        level.discard("")
    clash = dirs & paths
    if clash:
        first = min(clash)
        raise fail(
            next(i for i, f in enumerate(raw_files) if f["path"] == first),
            f"path {first!r} is both a file and a directory",
        )
    manifest = Manifest(source=source, files=files, name=name)
    stated = data.get("fingerprint")
    if stated not in (None, ""):
        if not isinstance(stated, str) or not _FINGERPRINT_RE.fullmatch(stated):
            raise ManifestError(f"{where}: fingerprint must be 64 lowercase hex digits, got {_show(stated)}")
        if stated != manifest.fingerprint:
            raise ManifestError(
                f"{where}: fingerprint {stated[:12]}... does not match its files"
                f" ({manifest.fingerprint[:12]}...);"
                " the manifest was edited by hand: rebuild it with `clusterops stage manifest`"
            )
    if version >= 2:
        for key, actual in (("files_total", len(files)), ("bytes_total", manifest.total_bytes)):
            claimed = data.get(key)
            if claimed is not None and (type(claimed) is not int or claimed != actual):
                raise ManifestError(f"{where}: {key} is {_show(claimed)}, the files add up to {actual}")
    return manifest


def _entries_fast(raw_files: list[Any]) -> list[FileEntry] | None:
    """The entries when every one is plainly well formed, checked column by column in C (joins, sets,
    one regex over all paths); None when any might not be, for _entries_checked to say which."""
    try:
        paths = [r["path"] for r in raw_files]
        sizes = [r["size"] for r in raw_files]
        crcs = [r["crc32c"] for r in raw_files]
    except (TypeError, KeyError):
        return None
    if not paths:
        return []
    if set(map(type, paths)) != {str} or set(map(type, sizes)) != {int} or set(map(type, crcs)) != {str}:
        return None
    if min(sizes) < 0 or max(sizes) > MAX_FILE_SIZE or max(map(len, paths)) > 1024:
        return None
    joined = "\n".join(paths)
    if not _PLAIN_PATHS.fullmatch(joined) or "/." in joined or "\n." in joined or joined[0] == ".":
        return None
    if not _CRCS.fullmatch("\n".join(crcs)) or len(set(paths)) != len(paths):
        return None
    return list(map(FileEntry._make, zip(paths, sizes, crcs, strict=True)))


def _entries_checked(raw_files: list[Any], fail: Callable[[int, str], ManifestError]) -> list[FileEntry]:
    files: list[FileEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_files):
        if not isinstance(raw, dict):
            raise fail(i, f"file entry is not an object, got {_show(raw)}")
        path = raw.get("path")
        why = check_relpath(path)
        if why:
            raise fail(i, why)
        size, crc = raw.get("size"), raw.get("crc32c")
        if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
            raise fail(i, f"{path!r}: size must be an integer from 0 to 2**63-1, got {_show(size)}")
        if type(crc) is not str or not _CRC_RE.fullmatch(crc):
            raise fail(i, f"{path!r}: crc32c must be 8 lowercase hex digits, got {_show(crc)}")
        if path in seen:
            raise fail(i, f"path {path!r} listed twice")
        seen.add(path)
        files.append(FileEntry(path, size, crc))
    return files


def _entry_line(text: str, index: int) -> int | None:
    """The 1-based line where entry `index` of the top-level "files" list starts; None where it cannot
    be told. Only called on the way to an error, so one linear scan in all."""
    try:
        decoder = json.JSONDecoder()
        pos = len(text) - len(text.lstrip())
        if text[pos] != "{":
            return None
        pos += 1
        ws = re.compile(r"[ \t\n\r]*")
        while True:
            pos = ws.match(text, pos).end()  # type: ignore[union-attr]
            key, pos = decoder.raw_decode(text, pos)
            pos = ws.match(text, pos).end()  # type: ignore[union-attr]
            pos = ws.match(text, pos + 1).end()  # type: ignore[union-attr]  # past the ':'
            if key == "files" and text[pos] == "[":
                pos += 1
                for k in range(index + 1):
                    pos = ws.match(text, pos).end()  # type: ignore[union-attr]
                    if k == index:  # the line naming its path, where it has one
                        _, end = decoder.raw_decode(text, pos)
                        at = text.find('"path"', pos, end)
                        return text.count("\n", 0, at if at >= 0 else pos) + 1
                    _, pos = decoder.raw_decode(text, pos)
                    pos = ws.match(text, pos).end()  # type: ignore[union-attr]
                    pos += 1  # the ','
                return None
            _, pos = decoder.raw_decode(text, pos)
            pos = ws.match(text, pos).end()  # type: ignore[union-attr]
            pos += 1  # the ','
    except (ValueError, IndexError, RecursionError):
        return None


def _dataset_name(given: str, derived: str) -> str:
    """The name a built manifest carries: one given must be valid; one taken from the source's last
    component is kept only where it is (else none: `stage run` then needs a --dest)."""
    if given:
        why = check_name(given)
        if why:
            raise ManifestError(f"--name: {why}")
        return given
    return derived if check_name(derived) is None else ""


def walk_dir(root: str | os.PathLike[str]) -> list[tuple[str, Path, int]]:
    """(relative path, absolute path, size) of every regular file under `root`, following symlinks only
    when they stay inside the root; a symlink that points out is an error naming it."""
    base = Path(root)
    if not base.is_dir():
        raise ManifestError(f"{base}: not a directory")
    real_root = base.resolve()
    out: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        d = Path(dirpath)
        for name in sorted(dirnames):
            full = d / name
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root):
                    rel = full.relative_to(base).as_posix()
                    raise ManifestError(f"{base}: {rel}: symlink points out of the root (to {target})")
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".staging"))
        for name in sorted(filenames):
            full = d / name
            rel = full.relative_to(base).as_posix()
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root):
                    raise ManifestError(f"{base}: {rel}: symlink points out of the root (to {target})")
            st = full.stat()
            if not stat.S_ISREG(st.st_mode):
                continue
            why = check_relpath(rel)
            if why:
                raise ManifestError(f"{base}: {why}")
            out.append((rel, full, st.st_size))
    return out


def build_from_dir(
    root: str | os.PathLike[str],
    name: str = "",
    progress: Callable[[int], None] | None = None,
    workers: int = 4,
) -> Manifest:
    """Checksum every file under `root` (in parallel; awscrt releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    entries = walk_dir(root)

    def one(item: tuple[str, Path, int]) -> FileEntry:
        rel, full, _ = item
        size = full.stat().st_size
        crc = checksum.crc32c_file(full, progress)
        return FileEntry(rel, size, checksum.to_hex(crc))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        files = list(pool.map(one, entries))
    src = str(Path(root).resolve())
    return Manifest(source=src, files=files, name=_dataset_name(name, Path(src).name))


def build_from_s3(
    url: str, client: Any, name: str = "", progress: Callable[[int], None] | None = None, workers: int = 8
) -> Manifest:
    """List an s3:// prefix. S3's own full-object CRC32C is used when it has one; otherwise the object
    is read once to compute it."""
    from concurrent.futures import ThreadPoolExecutor

    from clusterops.s3 import S3Url

    loc = S3Url.parse(url)
    prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
    keys: list[tuple[str, int]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue
            keys.append((obj["Key"], int(obj["Size"])))
        if not page.get("IsTruncated"):
            break
        token = page.get("NextContinuationToken")

    def one(item: tuple[str, int]) -> FileEntry:
        key, size = item
        rel = key[len(prefix) :]
        why = check_relpath(rel)
        if why:
            raise ManifestError(f"s3://{loc.bucket}/{key}: {why}")
        crc = _s3_stored_crc(client, loc.bucket, key)
        if crc is None:
            from clusterops.staging.s3source import read_object_crc

            crc = read_object_crc(client, loc.bucket, key, size, progress)
        elif progress:
            progress(size)
        return FileEntry(rel, size, checksum.to_hex(crc))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        files = list(pool.map(one, keys))
    name = _dataset_name(name, prefix.rstrip("/").split("/")[-1])
    return Manifest(source=f"s3://{loc.bucket}/{prefix}", files=files, name=name)


def _s3_stored_crc(client: Any, bucket: str, key: str) -> int | None:
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    value = head.get("ChecksumCRC32C")
    # A multipart object's checksum is a checksum of part checksums ("...-N"), unless S3 says FULL_OBJECT.
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    return checksum.from_s3(value)
