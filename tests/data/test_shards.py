"""Token shards: prepare (byte-level and HF tokenizer.json), inspect/validate, and the reader API."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from clusterops.data import prepare, shards
from tests.conftest import run_cli

DOCS = ["hello world", "naïve café ☕", "", "the quick brown fox jumps over the lazy dog " * 20]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    with open(src / "a.jsonl", "w") as f:
        for d in DOCS[:3]:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    (src / "b.txt").write_text(DOCS[3])
    return src


def test_prepare_byte_level_then_inspect(tmp_path, corpus):
    out = tmp_path / "shards"
    r = run_cli(
        "data", "prepare", str(corpus), "-o", str(out), "--name", "web", "--shard-tokens", "20", "--json"
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["documents"] == 4 and result["token_size"] == 2
    names = sorted(p.name for p in out.iterdir())
    assert names[:3] == ["web_00000.ds", "web_00000.ds.index", "web_00000.ds.metadata"]
    assert len(result["shards"]) == 2  # the first shard closes once it passes 20 tokens

    # The raw layout, read the way datatrove reads it.
    first = out / "web_00000.ds"
    tokens = struct.unpack(f"<{first.stat().st_size // 2}H", first.read_bytes())
    ends = struct.unpack(
        f"<{(out / 'web_00000.ds.index').stat().st_size // 8}Q", (out / "web_00000.ds.index").read_bytes()
    )
    expected = [list(d.encode()) + [256] for d in DOCS[:2]]
    assert list(tokens) == [t for doc in expected for t in doc]
    assert list(ends) == [len(expected[0]), len(tokens)]
    meta = (out / "web_00000.ds.metadata").read_text().splitlines()
    assert meta[0] == "byte|2" and int(meta[1]) == len(tokens)

    with shards.Shard(first) as s:
        assert prepare.ByteTokenizer().decode(s.document(1)) == DOCS[1]
        assert s.num_documents == 2

    r = run_cli("data", "inspect", str(out), "--json", "--vocab-size", "257")
    assert r.returncode == 0, r.stdout
    summary = json.loads(r.stdout)
    assert summary["ok"] and summary["shards"] == 2 and summary["documents"] == 4
    assert summary["tokens"] == sum(len(d.encode()) + 1 for d in DOCS)


def _damage(out: Path, how: str) -> str:
    ds, index, meta = shards.shard_paths(out / "web_00000.ds")
    if how == "odd-size":
        with open(ds, "ab") as f:
            f.write(b"\x01")
        return "not a multiple of the token size 2"
    if how == "non-monotonic":
        ends = list(struct.unpack(f"<{index.stat().st_size // 8}Q", index.read_bytes()))
        ends[0], ends[1] = ends[1], ends[0]
        index.write_bytes(struct.pack(f"<{len(ends)}Q", *ends))
        return "is below the one before"
    if how == "count":
        lines = meta.read_text().splitlines()
        meta.write_text("\n".join([lines[0], str(int(lines[1]) + 5), lines[2]]))
        return "says"
    if how == "vocab":
        data = bytearray(ds.read_bytes())
        data[0:2] = struct.pack("<H", 300)
        ds.write_bytes(bytes(data))
        return "outside the vocabulary"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["odd-size", "non-monotonic", "count", "vocab"])
def test_inspect_finds_damage(tmp_path, corpus, how):
    out = tmp_path / "shards"
    prepare.prepare([str(corpus)], out, name="web", shard_tokens=10_000)
    expected = _damage(out, how)
    r = run_cli("data", "inspect", str(out), "--vocab-size", "257")
    assert r.returncode == 2
    assert "BAD" in r.stdout and expected in r.stdout, r.stdout


def _word_tokenizer(path: Path, vocab: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"[UNK]": 0, "<|endoftext|>": 1}
    for w in ["hello", "world", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]:
        words[w] = len(words)
    for i in range(len(words), vocab):
        words[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


@pytest.mark.parametrize("vocab, size", [(300, 2), (70_000, 4)])
def test_prepare_with_hf_tokenizer_json(tmp_path, vocab, size):
    tj = _word_tokenizer(tmp_path / "tokenizer.json", vocab)
    (tmp_path / "in.jsonl").write_text(json.dumps({"body": "hello world w69999 the fox"}) + "\n")
    out = tmp_path / "out"
    args = ["data", "prepare", str(tmp_path / "in.jsonl"), "-o", str(out), "--tokenizer", str(tj)]
    r = run_cli(*args, "--eos-token", "<|endoftext|>", "--text-key", "body", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["token_size"] == size
    s = shards.Shard(out / "shard_00000.ds")
    expect_last = 69999 if vocab > 69999 else 0  # unknown word in the small vocabulary
    assert list(s.tokens()) == [2, 3, expect_last, 4, 7, 1]
    assert s.metadata is not None and s.metadata.token_size == size
    assert run_cli("data", "inspect", str(out), "--vocab-size", str(vocab)).returncode == 0


def test_shardset_windows_span_files_in_order(tmp_path):
    for k in range(2):
        with shards.ShardWriter(tmp_path / f"s_{k:05d}.ds") as w:
            w.write(range(k * 100, k * 100 + 10))
            w.write(range(k * 100 + 10, k * 100 + 23))
    sset = shards.ShardSet(tmp_path, seq_len=7)  # windows of 8 tokens, 23 tokens -> 2 per file
    assert len(sset) == 4 and sset.num_tokens == 46
    assert list(sset[0]) == list(range(0, 8)) and list(sset[2]) == list(range(100, 108))
    assert list(sset[-1]) == list(range(108, 116))
    with pytest.raises(IndexError):
        sset[4]
    assert shards.Shard(tmp_path / "s_00001.ds").array()[3] == 103


def test_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "ok"}\n{"nope": 1}\n')
    r = run_cli("data", "prepare", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "o"))
    assert (
        r.returncode == 2
        and r.stderr.strip() == f"clusterops: {tmp_path / 'x.jsonl'} line 2: no string field 'text'"
    )
    assert not list((tmp_path / "o").glob("*.ds"))  # nothing half-written under a real name
