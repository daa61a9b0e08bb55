"""Parallelism applied to the model from outside: process groups and a (dp, tp) mesh, tensor parallel with
DTensor's parallelize_module, FSDP2's fully_shard for data parallel, and the per-rank init seed.

Order follows torchtitan: TP first, then per-block compile, then FSDP (blocks, then the root).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from clusterops.train import launch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    tp: int = 1
    device: torch.device = torch.device("cpu")
    mesh: object = None  # DeviceMesh with dims ("dp", "tp") when world > 1

    @property
    def dp(self) -> int:
        return self.world // self.tp

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_seed(base_seed: int, tp_rank: int, dp_rank: int = 0, tp: int = 1) -> int:
    """The seed a rank initialises its own weight shards with: base_seed + tp_rank (SmolLM3 gave every
    TP rank the same seed, so TP shards were copies: +0.1 loss). FSDP shards get distinct seeds too."""
    return base_seed + tp_rank + tp * dp_rank


def init_distributed(tp: int = 1, env: launch.LaunchEnv | None = None) -> Dist:
    """Join the job (srun or torchrun variables), NCCL on GPUs and gloo on CPUs; build the mesh."""
    le = env or launch.from_environ()
    if le.world % tp:
        raise ValueError(f"tp={tp} does not divide the world size {le.world}")
    cuda = torch.cuda.is_available()
    device = (
        torch.device("cuda", le.local_rank % max(1, torch.cuda.device_count()))
        if cuda
        else torch.device("cpu")
    )
    if cuda:
        torch.cuda.set_device(device)
    if le.world == 1:
        return Dist(device=device)
    launch.export(le)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", rank=le.rank, world_size=le.world)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (le.world // tp, tp), mesh_dim_names=("dp", "tp"))
    return Dist(rank=le.rank, world=le.world, local_rank=le.local_rank, tp=tp, device=device, mesh=mesh)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def apply_tp(model: nn.Module, tp_mesh) -> None:
    """Megatron-style: q/k/v and gate/up split by output (heads), o and down by input. Embeddings, norms and
    the tied head stay replicated."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = {
        "self_attn.q_proj": ColwiseParallel(),
        "self_attn.k_proj": ColwiseParallel(),
        "self_attn.v_proj": ColwiseParallel(),
        "self_attn.o_proj": RowwiseParallel(),
        "mlp.gate_proj": ColwiseParallel(),
        "mlp.up_proj": ColwiseParallel(),
        "mlp.down_proj": RowwiseParallel(),
    }
    for block in model.layers:
        parallelize_module(block, tp_mesh, plan)


def apply_compile(model: nn.Module) -> None:
    """Compile each block in place (keeps parameter names, so checkpoints and export do not change)."""
    for block in model.layers:
        block.compile(fullgraph=False)


def apply_fsdp(model: nn.Module, dp_mesh, mixed_precision: bool) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else None
    )
    kwargs = {"mesh": dp_mesh, **({"mp_policy": mp} if mp else {})}
    for i, block in enumerate(model.layers):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        fully_shard(block, reshard_after_forward=i < len(model.layers) - 1, **kwargs)
    fully_shard(model, **kwargs)


def init_sharded(model: nn.Module, base_seed: int, d: Dist, seed_fn=init_seed) -> None:
    """Re-initialise every parameter shard in place with this rank's own generator (for models built
    sharded, where no rank holds the full weights). Replicated tensors get the base seed on every rank
    so they stay identical."""
    from torch.distributed.tensor import DTensor

    g_rank = torch.Generator(device=d.device).manual_seed(seed_fn(base_seed, d.tp_rank, d.dp_rank, d.tp))
    g_same = torch.Generator(device=d.device).manual_seed(base_seed)
    std = model.cfg.init_std
    out_std = std / (2 * model.cfg.n_layers) ** 0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local() if isinstance(p, DTensor) else p
            sharded = isinstance(p, DTensor) and any(pl.is_shard() for pl in p.placements)
            if p.ndim == 1:
                local.fill_(1.0)
                continue
            s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
            local.normal_(0.0, s, generator=g_rank if sharded else g_same)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Global gradient norm over plain tensors and DTensors on any meshes, then clip in place."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    groups: dict[object, list[torch.Tensor]] = {}
    for g in grads:
        key = (g.device_mesh, g.placements) if isinstance(g, DTensor) else None
        groups.setdefault(key, []).append(g)
    total_sq = None
    for key, gs in groups.items():
        norm = torch.nn.utils.get_total_norm(gs, norm_type=2.0)
        if key is not None:
            norm = norm.full_tensor()
        sq = norm.float() ** 2
        total_sq = sq if total_sq is None else total_sq + sq.to(total_sq.device)
    if total_sq is None:
        return 0.0
    total = float(total_sq.sqrt())
    coef = max_norm / (total + 1e-6)
    if max_norm > 0 and coef < 1.0:
        for gs in groups.values():
            torch._foreach_mul_(gs, coef)  # a Python scalar works for DTensors and plain tensors alike
    return total
