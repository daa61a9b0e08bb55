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
from pathlib import Path, PurePosixPath
from typing import Any

from clusterops import checksum
from clusterops.errors import UsageError

VERSION = 1
# Names the stager keeps for itself inside and beside a dataset directory.
RESERVED_PREFIXES = (".staging",)


class ManifestError(UsageError):
    """A manifest (or the source it describes) is malformed or unsafe."""


@dataclass(frozen=True)
class FileEntry:
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
        self.files = sorted(self.files, key=lambda f: f.path)
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.files)

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


def fingerprint(files: list[FileEntry]) -> str:
    """sha256 over the sorted (path, size, crc) triples: two manifests of the same data agree."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda e: e.path):
        h.update(f"{f.path}\0{f.size}\0{f.crc32c}\n".encode())
    return h.hexdigest()


def check_relpath(path: str) -> str | None:
    """Why `path` is not a safe relative path inside a dataset, or None when it is."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if "\0" in path or "\\" in path:
        return f"path {path!r} holds a NUL or backslash"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return f"path {path!r} is absolute"
    parts = PurePosixPath(path).parts
    if any(p == ".." for p in path.split("/")):
        return f"path {path!r} leaves the dataset root ('..')"
    if any(p in ("", ".") for p in path.split("/")):
        return f"path {path!r} is not normalised (empty or '.' component)"
    if parts and parts[0].startswith(RESERVED_PREFIXES):
        return f"path {path!r} uses a name the stager reserves ({parts[0]})"
    return None


def _line_of(text: str, path: Any, fallback: int) -> int:
    """The 1-based line of the entry naming `path` in the manifest text."""
    if isinstance(path, str):
        for candidate in {json.dumps(path), json.dumps(path, ensure_ascii=False)}:
            m = re.search(r'"path"\s*:\s*' + re.escape(candidate), text)
            if m:
                return text.count("\n", 0, m.start()) + 1
    return fallback


def load(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file; errors name the file and line."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ManifestError(f"{p}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{p}: cannot read manifest: {e}") from None
    return parse(text, str(p))


def parse(text: str, where: str = "manifest") -> Manifest:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where} line {e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ManifestError(f"{where}: not a clusterops manifest (no 'files' list)")
    if data.get("version", VERSION) != VERSION:
        raise ManifestError(f"{where}: manifest version {data.get('version')!r}; this reads {VERSION}")
    files: list[FileEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["files"]):
        line = _line_of(text, raw.get("path") if isinstance(raw, dict) else None, 0)
        at = f"{where} line {line}" if line else f"{where} entry {i + 1}"
        if not isinstance(raw, dict):
            raise ManifestError(f"{at}: file entry is not an object")
        why = check_relpath(raw.get("path"))  # type: ignore[arg-type]
        if why:
            raise ManifestError(f"{at}: {why}")
        size, crc = raw.get("size"), raw.get("crc32c")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{at}: size must be a non-negative integer, got {size!r}")
        if not isinstance(crc, str) or not re.fullmatch(r"[0-9a-f]{8}", crc):
            raise ManifestError(f"{at}: crc32c must be 8 lowercase hex digits, got {crc!r}")
        if raw["path"] in seen:
            raise ManifestError(f"{at}: path {raw['path']!r} listed twice")
        # A file and a directory of the same name cannot both exist.
        seen.add(raw["path"])
        files.append(FileEntry(raw["path"], size, crc))
    prefixes = {str(PurePosixPath(p).parent) for p in seen}
    for p in seen:
        if p in prefixes:
            at = f"{where} line {_line_of(text, p, 0)}"
            raise ManifestError(f"{at}: path {p!r} is both a file and a directory")
    manifest = Manifest(source=str(data.get("source", "")), files=files, name=str(data.get("name", "")))
    stated = data.get("fingerprint")
    if stated and stated != manifest.fingerprint:
        raise ManifestError(
            f"{where}: fingerprint {str(stated)[:12]}... does not match its files"
            f" ({manifest.fingerprint[:12]}...);"
            " the manifest was edited by hand: rebuild it with `clusterops stage manifest`"
        )
    return manifest


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
    return Manifest(source=src, files=files, name=name or Path(src).name)


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
    name = name or prefix.rstrip("/").split("/")[-1]
    return Manifest(source=f"s3://{loc.bucket}/{prefix}", files=files, name=name)


def _s3_stored_crc(client: Any, bucket: str, key: str) -> int | None:
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    value = head.get("ChecksumCRC32C")
    # A multipart object's checksum is a checksum of part checksums ("...-N"), unless S3 says FULL_OBJECT.
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    return checksum.from_s3(value)
