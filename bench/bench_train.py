"""Trainer step throughput on CPU: our model vs transformers' SmolLM3ForCausalLM, same config, same
weights, same batch; forward + backward + AdamW. Runs alone: `.venv/bin/python bench/bench_train.py`.

Runs are interleaved, alternating which tool goes first, so a busy host slows both alike. Prints one table
(min/median/max tokens/s and the ratio of medians) and writes bench/results/train.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from clusterops.train.export import hf_config, hf_state_dict  # noqa: E402
from clusterops.train.model import Transformer, loss_fn, preset  # noqa: E402

SHAPES = {
    # name: (model overrides, batch, seq)
    "tiny": ({}, 8, 128),
    "small": (
        dict(
            vocab_size=8192,
            hidden_size=256,
            n_layers=6,
            n_heads=8,
            n_kv_heads=2,
            intermediate_size=704,
            max_seq_len=1024,
        ),
        4,
        256,
    ),
}
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
STEPS = int(os.environ.get("BENCH_STEPS", "10"))


def timed_steps(model, forward, tokens, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(2):  # warm-up: allocator and optimizer state
        loss_fn(forward(tokens[:, :-1]), tokens[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for _ in range(steps):
        loss_fn(forward(tokens[:, :-1]), tokens[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def bench(name: str) -> dict:
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    overrides, batch, seq = SHAPES[name]
    cfg = preset("tiny", **overrides)
    torch.manual_seed(0)
    ours = Transformer(cfg)
    theirs = SmolLM3ForCausalLM(
        SmolLM3Config(
            **{
                k: v
                for k, v in hf_config(cfg).items()
                if k not in ("architectures", "model_type", "torch_dtype")
            },
            attn_implementation="sdpa",
        )
    )
    theirs.load_state_dict(hf_state_dict(ours, torch.float32), strict=False)
    theirs.tie_weights()
    tokens = torch.randint(3, cfg.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(1))
    tokens_per_run = batch * seq * STEPS
    rates = {"clusterops": [], "transformers": []}
    runs = {"clusterops": (ours, ours), "transformers": (theirs, lambda t: theirs(input_ids=t).logits)}
    for i in range(REPEATS):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))  # neither tool always goes first
        for tool in order:
            model, forward = runs[tool]
            rates[tool].append(tokens_per_run / timed_steps(model, forward, tokens, STEPS))
    row = {"workload": f"{name} ({cfg.num_params() / 1e6:.1f}M params, batch {batch} x seq {seq})"}
    for tool, values in rates.items():
        row[tool] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    row["ratio"] = row["clusterops"]["median"] / row["transformers"]["median"]
    return row


def gpu(argv: list[str]) -> None:
    """The real trainer loop on one GPU (bench/gpu.sh): bf16, FlexAttention document masking, fused AdamW,
    optional compile and activation checkpointing; tokens/s/GPU and MFU over the steady steps."""
    import argparse
    import tempfile

    from clusterops.train import loop
    from clusterops.train.config import from_dict
    from clusterops.train.data import write_synthetic

    ap = argparse.ArgumentParser(prog="bench_train.py --gpu")
    ap.add_argument("--preset", default="smollm3-3b")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--skip", type=int, default=4, help="first steps left out (compile, allocator warm-up)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-ac", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    raw = {
        "model": {"preset": args.preset},
        "data": {"seq_len": args.seq, "micro_batch": args.micro_batch},
        "train": {
            "steps": args.steps,
            "dtype": "bf16",
            "compile": not args.no_compile,
            "activation_checkpointing": not args.no_ac,
            "log_every": 1,
        },
        "optim": {"lr": 2e-4, "warmup_steps": 2},
        "checkpoint": {"interval_s": 0.0},
        "watchdog": {"warmup_steps": 1000},
    }
    cfg = from_dict(raw, "gpu bench")
    # Web-length documents (1k-8k tokens), so document masking prunes about as much as on real data.
    tokens = max(1 << 22, 2 * (args.steps + 2) * args.micro_batch * (args.seq + 1))
    root = write_synthetic(
        Path(tempfile.gettempdir()) / f"co-gpu-bench-{cfg.model.vocab_size}",
        cfg.model.vocab_size,
        tokens,
        bos=cfg.model.bos_token_id,
        eos=cfg.model.eos_token_id,
        doc_len=(1024, 8192),
    )
    cfg.data.path = str(root)
    started = time.perf_counter()
    result = loop.run(cfg, None, log=lambda line: print(line, flush=True))
    steady = result.records[args.skip :] or result.records
    tps = [r.tokens_per_s for r in steady]
    report = {
        "benchmark": "clusterops train, one GPU",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "preset": args.preset,
        "params": cfg.model.num_params(),
        "seq_len": args.seq,
        "micro_batch": args.micro_batch,
        "compile": not args.no_compile,
        "activation_checkpointing": not args.no_ac,
        "steps": len(result.records),
        "steady_steps": len(steady),
        "tokens_per_s_per_gpu": {"min": min(tps), "median": statistics.median(tps), "max": max(tps)},
        "mfu_median": statistics.median(r.mfu for r in steady),
        "max_mem_gib": max(r.mem_gib for r in result.records),
        "loss_first_last": [result.records[0].loss, result.records[-1].loss],
        "reference": {"smollm3_tokens_per_s_per_gpu": [13500, 14000], "llm_foundry_3b_h100": 20964},
        "wall_s": time.perf_counter() - started,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def main() -> None:
    if "--gpu" in sys.argv:
        gpu([a for a in sys.argv[1:] if a != "--gpu"])
        return
    import transformers

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", str(torch.get_num_threads()))))
    rows = [bench(name) for name in SHAPES]
    print(f"{'workload':52} {'tool':13} {'min':>9} {'median':>9} {'max':>9}  tokens/s   ours/peer")
    for row in rows:
        for tool in ("clusterops", "transformers"):
            r = row[tool]
            ratio = f"{row['ratio']:.2f}x" if tool == "clusterops" else ""
            spread = f"{r['min']:9.0f} {r['median']:9.0f} {r['max']:9.0f}"
            print(f"{row['workload']:52} {tool:13} {spread}  {ratio:>18}")
    result = {
        "benchmark": "train step (fwd+bwd+AdamW) on CPU",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
        },
        "repeats": REPEATS,
        "steps_per_repeat": STEPS,
        "rows": rows,
    }
    out = Path(__file__).resolve().parent / "results" / "train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
