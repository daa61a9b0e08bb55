"""Worker for the 2-process tests (torch.multiprocessing spawn, gloo): FSDP2 and TP runs of the real
loop, and the TP init-seed check. Each rank writes its results as JSON for the test to compare."""

from __future__ import annotations

import json
import os
from pathlib import Path


def shards_of(model, d) -> list[list[float]]:
    """q_proj's local shard of the first block, as gathered from every TP rank."""
    import torch
    import torch.distributed as dist

    local = model.layers[0].self_attn.q_proj.weight.to_local().detach().flatten()[:64].contiguous()
    gathered = [torch.empty_like(local) for _ in range(d.world)]
    dist.all_gather(gathered, local)
    return [g.tolist() for g in gathered]


def main(rank: int, world: int, port: int, corpus: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    from clusterops.train import loop, parallel

    from .conftest import tiny_config

    results = {}
    # Data parallel: FSDP2 over 2 ranks with 2 samples each = one process with 4.
    cfg = tiny_config(corpus, steps=8)
    cfg.data.micro_batch = 2
    d = parallel.init_distributed(tp=1)
    results["fsdp"] = loop.run(cfg, d=d).losses
    # Tensor parallel 2 (dp 1): every rank reads the same 4 samples.
    cfg = tiny_config(corpus, steps=20)
    d = parallel.init_distributed(tp=2)
    results["tp"] = loop.run(cfg, d=d).losses
    # Sharded init: per-TP-rank seeds, then the SmolLM3 bug (one seed for every TP rank).
    cfg = tiny_config(corpus, steps=1, tp=2, init="sharded")
    model = loop.build_model(cfg, d)
    results["seeded_shards"] = shards_of(model, d)
    parallel.init_sharded(model, cfg.train.seed, d, seed_fn=lambda base, tp_rank, dp_rank, tp: base)
    results["buggy_shards"] = shards_of(model, d)
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    parallel.shutdown()
