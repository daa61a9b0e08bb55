"""Token shards in datatrove's layout, readable without datatrove, torch or numpy.

One shard is three files side by side:

- ``NAME.ds``          the tokens of every document, back to back, little-endian uint16 or uint32;
- ``NAME.ds.index``    one little-endian uint64 per document: the token offset where it *ends*
                       (exclusive, cumulative; the last entry equals the shard's token count);
- ``NAME.ds.metadata`` three text lines: ``TOKENIZER|TOKEN_SIZE``, the token count, and the count in
                       words (e.g. ``1.2 MT``). Older datatrove wrote the first line without ``|SIZE``;
                       then the token size is the .ds size divided by the count.

A reader (the trainer) uses :class:`ShardSet` for fixed windows of ``seq_len + 1`` tokens across a folder
of shards (the same windows datatrove's ``DatatroveFolderDataset`` yields), or :class:`Shard` for one file.
Everything here is mmap-backed and returns ``memoryview`` objects of unsigned ints; ``Shard.array()``
gives a numpy view when numpy is installed.
"""

from __future__ import annotations

import array
import bisect
import mmap
import os
import re
import stat
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clusterops.errors import UsageError

SUFFIX = ".ds"
INDEX_SUFFIX = ".ds.index"
METADATA_SUFFIX = ".ds.metadata"
TOKEN_SIZES = (2, 4)
_FORMAT = {2: "H", 4: "I"}  # memoryview.cast / struct codes
INDEX_ENTRY = 8  # uint64 per document
MAX_METADATA_BYTES = 64 << 10  # three short lines; anything larger is not a metadata file
MAX_TOKENIZER_CHARS = 256
MAX_TOKEN_COUNT = (1 << 63) - 1
_COUNT_RE = re.compile(r"[0-9]{1,19}")
_SIZE_RE = re.compile(r"[0-9]{1,3}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

if sys.byteorder != "little":  # pragma: no cover - every platform we run on is little-endian
    raise ImportError("clusterops.data.shards assumes a little-endian host (the files are little-endian)")


class ShardError(UsageError, ValueError):
    """A shard file is missing, truncated, or disagrees with its index or metadata. Also a ValueError,
    as it always was, for callers that catch that."""


@dataclass(frozen=True)
class ShardIndex:
    documents: int
    last_end: int  # where the last document ends (the shard's token count in a sound shard)


@dataclass(frozen=True)
class ShardMetadata:
    tokenizer: str
    token_size: int | None  # None: not stated (older datatrove); infer from the .ds size
    token_count: int

    def render(self) -> str:
        size = self.token_size or 2
        return "\n".join(
            [f"{self.tokenizer}|{size}", str(self.token_count), humanize_tokens(self.token_count)]
        )


def humanize_tokens(count: int) -> str:
    """`1234567` -> `1.2 MT`, the third line datatrove writes."""
    value = float(count)
    for unit in ("", "k", "M", "G", "T", "P"):
        if abs(value) < 1000 or unit == "P":
            return f"{value:.0f} {unit}T" if unit == "" else f"{value:.1f} {unit}T"
        value /= 1000
    raise AssertionError("unreachable")


def _show(value: str, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_metadata(text: str, where: str = "metadata") -> ShardMetadata:
    """`TOKENIZER|TOKEN_SIZE`, then the token count (then a human count, ignored), checked: a tokenizer
    name of printable characters, a size of 2 or 4, a count of 0 to 2**63-1 in ASCII digits."""
    if len(text) > MAX_METADATA_BYTES:
        raise ShardError(f"{where}: {len(text)} characters, more than a metadata file's {MAX_METADATA_BYTES}")
    lines = [line.strip() for line in text.split("\n")]
    if len(lines) < 2 or not lines[1]:
        raise ShardError(f"{where}: expected 'TOKENIZER|TOKEN_SIZE' and a token count on two lines")
    name, sep, size_text = lines[0].rpartition("|")
    token_size: int | None = None
    if sep and _SIZE_RE.fullmatch(size_text):
        token_size = int(size_text)
        if token_size not in TOKEN_SIZES:
            raise ShardError(f"{where}: line 1: token size {token_size} is not 2 (uint16) or 4 (uint32)")
    else:
        name = lines[0]
    if len(name) > MAX_TOKENIZER_CHARS or _CONTROL_RE.search(name):
        raise ShardError(
            f"{where}: line 1: tokenizer {_show(name)} is longer than {MAX_TOKENIZER_CHARS} characters"
            " or holds a control character"
        )
    if not _COUNT_RE.fullmatch(lines[1]) or int(lines[1]) > MAX_TOKEN_COUNT:
        raise ShardError(
            f"{where}: line 2: token count must be 0 to 2**63-1 in digits, got {_show(lines[1])}"
        )
    return ShardMetadata(tokenizer=name, token_size=token_size, token_count=int(lines[1]))


def parse_index(data: bytes | memoryview, token_count: int | None = None, where: str = "index") -> ShardIndex:
    """An index (uint64 little-endian document ends), checked: whole entries, never decreasing, and
    (given the shard's token count) ending exactly there."""
    if len(data) % INDEX_ENTRY:
        raise ShardError(f"{where}: {len(data)} bytes is not a multiple of 8 (uint64 entries)")
    ends = memoryview(data).cast("B").cast("Q")
    prev = 0
    for position, end in enumerate(ends):
        if end < prev:
            raise ShardError(f"{where}: entry {position} ({end}) is below the one before ({prev})")
        prev = end
    if token_count is not None:
        if ends and prev != token_count:
            raise ShardError(
                f"{where}: last document ends at {prev}, the token file holds {token_count} tokens"
            )
        if not ends and token_count:
            raise ShardError(f"{where}: no documents for {token_count} tokens")
    return ShardIndex(documents=len(ends), last_end=prev)


def read_metadata(path: str | os.PathLike[str]) -> ShardMetadata:
    """A .ds.metadata file: a regular file (a FIFO is refused, not waited on) of at most 64 KiB, UTF-8."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ShardError(f"{p}: metadata missing") from None
    except OSError as e:
        raise ShardError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ShardError(f"{p}: not a regular file")
        os.set_blocking(fd, True)
        data = os.read(fd, MAX_METADATA_BYTES + 1)
    except OSError as e:
        raise ShardError(f"{p}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise ShardError(f"{p}: not UTF-8 text (byte {e.start})") from None
    return parse_metadata(text, p)


def shard_paths(ds_path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """(.ds, .ds.index, .ds.metadata) for a shard given by its .ds path."""
    ds = Path(ds_path)
    if not ds.name.endswith(SUFFIX):
        raise ShardError(f"{ds}: a shard's token file ends in {SUFFIX}")
    return ds, ds.with_name(ds.name + ".index"), ds.with_name(ds.name + ".metadata")


def find_shards(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Every `*.ds` token file under `folder`, sorted by path (datatrove's order). Hidden names skipped."""
    root = Path(folder)
    if root.is_file():
        return [root]
    pattern = f"**/*{SUFFIX}" if recursive else f"*{SUFFIX}"
    found = [
        p
        for p in root.glob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found)


class Shard:
    """One `.ds` token file with its index and metadata, memory-mapped read-only."""

    def __init__(self, ds_path: str | os.PathLike[str], token_size: int | None = None):
        self.path, self.index_path, self.metadata_path = shard_paths(ds_path)
        self.metadata: ShardMetadata | None = None
        if self.metadata_path.is_file():
            self.metadata = read_metadata(self.metadata_path)
        try:
            self.nbytes = self.path.stat().st_size
        except FileNotFoundError:
            raise ShardError(f"{self.path}: no such token file") from None
        self.token_size = token_size or (self.metadata.token_size if self.metadata else None) or self._infer()
        if self.token_size not in TOKEN_SIZES:
            raise ShardError(f"{self.path}: token size {self.token_size} is not 2 or 4")
        self._tokens: memoryview | None = None
        self._mm: mmap.mmap | None = None
        self._ends: memoryview | None = None
        self._ends_mm: mmap.mmap | None = None

    def _infer(self) -> int:
        if self.metadata and self.metadata.token_count > 0:
            size, rem = divmod(self.nbytes, self.metadata.token_count)
            if rem == 0 and size in TOKEN_SIZES:
                return size
            raise ShardError(
                f"{self.path}: {self.nbytes} bytes for {self.metadata.token_count} tokens"
                " is neither uint16 nor uint32"
            )
        return 2

    @property
    def num_tokens(self) -> int:
        return self.nbytes // self.token_size

    @property
    def dtype(self) -> str:
        return "uint16" if self.token_size == 2 else "uint32"

    def tokens(self) -> memoryview:
        """All tokens as a read-only memoryview of unsigned ints (zero-copy)."""
        if self._tokens is None:
            if self.nbytes == 0:
                self._tokens = memoryview(b"").cast(_FORMAT[self.token_size])
            else:
                with open(self.path, "rb") as f:
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                usable = (self.nbytes // self.token_size) * self.token_size
                self._tokens = memoryview(self._mm)[:usable].cast(_FORMAT[self.token_size])
        return self._tokens

    def doc_ends(self) -> memoryview:
        """Document end offsets (exclusive, in tokens) as a memoryview of uint64."""
        if self._ends is None:
            try:
                size = self.index_path.stat().st_size
            except FileNotFoundError:
                raise ShardError(f"{self.index_path}: no index file") from None
            if size == 0:
                self._ends = memoryview(b"").cast("Q")
            else:
                with open(self.index_path, "rb") as f:
                    self._ends_mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._ends = memoryview(self._ends_mm)[: size - size % INDEX_ENTRY].cast("Q")
        return self._ends

    @property
    def num_documents(self) -> int:
        return len(self.doc_ends())

    def document(self, i: int) -> memoryview:
        ends = self.doc_ends()
        if not -len(ends) <= i < len(ends):
            raise IndexError(f"{self.path}: document {i} out of range ({len(ends)} documents)")
        i %= len(ends)
        start = ends[i - 1] if i > 0 else 0
        return self.tokens()[start : ends[i]]

    def documents(self) -> Iterator[memoryview]:
        start = 0
        tokens = self.tokens()
        for end in self.doc_ends():
            yield tokens[start:end]
            start = end

    def num_windows(self, seq_len: int) -> int:
        """How many full `seq_len + 1` token windows this shard holds (datatrove's dataset length)."""
        return self.num_tokens // (seq_len + 1)

    def window(self, i: int, seq_len: int) -> memoryview:
        """Window `i` of `seq_len + 1` tokens: inputs are [:-1], targets [1:]."""
        if not 0 <= i < self.num_windows(seq_len):
            raise IndexError(f"{self.path}: window {i} out of range ({self.num_windows(seq_len)} windows)")
        n = seq_len + 1
        return self.tokens()[i * n : (i + 1) * n]

    def array(self):
        """The tokens as a read-only numpy memmap (needs numpy)."""
        import numpy as np

        if self.nbytes == 0:
            return np.zeros(0, dtype=np.dtype(self.dtype).newbyteorder("<"))
        return np.memmap(
            self.path, dtype=np.dtype(self.dtype).newbyteorder("<"), mode="r", shape=(self.num_tokens,)
        )

    def close(self) -> None:
        for view in (self._tokens, self._ends):
            if view is not None:
                view.release()
        for mm in (self._mm, self._ends_mm):
            if mm is not None:
                mm.close()
        self._tokens = self._ends = None
        self._mm = self._ends_mm = None

    def __enter__(self) -> Shard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Shard({str(self.path)!r}, tokens={self.num_tokens}, token_size={self.token_size})"


class ShardSet:
    """A folder of shards read as one sequence of `seq_len + 1` token windows, files in sorted order."""

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], seq_len: int):
        if isinstance(paths, (str, os.PathLike)):
            files = find_shards(paths)
            if not files:
                raise ShardError(f"{paths}: no {SUFFIX} shards found")
        else:
            files = [Path(p) for p in paths]
        if seq_len < 1:
            raise ValueError("seq_len must be at least 1")
        self.seq_len = seq_len
        self.shards = [Shard(p) for p in files]
        self._starts = [0]
        for shard in self.shards:
            self._starts.append(self._starts[-1] + shard.num_windows(seq_len))

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.shards)

    def __getitem__(self, i: int) -> memoryview:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)} windows)")
        k = bisect.bisect_right(self._starts, i) - 1
        return self.shards[k].window(i - self._starts[k], self.seq_len)

    def __iter__(self) -> Iterator[memoryview]:
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        for s in self.shards:
            s.close()


