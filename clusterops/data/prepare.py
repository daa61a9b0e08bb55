"""Turn text or JSONL into token shards in datatrove's layout (see shards.py).

Tokenizers: a built-in byte-level one (UTF-8 bytes 0-255, end-of-document 256; no dependency), or any
Hugging Face `tokenizer.json` through the `tokenizers` package. Tokens are uint16 when the vocabulary
fits, else uint32. Each input line of a .jsonl file is one document (its `text` field); a .txt file is
one document.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clusterops.data.shards import ShardWriter
from clusterops.errors import UnsafePathError, UsageError

# The shard prefix becomes a file name in the output folder: NAME_00000.ds.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int | None

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens, and 256 as the end of a document."""

    name = "byte"
    vocab_size = 257
    eos_id: int | None = 256

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer.json (fast tokenizers, Rust, batch-parallel)."""

    def __init__(self, path: str | os.PathLike[str], eos_token: str | None = None):
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise UsageError(
                "--tokenizer needs the `tokenizers` package (pip install clusterops[tokenizers])"
            ) from None
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"{p}: tokenizer.json not found")
        try:
            self.tok = _Tok.from_file(str(p))
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception on a bad file
            raise UsageError(f"{p}: not a tokenizer.json: {e}") from None
        self.name = p.parent.name if p.name == "tokenizer.json" else p.stem
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = None
        if eos_token:
            self.eos_id = self.tok.token_to_id(eos_token)
            if self.eos_id is None:
                raise UsageError(f"{p}: end-of-document token {eos_token!r} is not in the vocabulary")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]


def documents(paths: list[Path], text_key: str = "text") -> Iterator[str]:
    """Every document of every input, in order; a bad JSONL line is an error naming file and line."""
    for path in paths:
        if path.suffix == ".jsonl" or path.name.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UsageError(f"{path} line {lineno}: not JSON: {e.msg}") from None
                    text = doc.get(text_key) if isinstance(doc, dict) else None
                    if not isinstance(text, str):
                        raise UsageError(f"{path} line {lineno}: no string field {text_key!r}")
                    yield text
        else:
            yield path.read_text(encoding="utf-8")


def input_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".txt", ".jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory")
    if not files:
        raise UsageError(f"no .txt or .jsonl input found in {', '.join(inputs)}")
    return files


@dataclass
class PrepareResult:
    shards: list[str] = field(default_factory=list)
    documents: int = 0
    tokens: int = 0
    token_size: int = 2
    tokenizer: str = ""

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def prepare(
    inputs: list[str],
    output: str | os.PathLike[str],
    tokenizer: Tokenizer | None = None,
    name: str = "",
    shard_tokens: int = 100_000_000,
    text_key: str = "text",
    batch: int = 1000,
) -> PrepareResult:
    """Tokenize every document into shards of about `shard_tokens` tokens: OUTPUT/NAME_00000.ds, ..."""
    tok = tokenizer or ByteTokenizer()
    token_size = 2 if tok.vocab_size <= 65536 else 4
    prefix = name or "shard"
    if not NAME_RE.fullmatch(prefix):
        raise UsageError(
            f"--name {prefix[:80]!r}: a shard prefix is 1-64 letters, digits, '.', '_' or '-'"
            " starting with a letter or digit"
        )
    out = Path(output)
    if out.is_symlink():
        raise UnsafePathError(out, "is a symlink (give the folder itself)")
    out.mkdir(parents=True, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(out).st_mode):
        raise UnsafePathError(out, "is not a directory")
    result = PrepareResult(token_size=token_size, tokenizer=tok.name)
    writer: ShardWriter | None = None

    def flush(texts: list[str]) -> None:
        nonlocal writer
        for ids in tok.encode_batch(texts):
            if tok.eos_id is not None:
                ids = [*ids, tok.eos_id]
            if writer is None:
                path = out / f"{prefix}_{len(result.shards):05d}.ds"  # a plain name: stays in `out`
                writer = ShardWriter(path, token_size, tok.name)
                result.shards.append(str(path))
            writer.write(ids)
            result.documents += 1
            result.tokens += len(ids)
            if writer.num_tokens >= shard_tokens:
                writer.close()
                writer = None

    pending: list[str] = []
    try:
        for text in documents(input_files(inputs), text_key):
            pending.append(text)
            if len(pending) >= batch:
                flush(pending)
                pending = []
        if pending:
            flush(pending)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return result
