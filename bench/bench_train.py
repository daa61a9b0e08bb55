"""Trainer step throughput on CPU: our model vs transformers' SmolLM3ForCausalLM, same config, same
weights, same batch; forward + backward + AdamW. Runs alone: `.venv/bin/python bench/bench_train.py`.

Runs are interleaved (ours, theirs, ours, ...) so a busy host slows both alike. Prints one table
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
    for _ in range(REPEATS):
        rates["clusterops"].append(tokens_per_run / timed_steps(ours, ours, tokens, STEPS))
        rates["transformers"].append(
            tokens_per_run / timed_steps(theirs, lambda t: theirs(input_ids=t).logits, tokens, STEPS)
        )
    row = {"workload": f"{name} ({cfg.num_params() / 1e6:.1f}M params, batch {batch} x seq {seq})"}
    for tool, values in rates.items():
        row[tool] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
    row["ratio"] = row["clusterops"]["median"] / row["transformers"]["median"]
    return row


def main() -> None:
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