class ShardWriter:
    """Write one shard: documents appended in order; `close()` writes the index then the metadata.

    The three files are written under hidden temp names and renamed into place on close, metadata last,
    so a reader never sees a shard whose metadata exists before its tokens and index are complete.
    """

    def __init__(self, ds_path: str | os.PathLike[str], token_size: int = 2, tokenizer: str = "byte"):
        if token_size not in TOKEN_SIZES:
            raise ValueError(f"token_size must be 2 or 4, not {token_size}")
        self.path, self.index_path, self.metadata_path = shard_paths(ds_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.token_size = token_size
        self.tokenizer = tokenizer
        self._max = (1 << (8 * token_size)) - 1
        # Private temp names (O_EXCL, mode 0600): a name planted in the folder, a symlink, is never
        # opened. Made readable like any shard before it is renamed into place.
        self._tmp = _private_temp(self.path)
        self._f = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        self._ends: list[int] = []
        self.num_tokens = 0
        self.closed = False

    def write(self, tokens: Iterable[int] | memoryview | bytes) -> None:
        """Append one document."""
        if isinstance(tokens, memoryview) and tokens.format == _FORMAT[self.token_size]:
            data = tokens.tobytes()
            count = len(tokens)
        else:
            try:
                arr = array.array(_FORMAT[self.token_size], tokens)
            except OverflowError:
                raise ValueError(f"token id out of range for uint{8 * self.token_size}") from None
            if arr.itemsize != self.token_size:  # pragma: no cover - 'I' is 4 bytes on every Linux ABI
                raise ValueError(f"no {self.token_size}-byte unsigned array type on this platform")
            data = arr.tobytes()
            count = len(arr)
        self._f.write(data)
        self.num_tokens += count
        self._ends.append(self.num_tokens)

    def close(self) -> ShardMetadata:
        if self.closed:
            raise ValueError("shard already closed")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        meta = ShardMetadata(self.tokenizer, self.token_size, self.num_tokens)
        index_tmp = _private_temp(self.index_path)
        meta_tmp = _private_temp(self.metadata_path)
        _write_synced(index_tmp, struct.pack(f"<{len(self._ends)}Q", *self._ends))
        _write_synced(meta_tmp, meta.render().encode())
        os.replace(self._tmp, self.path)
        os.replace(index_tmp, self.index_path)
        os.replace(meta_tmp, self.metadata_path)
        self.closed = True
        return meta

    def abort(self) -> None:
        if not self.closed:
            self._f.close()
            self._tmp.unlink(missing_ok=True)
            self.closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _private_temp(final: Path) -> Path:
    """An empty file of our own beside `final` (mkstemp: O_EXCL, so never through a planted symlink)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class ShardReport:
    path: str
    token_size: int | None
    tokens: int
    documents: int
    tokenizer: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "token_size": self.token_size,
            "tokens": self.tokens,
            "documents": self.documents,
            "tokenizer": self.tokenizer,
            "ok": self.ok,
            "problems": list(self.problems),
        }


def validate_shard(ds_path: str | os.PathLike[str], vocab_size: int | None = None) -> ShardReport:
    """Check one shard: sizes are whole tokens / uint64s, the index is monotonic and ends at the token
    count, and the metadata's count agrees. Returns a report listing every problem found."""
    ds, index, meta_path = shard_paths(ds_path)
    problems: list[str] = []
    report = ShardReport(str(ds), None, 0, 0, "", problems)
    if not ds.is_file():
        problems.append(f"{ds}: token file missing")
        return report
    meta: ShardMetadata | None = None
    if not os.path.lexists(meta_path):
        problems.append(f"{meta_path}: metadata missing")
    else:
        try:
            meta = read_metadata(meta_path)
            report.tokenizer = meta.tokenizer
        except ShardError as e:
            problems.append(str(e))
    nbytes = ds.stat().st_size
    token_size = meta.token_size if meta and meta.token_size else None
    if token_size is None:
        if (
            meta
            and meta.token_count > 0
            and nbytes % meta.token_count == 0
            and nbytes // meta.token_count in (2, 4)
        ):
            token_size = nbytes // meta.token_count
        else:
            token_size = 2
    report.token_size = token_size
    if nbytes % token_size:
        problems.append(f"{ds}: {nbytes} bytes is not a multiple of the token size {token_size}")
    tokens = nbytes // token_size
    report.tokens = tokens
    if meta and meta.token_count != tokens:
        problems.append(f"{meta_path}: says {meta.token_count} tokens, {ds.name} holds {tokens}")
    if not index.is_file():
        problems.append(f"{index}: index missing")
        return report
    isize = index.stat().st_size
    if isize % INDEX_ENTRY:
        problems.append(f"{index}: {isize} bytes is not a multiple of 8 (uint64 entries)")
    report.documents = isize // INDEX_ENTRY
    prev = 0
    with open(index, "rb") as f:
        position = 0
        while chunk := f.read(INDEX_ENTRY * 65536):
            usable = len(chunk) - len(chunk) % INDEX_ENTRY
            for end in memoryview(chunk)[:usable].cast("Q"):
                if end < prev:
                    problems.append(f"{index}: entry {position} ({end}) is below the one before ({prev})")
                    break
                prev = end
                position += 1
            else:
                continue
            break
    if report.documents and not problems and prev != tokens:
        problems.append(f"{index}: last document ends at {prev}, the token file holds {tokens} tokens")
    if report.documents == 0 and tokens:
        problems.append(f"{index}: no documents for {tokens} tokens")
    if vocab_size is not None and not problems and tokens:
        with Shard(ds, token_size) as shard:
            top = max(shard.tokens())
        if top >= vocab_size:
            problems.append(f"{ds}: token id {top} is outside the vocabulary ({vocab_size})")
    return report
