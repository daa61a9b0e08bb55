"""Training batches from datatrove-layout token shards, shuffled without an index.

The dataset is a sequence of fixed windows of `seq_len + 1` tokens (clusterops.data.shards.ShardSet).
Sample g of the run is window `perm_e(g mod n)` of epoch `e = g // n`, where perm_e is a seeded bijection
of [0, n) evaluated on the fly (a Feistel network with cycle walking): no index is ever built, so memory
does not grow with training steps or dataset size (SmolLM3's loader index took 16 B per sample). Rank r
of W takes samples g = i * W + r, so ranks read disjoint streams, and the whole loader state is one
counter: restoring it resumes the exact order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clusterops.data.shards import ShardSet, ShardWriter, find_shards

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Permutation:
    """A seeded bijection of range(n) in O(1) memory: a balanced Feistel network over the smallest
    even-bit power of two >= n, walking the cycle until the value falls back inside [0, n)."""

    ROUNDS = 6

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("a permutation needs at least one element")
        self.n = n
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self.half = bits // 2
        self.half_mask = (1 << self.half) - 1
        self.keys = [_mix(seed * 1_000_003 + r) for r in range(self.ROUNDS)]

    def _feistel(self, x: int) -> int:
        left, right = x >> self.half, x & self.half_mask
        for key in self.keys:
            left, right = right, left ^ (_mix(right ^ key) & self.half_mask)
        return (left << self.half) | right

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"{i} outside a permutation of {self.n}")
        x = self._feistel(i)
        while x >= self.n:  # domain is < 4n, so the expected walk is under 4 steps
            x = self._feistel(x)
        return x


@dataclass
class Batch:
    tokens: torch.Tensor  # [batch, seq] int64 inputs
    targets: torch.Tensor  # [batch, seq] int64 next tokens
    doc_ids: torch.Tensor  # [batch, seq] document number within the window
    positions: torch.Tensor  # [batch, seq] position within the document (RoPE restarts per document)
    samples: list[int]  # dataset window indices, in order (the data order, for checks and logs)

    def to(self, device: torch.device | str) -> Batch:
        move = {"non_blocking": True}
        return Batch(
            self.tokens.to(device, **move),
            self.targets.to(device, **move),
            self.doc_ids.to(device, **move),
            self.positions.to(device, **move),
            self.samples,
        )


class TokenLoader:
    """Micro-batches for one rank: disjoint per-rank streams over a seeded, index-free shuffle."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        seq_len: int,
        micro_batch: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        eos_token_id: int | None = None,
    ) -> None:
        files = find_shards(root)
        if not files:
            raise FileNotFoundError(f"{root}: no .ds token shards (stage a dataset or write one)")
        self.root = str(root)
        self.windows = ShardSet(files, seq_len)
        if len(self.windows) == 0:
            raise ValueError(f"{root}: {self.windows.num_tokens} tokens hold no window of {seq_len + 1}")
        self.seq_len, self.micro_batch = seq_len, micro_batch
        self.rank, self.world, self.seed = rank, world, seed
        self.eos_token_id = eos_token_id
        self.starts = [0]
        for shard in self.windows.shards:
            self.starts.append(self.starts[-1] + shard.num_windows(seq_len))
        self.consumed = 0  # micro-batches x micro_batch samples this rank has taken
        self._perm: tuple[int, Permutation] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def sample_index(self, g: int) -> int:
        """The dataset window that global sample g reads: a fresh permutation each epoch."""
        n = len(self.windows)
        epoch, i = divmod(g, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, Permutation(n, self.seed * 65_537 + epoch))
        return self._perm[1](i)

    def next_batch(self) -> Batch:
        rows = []
        samples = []
        for j in range(self.micro_batch):
            g = (self.consumed + j) * self.world + self.rank
            w = self.sample_index(g)
            samples.append(w)
            rows.append(self._window(w))
        self.consumed += self.micro_batch
        tokens, doc_ids, positions = (torch.from_numpy(np.stack(col)) for col in zip(*rows, strict=True))
        return Batch(tokens[:, :-1], tokens[:, 1:], doc_ids[:, :-1], positions[:, :-1], samples)

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = int(np.searchsorted(self.starts, w, side="right")) - 1
        shard = self.windows.shards[k]
        n = self.seq_len + 1
        start = (w - self.starts[k]) * n
        tokens = np.frombuffer(shard.tokens(), dtype=shard.dtype, count=n, offset=start * shard.token_size)
        tokens = tokens.astype(np.int64)
        offsets = np.arange(start, start + n, dtype=np.int64)
        if shard.index_path.is_file():
            ends = np.frombuffer(shard.doc_ends(), dtype=np.uint64)  # a view of the mmap, never copied
            doc = np.searchsorted(ends, offsets.astype(np.uint64), side="right")
            doc_start = np.where(doc > 0, ends[np.maximum(doc - 1, 0)].astype(np.int64), 0)
        elif self.eos_token_id is not None:
            # No index: a document ends at each EOS token.
            doc = np.concatenate(([0], np.cumsum(tokens[:-1] == self.eos_token_id)))
            first = np.concatenate(([True], doc[1:] != doc[:-1]))
            doc_start = np.maximum.accumulate(np.where(first, offsets, 0))
        else:
            doc, doc_start = np.zeros(n, dtype=np.int64), np.full(n, start, dtype=np.int64)
        return tokens, (doc - doc[0]).astype(np.int64), (offsets - doc_start).astype(np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {
            "samples_seen": self.consumed * self.world,  # global; lets a resume change the world size
            "seed": self.seed,
            "seq_len": self.seq_len,
            "windows": len(self.windows),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ours = {"seed": self.seed, "seq_len": self.seq_len, "windows": len(self.windows)}
        for key, value in ours.items():
            if state[key] != value:
                raise ValueError(
                    f"loader state was saved with {key}={state[key]}, this run has a different {key}: "
                    "the data order cannot be resumed exactly"
                )
        seen = int(state["samples_seen"])
        if seen % self.world:
            raise ValueError(f"{seen} samples seen do not divide over {self.world} ranks")
        self.consumed = seen // self.world


def write_synthetic(
    root: str | os.PathLike[str],
    vocab_size: int,
    tokens: int = 1 << 20,
    seed: int = 0,
    bos: int = 1,
    eos: int = 0,
    shards: int = 2,
    doc_len: tuple[int, int] = (16, 160),
) -> Path:
    """A small learnable corpus in datatrove layout: each document is an arithmetic progression modulo
    the vocabulary (random start and stride), so a model must attend within the document to predict it.
    Written once; an existing complete corpus is reused."""
    root = Path(root)
    if len(find_shards(root)) == shards:
        return root
    rng = np.random.default_rng(seed)
    low = 3  # ids 0..2 are EOS, BOS, PAD in the tiny preset
    span = vocab_size - low
    per_shard = tokens // shards
    dtype = np.uint16 if vocab_size < 65536 else np.uint32
    for s in range(shards):
        path = root / f"synthetic-{s:03d}.ds"
        with ShardWriter(path, token_size=np.dtype(dtype).itemsize, tokenizer="synthetic") as writer:
            written = 0
            while written < per_shard:
                length = int(rng.integers(*doc_len))
                start, stride = int(rng.integers(0, span)), int(rng.integers(1, 9))
                body = (start + stride * np.arange(length)) % span + low
                doc = np.concatenate(([bos], body, [eos])).astype(dtype)
                writer.write(memoryview(doc))
                written += len(doc)
    return root
