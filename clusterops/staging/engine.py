"""The copy engine: bring a dataset described by a manifest into a local directory, verified.

Each file goes into a temp file in D/.staging/ and is checked against the manifest (size, CRC32C of what
landed). Verified temps are made durable in groups: one syncfs of the destination filesystem, then each
is renamed into place and recorded (a group commit: the kernel writes back in large batches, as after
`cp -r` + `sync`, instead of one fsync per file). Files already verified (record keyed by size, mtime,
inode and checksum) are skipped, so a rerun after kill -9 finishes the job, losing at most the group in
flight. READY is removed before anything in D changes and written last.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awscrt import checksums

from clusterops import checksum
from clusterops.errors import ClusteropsError
from clusterops.fsutil import (
    DirectWriter,
    aligned_buffer,
    atomic_write_json,
    fsync_dir,
    open_nofollow,
    sync_files,
)
from clusterops.staging import manifest as mf
from clusterops.staging import state as st
from clusterops.staging.manifest import FileEntry, Manifest

GiB = 1 << 30


# In-kernel copy for directory sources; CLUSTEROPS_STAGE_COPY=read forces the user-space path (benchmarks,
# and filesystems whose copy_file_range misbehaves).
_COPY_FILE_RANGE = hasattr(os, "copy_file_range") and os.environ.get("CLUSTEROPS_STAGE_COPY", "") != "read"
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}
# Bytes per copy_file_range call; each call's bytes are then checksummed through a read-only mapping of
# the destination (no copy into user space): a quarter less system time than 1 MiB calls read back
# with preadv (BENCHMARKS.md, staging).
_COPY_CALL = 8 << 20
# Verified temps wait for a group commit (syncfs, rename, record) once Options.commit_bytes or this many
# files are pending, and at the end.
_COMMIT_FILES = 2000


class StageError(ClusteropsError):
    """Staging cannot start or cannot finish (space, lock, source)."""


class Busy(StageError):
    """Another process is staging this dataset."""


@dataclass
class Options:
    workers: int = 8
    buffer_bytes: int = 1 << 20  # small enough to stay in cache from read to checksum to write
    bandwidth_bytes_s: float = 0.0  # 0: no cap
    fsync: bool = True
    # Space kept free beyond the data itself (filesystem metadata, other writers).
    reserve_bytes: int = 64 << 20
    # Verified temps are synced and renamed into place once this many bytes (or _COMMIT_FILES files)
    # wait, and at the end: what a kill -9 can lose is bounded by it.
    commit_bytes: int = 2 << 30


@dataclass
class Result:
    dest: str
    ready: bool
    files_total: int
    files_copied: int
    files_skipped: int
    bytes_copied: int
    seconds: float
    failed: list[dict[str, str]] = field(default_factory=list)
    # How the bytes moved: "copy_file_range" (in-kernel, then read back and checksummed), "read"
    # (read, checksum, write), both, or empty when nothing was copied.
    copy_paths: list[str] = field(default_factory=list)

    @property
    def gbps(self) -> float:
        return self.bytes_copied / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "gbps": round(self.gbps, 3)}


class TokenBucket:
    """A shared byte-rate cap across all copy threads (so 48 nodes don't flatten the shared filesystem)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = float(rate)
        self.capacity = burst if burst is not None else max(self.rate * 0.25, 1 << 20)
        self.tokens = self.capacity
        self._clock = clock  # a parameter so the cap can be checked against a clock, not a machine's speed
        self._sleep = sleep
        self.last = clock()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            now = self._clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class Source:
    """Where a dataset's bytes come from: `read(entry, sink)` feeds them in order."""

    def read(self, entry: FileEntry, sink: Callable[[memoryview], None], buf: bytearray) -> None:
        raise NotImplementedError

    def copy_into(
        self, entry: FileEntry, fd: int, buf: bytearray, account: Callable[[memoryview], None]
    ) -> bool:
        """Copy the entry into `fd` without passing its bytes through `read`'s user-space write, handing
        each piece as it landed to `account`; False when this source cannot (then `read` is used)."""
        return False

    def describe(self) -> str:
        raise NotImplementedError


class DirSource(Source):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StageError(f"{self.root}: source directory not found")
        self.real_root = self.root.resolve()

    def _path(self, entry: FileEntry) -> Path:
        path = self.root / entry.path
        if not path.resolve().is_relative_to(self.real_root):
            raise OSError(errno.EPERM, "symlink points out of the source root")
        return path

    def copy_into(
        self, entry: FileEntry, fd: int, buf: bytearray, account: Callable[[memoryview], None]
    ) -> bool:
        """The kernel copies (copy_file_range, as `cp` does: no user-space copy of the data), then each
        piece is checksummed from the destination's page cache through a read-only mapping: what is
        verified is what landed in the file, not what was read."""
        if not _COPY_FILE_RANGE:
            return False
        path = self._path(entry)
        pos = 0
        with open(path, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while True:
                try:
                    n = os.copy_file_range(f.fileno(), fd, _COPY_CALL)
                except OSError as e:
                    if pos == 0 and e.errno in _NO_COPY_FILE_RANGE:
                        return False  # this pair of filesystems cannot: the read/write path will
                    raise
                if n == 0:
                    return True
                _account_mapped(fd, pos, n, len(buf), account)
                pos += n

    def read(self, entry: FileEntry, sink: Callable[[memoryview], None], buf: bytearray) -> None:
        path = self._path(entry)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # deeper readahead
            while n := f.readinto(buf):
                sink(view[:n])

    def describe(self) -> str:
        return str(self.root)


def _account_mapped(fd: int, pos: int, n: int, piece: int, account: Callable[[memoryview], None]) -> None:
    """Hand [pos, pos+n) of fd to `account` in `piece`-sized views of a read-only mapping."""
    base = pos - pos % mmap.ALLOCATIONGRANULARITY
    end = pos + n - base
    with mmap.mmap(fd, end, prot=mmap.PROT_READ, offset=base) as mm:
        mm.madvise(mmap.MADV_SEQUENTIAL)
        view = memoryview(mm)
        try:
            at = pos - base
            while at < end:
                want = min(piece, end - at)
                # Released here, even when `account` raises (its traceback keeps the slice alive), so the
                # mapping can close and the caller sees account's error, not a BufferError.
                with view[at : at + want] as part:
                    account(part)
                at += want
        finally:
            view.release()


class S3Source(Source):
    def __init__(self, url: str, client: Any):
        from clusterops.s3 import S3Url

        loc = S3Url.parse(url)
        self.bucket = loc.bucket
        self.prefix = loc.key if not loc.key or loc.key.endswith("/") else loc.key + "/"
        self.client = client

    def read(self, entry: FileEntry, sink: Callable[[memoryview], None], buf: bytearray) -> None:
        from clusterops.staging.s3source import stream_object

        stream_object(self.client, self.bucket, self.prefix + entry.path, entry.size, sink, buf)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def source_for(location: str, s3cfg: Any = None) -> Source:
    if location.startswith("s3://"):
        from clusterops import s3

        return S3Source(location, s3.client(s3cfg))
    return DirSource(location)


class _Lock:
    def __init__(self, meta: Path):
        st.ensure_dir(meta)
        self.path = meta / "lock"
        self.fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never through a symlink
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise Busy(f"{meta.parent}: another stager (pid {holder or '?'}) is on this dataset") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


def _load_records(path: Path) -> dict[str, tuple[int, int, int, str]]:
    records: dict[str, tuple[int, int, int, str]] = {}
    try:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                    if r.get("invalid"):
                        records.pop(r["path"], None)
                        continue
                    records[r["path"]] = (int(r["size"]), int(r["mtime_ns"]), int(r["ino"]), str(r["crc32c"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by kill -9
    except FileNotFoundError:
        pass
    return records


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    sv = os.statvfs(probe)
    return sv.f_bavail * sv.f_frsize


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _safe_target(dest: Path, rel: str) -> Path:
    """The final path of `rel` in dest; refuses a path that leaves it, and a parent that is a symlink
    (it could point anywhere)."""
    why = mf.check_relpath(rel)
    if why:
        raise OSError(errno.EPERM, why)
    target = dest / rel
    parent = dest
    for part in rel.split("/")[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise OSError(errno.EPERM, f"{parent} is a symlink in the destination")
    return target


class Stager:
    def __init__(
        self,
        manifest: Manifest,
        source: Source,
        dest: str | os.PathLike[str],
        options: Options | None = None,
        progress: Callable[[int], None] | None = None,
        on_state: Callable[[st.DatasetState], None] | None = None,
        root: str | os.PathLike[str] | None = None,
    ):
        """`root`, where given, is the configured datasets root: `dest` must resolve to a place inside
        it. A `dest` that is a symlink is refused either way."""
        self.manifest = manifest
        self.source = source
        self.dest = Path(os.path.abspath(dest))
        if root is not None:
            st.require_under(self.dest, root)
        elif os.path.islink(self.dest):
            raise StageError(f"{self.dest}: the destination is a symlink; give the directory itself")
        self.meta = st.meta_dir(self.dest)
        self.tmpdir = self.dest / st.STAGING_DIR
        self.opts = options or Options()
        self.progress = progress
        self.on_state = on_state
        self.bucket = TokenBucket(self.opts.bandwidth_bytes_s)
        self._lock = threading.Lock()
        self._records_fd: int | None = None
        self._copy_paths: set[str] = set()
        self._commit_lock = threading.Lock()
        self._pending: list[tuple[FileEntry, Path, Path]] = []  # verified temps awaiting the group commit
        self._pending_bytes = 0
        self.state = st.DatasetState(
            name=manifest.name or self.dest.name,
            dest=str(self.dest),
            source=source.describe(),
            fingerprint=manifest.fingerprint,
            files_total=len(manifest.files),
            bytes_total=manifest.total_bytes,
        )
        self._last_state_write = 0.0

    # -- bookkeeping -------------------------------------------------------------------------------
    def _write_state(self, force: bool = False) -> None:
        now = time.time()
        with self._lock:
            if not force and now - self._last_state_write < 1.0:
                return
            self._last_state_write = now
            self.state.updated_at = now
            elapsed = now - self.state.started_at
            self.state.gbps = round(self.state.bytes_copied / elapsed / 1e9, 3) if elapsed > 0 else 0.0
            snapshot = self.state.to_dict()
        _write_json_fast(self.meta / "state.json", snapshot)
        if self.on_state:
            self.on_state(st.DatasetState.from_dict(snapshot))

    def _record(self, entry: FileEntry, target: Path) -> None:
        s = os.stat(target)
        line = json.dumps(
            {
                "path": entry.path,
                "size": s.st_size,
                "mtime_ns": s.st_mtime_ns,
                "ino": s.st_ino,
                "crc32c": entry.crc32c,
            }
        )
        assert self._records_fd is not None
        os.write(self._records_fd, (line + "\n").encode())  # O_APPEND: one write, one line

    def _unready(self) -> None:
        marker = self.meta / "READY"
        if marker.exists():
            marker.unlink()
            fsync_dir(self.meta)

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> Result:
        st.ensure_dir(self.meta)
        lock = _Lock(self.meta)
        try:
            return self._run()
        finally:
            if self._records_fd is not None:
                os.close(self._records_fd)
                self._records_fd = None
            lock.release()

    def _run(self) -> Result:
        t0 = time.monotonic()
        self.state.started_at = time.time()
        self.state.pid = os.getpid()
        self.state.phase = "checking"
        old_manifest = st.read_json_or_none(self.meta / "manifest.json")
        old_state = st.read_json_or_none(self.meta / "state.json")
        # A newer clusterops staged here: its bookkeeping is not ours to rewrite.
        st.format_version(old_state, str(self.meta / "state.json"))
        if isinstance(old_manifest, dict) and old_manifest.get("version", 1) not in mf.READS:
            raise st.StateFormatError(
                f"{self.meta / 'manifest.json'}: manifest format {old_manifest.get('version')!r:.20} is not"
                f" one this clusterops reads ({mf.READS[0]} and {mf.READS[-1]}): upgrade clusterops"
            )
        fp = self.manifest.fingerprint
        same_manifest = isinstance(old_manifest, dict) and old_manifest.get("fingerprint") == fp
        if not same_manifest:
            self._unready()
            if isinstance(old_manifest, dict):
                # Kept until pruned, so a run killed before pruning still prunes when rerun.
                atomic_write_json(self.meta / "prune.json", old_manifest)
            # Fresh manifest: old verification records describe other content.
            (self.meta / "verified.jsonl").unlink(missing_ok=True)
            self.manifest.save(self.meta / "manifest.json")
        self._write_state(force=True)
        st.ensure_dir(self.dest)
        records = _load_records(self.meta / "verified.jsonl")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._records_fd = open_nofollow(self.meta / "verified.jsonl", flags, 0o644)

        to_copy: list[FileEntry] = []
        to_check: list[FileEntry] = []
        for entry in self.manifest.files:
            target = self.dest / entry.path
            try:
                s = os.stat(target)
            except OSError:
                to_copy.append(entry)
                continue
            rec = records.get(entry.path)
            if rec == (s.st_size, s.st_mtime_ns, s.st_ino, entry.crc32c):
                self.state.files_verified += 1
                self.state.bytes_verified += entry.size
            elif s.st_size == entry.size:
                to_check.append(entry)
            else:
                to_copy.append(entry)
        if to_copy or to_check:
            self._unready()

        # Files already there with the right size: read them once instead of copying them again.
        self._parallel(to_check, self._check_one, to_copy)

        need = sum(e.size for e in to_copy)
        free = free_bytes(self.dest)
        if need and need + self.opts.reserve_bytes > free:
            self.state.phase = "failed"
            self.state.message = (
                f"{self.dest}: not enough free space: {len(to_copy)} files need {_human(need)}"
                f" (+{_human(self.opts.reserve_bytes)} reserve), {_human(free)} free"
            )
            self._write_state(force=True)
            raise StageError(self.state.message)

        self.state.phase = "copying"
        self._write_state(force=True)
        to_copy.sort(key=lambda e: -e.size)  # biggest first: the pool drains evenly
        self._parallel(to_copy, self._copy_one, None)
        self._commit()
        os.fsync(self._records_fd)
        self._prune(st.read_json_or_none(self.meta / "prune.json"))
        (self.meta / "prune.json").unlink(missing_ok=True)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

        seconds = time.monotonic() - t0
        ready = not self.state.failed and self.state.files_verified == len(self.manifest.files)
        if ready:
            self._fsync_tree()
            files = [[e.path, *self._stat_pair(e)] for e in self.manifest.files]
            atomic_write_json(
                self.meta / "READY",
                {
                    "version": st.STATE_VERSION,
                    "fingerprint": self.manifest.fingerprint,
                    "name": self.state.name,
                    "source": self.state.source,
                    "files_total": len(files),
                    "bytes_total": self.manifest.total_bytes,
                    "at": time.time(),
                    "files": files,
                },
            )
            fsync_dir(self.meta)
        self.state.phase = "ready" if ready else "failed"
        self.state.finished_at = time.time()
        if not ready and not self.state.message:
            self.state.message = f"{len(self.state.failed)} file(s) failed verification"
        self._write_state(force=True)
        return Result(
            dest=str(self.dest),
            ready=ready,
            files_total=len(self.manifest.files),
            files_copied=len(to_copy) - len(self.state.failed),
            files_skipped=len(self.manifest.files) - len(to_copy),
            bytes_copied=self.state.bytes_copied,
            seconds=seconds,
            failed=list(self.state.failed),
            copy_paths=sorted(self._copy_paths),
        )

    def _stat_pair(self, entry: FileEntry) -> tuple[int, int]:
        s = os.stat(self.dest / entry.path)
        return s.st_size, s.st_mtime_ns

    def _parallel(self, entries: list[FileEntry], fn: Callable, extra: list[FileEntry] | None) -> None:
        if not entries:
            return
        local = threading.local()

        def work(entry: FileEntry) -> Any:
            if not hasattr(local, "buf"):
                local.buf = aligned_buffer(self.opts.buffer_bytes)
            return fn(entry, local.buf)

        with ThreadPoolExecutor(max_workers=max(1, self.opts.workers)) as pool:
            futures = {pool.submit(work, e): e for e in entries}
            for fut in as_completed(futures):
                entry = futures[fut]
                try:
                    outcome = fut.result()
                except OSError as e:
                    outcome = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
                except Exception as e:  # noqa: BLE001 - one file's failure must not stop the others
                    outcome = f"{type(e).__name__}: {e}"
                if outcome is True:
                    continue
                if extra is not None:  # checking: a mismatch means copy it again
                    extra.append(entry)
                    continue
                with self._lock:
                    self.state.failed.append({"path": entry.path, "error": str(outcome)})
                self._write_state(force=True)

    def _check_one(self, entry: FileEntry, buf: bytearray) -> bool | str:
        target = self.dest / entry.path
        crc = checksum.crc32c_file(target, self.progress)
        if checksum.to_hex(crc) != entry.crc32c:
            return "local copy differs"
        self._record(entry, target)
        with self._lock:
            self.state.files_verified += 1
            self.state.bytes_verified += entry.size
        self._write_state()
        return True

    def _copy_one(self, entry: FileEntry, buf: bytearray) -> bool | str:
        st.ensure_dir(self.tmpdir)
        target = _safe_target(self.dest, entry.path)
        tmp = self.tmpdir / f"{hashlib.sha1(entry.path.encode()).hexdigest()[:16]}.{os.getpid()}.part"
        fd = open_nofollow(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        writer: DirectWriter | None = None  # only the read path writes from user space
        crc = 0
        written = 0

        def sink(view: memoryview) -> None:
            """Bytes read from the source into this thread's aligned buffer: checksummed while the CPU's
            cache still holds them (an O_DIRECT write leaves none there), then written."""
            self.bucket.take(len(view))
            crc_after = checksums.crc32c(view, crc)
            writer.pwrite(view, written)  # type: ignore[union-attr]  # set before the read starts
            account(view, crc_after)

        def account(view: memoryview, crc_after: int | None = None) -> None:
            """Bytes now in the temp file: checksum them (unless the caller did), report progress."""
            nonlocal crc, written
            if written + len(view) > entry.size:
                raise _SizeMismatch(f"source is larger than the manifest's {entry.size} bytes")
            crc = checksums.crc32c(view, crc) if crc_after is None else crc_after
            written += len(view)
            with self._lock:
                self.state.bytes_copied += len(view)
            if self.progress:
                self.progress(len(view))
            self._write_state()

        def account_capped(view: memoryview) -> None:
            self.bucket.take(len(view))
            account(view)

        try:
            try:
                how = "copy_file_range"
                if not self.source.copy_into(entry, fd, buf, account_capped):
                    how = "read"
                    writer = DirectWriter(fd, tmp)
                    self.source.read(entry, sink, buf)
                with self._lock:
                    self._copy_paths.add(how)
            except _SizeMismatch as e:
                return f"changed since the manifest was made: {e}"
            if written != entry.size:
                return f"changed since the manifest was made: {written} bytes, manifest says {entry.size}"
            if checksum.to_hex(crc) != entry.crc32c:
                return f"checksum mismatch: crc32c {checksum.to_hex(crc)}, manifest says {entry.crc32c}"
        finally:
            if writer is not None:
                writer.close()
            os.close(fd)
            if not (written == entry.size and checksum.to_hex(crc) == entry.crc32c):
                tmp.unlink(missing_ok=True)
        with self._lock:
            self._pending.append((entry, tmp, target))
            self._pending_bytes += entry.size
            due = self._pending_bytes >= self.opts.commit_bytes or len(self._pending) >= _COMMIT_FILES
        if due:
            self._commit()
        return True

    def _commit(self) -> None:
        """Make the verified temps durable with one syncfs of the destination's filesystem, then rename
        each into place and record it. A crash before the syncfs returns leaves only temps, which the
        next run ignores; after it, every rename points at data already on disk."""
        with self._commit_lock:
            with self._lock:
                group, self._pending, self._pending_bytes = self._pending, [], 0
            if not group:
                return
            if self.opts.fsync:
                try:
                    sync_files(self.tmpdir, [tmp for _, tmp, _ in group])
                except OSError as e:
                    why = f"sync: {e.strerror or e}"
                    with self._lock:
                        self.state.failed.extend({"path": entry.path, "error": why} for entry, _, _ in group)
                    return
            for entry, tmp, target in group:
                try:
                    target = _safe_target(self.dest, entry.path)  # again: a parent may have been swapped
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, target)
                    self._record(entry, target)
                except OSError as e:
                    with self._lock:
                        self.state.failed.append({"path": entry.path, "error": f"{e.strerror or e}"})
                    continue
                with self._lock:
                    self.state.files_verified += 1
                    self.state.bytes_verified += entry.size
            self._write_state()

    def _prune(self, old_manifest: Any) -> None:
        """Delete files an earlier manifest of this dataset put here and the new one no longer lists."""
        if not isinstance(old_manifest, dict):
            return
        keep = {e.path for e in self.manifest.files}
        for raw in old_manifest.get("files", []):
            path = raw.get("path") if isinstance(raw, dict) else None
            if isinstance(path, str) and path not in keep and mf.check_relpath(path) is None:
                try:
                    _safe_target(self.dest, path).unlink(missing_ok=True)
                except OSError:
                    continue  # a symlinked parent, or a directory there: not a file we put there

    def _fsync_tree(self) -> None:
        if not self.opts.fsync:
            return
        dirs = {self.dest} | {(self.dest / e.path).parent for e in self.manifest.files}
        for d in dirs:
            fsync_dir(d)


def _write_json_fast(path: Path, obj: Any) -> None:
    """Replace a progress file atomically without fsync: it is advisory (READY decides), rewritten every
    second, and an fsync here would make ext4 flush the data being copied at the same time."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class _SizeMismatch(Exception):
    pass


def stage(
    manifest: Manifest,
    source: Source,
    dest: str | os.PathLike[str],
    options: Options | None = None,
    progress: Callable[[int], None] | None = None,
) -> Result:
    return Stager(manifest, source, dest, options, progress).run()


def verify(
    dest: str | os.PathLike[str], workers: int = 4, progress: Callable[[int], None] | None = None
) -> Result:
    """Re-read every file of a staged dataset against its manifest; READY is removed on any mismatch."""
    d = Path(os.path.abspath(dest))
    meta = st.meta_dir(d)
    if not (meta / "manifest.json").is_file():
        raise StageError(f"{d}: not a staged dataset (no {meta / 'manifest.json'})")
    m = mf.load(meta / "manifest.json")
    lock = _Lock(meta)
    t0 = time.monotonic()
    failed: list[dict[str, str]] = []
    try:

        def one(entry: FileEntry) -> str | None:
            try:
                crc = checksum.crc32c_file(d / entry.path, progress)
            except OSError as e:
                return e.strerror or str(e)
            return None if checksum.to_hex(crc) == entry.crc32c else "content differs from the manifest"

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for entry, why in zip(m.files, pool.map(one, m.files), strict=True):
                if why:
                    failed.append({"path": entry.path, "error": why})
        if failed:
            # The per-file records must not vouch for these any more: the next run re-copies them.
            fd = open_nofollow(meta / "verified.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            with os.fdopen(fd, "a") as f:
                for bad in failed:
                    f.write(json.dumps({"path": bad["path"], "invalid": True}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if failed:
            (meta / "READY").unlink(missing_ok=True)
            fsync_dir(meta)
            raw = st.read_json_or_none(meta / "state.json") or {}
            st.format_version(raw, str(meta / "state.json"))
            raw.update({"phase": "failed", "failed": failed, "message": "verify found damaged files"})
            atomic_write_json(meta / "state.json", raw)
    finally:
        lock.release()
    ready = not failed and st.check_ready(d).ready
    return Result(str(d), ready, len(m.files), 0, 0, 0, time.monotonic() - t0, failed)


def evict(dest: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> int:
    """Remove a staged dataset: READY first (so no job starts on it), then the data, then the bookkeeping.
    Only a directory that carries our own staging state naming it (and, with `root`, inside it)."""
    d = Path(os.path.abspath(dest))
    meta = st.meta_dir(d)
    if root is not None:
        st.require_under(d, root)
    why = st.is_staged_dataset(d)
    if why:
        raise StageError(f"{d}: not a staged dataset ({why}); nothing removed")
    lock = _Lock(meta)
    try:
        (meta / "READY").unlink(missing_ok=True)
        fsync_dir(meta)
        files = [p for p in d.rglob("*") if p.is_file() and not p.is_symlink()] if d.exists() else []
        freed = sum(p.stat().st_size for p in files)
        shutil.rmtree(d, ignore_errors=True)
    finally:
        lock.release()
    shutil.rmtree(meta, ignore_errors=True)
    return freed
