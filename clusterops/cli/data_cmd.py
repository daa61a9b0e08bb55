"""`clusterops data`: token shards in datatrove's layout (prepare, inspect)."""

from __future__ import annotations

from pathlib import Path

import typer

from clusterops.cli.common import JSON_OPTION, print_json

app = typer.Typer(no_args_is_help=True)


@app.command("prepare")
def prepare_cmd(
    inputs: list[str] = typer.Argument(..., help=".txt / .jsonl files or directories of them."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the shards."),
    tokenizer: Path = typer.Option(
        None, "--tokenizer", help="A Hugging Face tokenizer.json (default: bytes)."
    ),
    eos_token: str = typer.Option(None, "--eos-token", help="End-of-document token (HF tokenizer)."),
    name: str = typer.Option("shard", "--name", help="Shard file prefix: NAME_00000.ds, ..."),
    shard_tokens: int = typer.Option(
        100_000_000, "--shard-tokens", help="Start a new shard after this many."
    ),
    text_key: str = typer.Option("text", "--text-key", help="JSONL field holding the text."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Tokenize text/JSONL into NAME_NNNNN.ds + .ds.index + .ds.metadata (uint16 or uint32 tokens)."""
    from clusterops.data import prepare

    tok = prepare.HFTokenizer(tokenizer, eos_token) if tokenizer else prepare.ByteTokenizer()
    result = prepare.prepare(inputs, output, tok, name=name, shard_tokens=shard_tokens, text_key=text_key)
    if json_out:
        print_json(result.to_dict())
    else:
        print(
            f"{output}: {len(result.shards)} shards, {result.documents} documents, {result.tokens} tokens"
            f" (uint{8 * result.token_size}, tokenizer {result.tokenizer})"
        )


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="A shard (.ds) or a folder of shards."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Also check every token id is below this."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Validate shards: sizes whole tokens, index monotonic and ending at the count, metadata agrees.
    Exit 2 when any shard has a problem."""
    from clusterops.data import shards

    if path.is_file() or path.is_symlink() or (path.exists() and not path.is_dir()):
        # One shard given directly: by its .ds, or by its .ds.index / .ds.metadata sibling.
        name = path.name
        for suffix in (shards.INDEX_SUFFIX, shards.METADATA_SUFFIX):
            if name.endswith(suffix):
                name = name[: -len(suffix)] + shards.SUFFIX
        if not name.endswith(shards.SUFFIX):
            raise shards_error(f"{path}: not a shard (a shard's token file ends in {shards.SUFFIX})")
        files = [path.with_name(name)]
    elif not path.exists():
        raise shards_error(f"{path}: no such file or directory")
    else:
        files = shards.find_shards(path)
    if not files:
        raise shards_error(f"{path}: no .ds shards found")
    reports = [shards.validate_shard(f, vocab_size) for f in files]
    ok = all(r.ok for r in reports)
    summary = {
        "ok": ok,
        "shards": len(reports),
        "tokens": sum(r.tokens for r in reports),
        "documents": sum(r.documents for r in reports),
        "token_sizes": sorted({r.token_size for r in reports if r.token_size}),
        "tokenizers": sorted({r.tokenizer for r in reports if r.tokenizer}),
        "files": [r.to_dict() for r in reports],
    }
    if json_out:
        print_json(summary)
    else:
        for r in reports:
            verdict = "ok" if r.ok else "BAD"
            print(
                f"{verdict:3} {r.path}: {r.tokens} tokens, {r.documents} docs, uint{8 * (r.token_size or 2)}"
            )
            for p in r.problems:
                print(f"    {p}")
        print(
            f"{len(reports)} shards, {summary['tokens']} tokens, {summary['documents']} documents: "
            + ("OK" if ok else "PROBLEMS")
        )
    if not ok:
        raise typer.Exit(2)


def shards_error(msg: str):
    from clusterops.errors import UsageError

    return UsageError(msg)
