"""Write a real 2-rank torch.distributed.checkpoint save (gloo, CPU): each rank its own .distcp file,
rank 0 the .metadata. Usage: python dcp_save_2ranks.py OUT_DIR"""

import contextlib
import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp


def rank_main(rank: int, out: str, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.manual_seed(rank)
    # Distinct keys per rank, so each rank writes its own file (no dedup onto rank 0).
    state = {f"layer{rank}.weight": torch.randn(256, 256), f"layer{rank}.bias": torch.randn(256), "step": 200}
    dcp.save(state, checkpoint_id=out)
    dist.destroy_process_group()


if __name__ == "__main__":
    out = sys.argv[1]
    init = f"file://{os.path.abspath(out)}.init"
    mp.spawn(rank_main, args=(out, init), nprocs=2, join=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{os.path.abspath(out)}.init")
