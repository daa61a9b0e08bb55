"""Training checkpoints: torch.distributed.checkpoint (sharded, every rank writes its part) into
ROOT/step-<N>, plus the trainer's own state, then committed with clusterops.checkpoint.layout.commit
(manifest written last) so `clusterops ckpt` syncs it and a resume only ever sees whole checkpoints.

The root must be one directory every rank can reach (a shared or single-node path): rank 0 writes the
DCP metadata and commits after all ranks have written.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from clusterops.checkpoint.safeio import read_regular
from clusterops.errors import UsageError
from clusterops.fsutil import atomic_write_bytes, atomic_write_json


class _Layout:
    """clusterops.checkpoint.layout, imported on first use: it needs awscrt (CRC32C), which a bare GPU
    benchmark machine lacks, and a run without a checkpoint dir never touches it."""

    def __getattr__(self, name: str):
        from clusterops.checkpoint import layout as real

        return getattr(real, name)


layout = _Layout()

TRAIN_STATE = "train_state.json"
TRAIN_STATE_MAX = 16 << 20  # bytes; ours is a few KiB
# This rank's RNG state: safetensors since checkpoint format 2 (no pickle anywhere); format 1 wrote a
# torch.save pickle of tensors, ints and tuples, which still loads with weights_only=True.
RNG_NAME = "rng-rank{rank}.safetensors"
RNG_NAME_V1 = "rng-rank{rank}.pt"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _quiet_single_process() -> None:
    # DCP warns on every single-process save/load that it assumes one process: that is our intent.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def save(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_state: dict[str, Any],
    tokens_seen: int,
    keep: int = 0,
    per_node: bool = False,
    local_rank: int = 0,
) -> Path:
    """Write and commit ROOT/step-<step>; returns its path. An uncommitted leftover of that name (a save
    killed midway) is replaced; a committed one is left as it is.

    per_node: ROOT is each node's own local directory. Every rank writes its DCP files there, rank 0 the
    metadata and trainer state, and each node commits what it holds: a part (`complete: false`) that
    `ckpt push` from every node assembles into one whole checkpoint in S3."""
    step_dir = Path(root) / layout.step_dir_name(step)
    rank = _rank()
    owner = local_rank == 0 if per_node else rank == 0  # who prepares and commits this directory
    committed = _all(layout.is_committed(step_dir))
    if committed:
        return step_dir
    if owner:
        if step_dir.exists():
            shutil.rmtree(step_dir)
        step_dir.mkdir(parents=True)
    _barrier()
    _quiet_single_process()
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=str(step_dir))
    atomic_write_bytes(step_dir / RNG_NAME.format(rank=rank), _rng_bytes(_rng_state()))
    if rank == 0:
        atomic_write_json(step_dir / TRAIN_STATE, train_state)
    _barrier()
    if owner:
        layout.commit(step_dir, step, tokens_seen=tokens_seen, extra={"trainer": "clusterops.train"})
        if keep > 0:
            _retain(Path(root), keep)
    _barrier()
    return step_dir


def _all(flag: bool) -> bool:
    """True only when every rank says so (ranks must take the same branch around collectives)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def load(
    step_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG from a committed step dir; returns the train state."""
    step_dir = Path(step_dir)
    if not layout.is_committed(step_dir):
        raise UsageError(f"{step_dir}: not a committed checkpoint (no {layout.MANIFEST_NAME})")
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    _quiet_single_process()
    from clusterops.checkpoint import dcp_load

    dcp_load.load(state, step_dir)  # `.metadata` and byte items through an allow-list: nothing runs
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    train_state = read_train_state(step_dir)
    if restore_rng:
        rng = read_rng(step_dir, _rank())
        if rng is not None:
            _set_rng_state(rng, step_dir)
    return train_state


def complete_steps(root: str | Path) -> dict[int, Path]:
    """Committed step directories here that hold the whole checkpoint (not one node's part)."""
    out = {}
    for s in layout.list_steps(root):
        if s.committed:
            try:
                if layout.read_manifest(s.path).complete:
                    out[s.step] = s.path
            except layout.NewerFormatError:
                raise  # a newer clusterops wrote it: resuming from an older step instead would lose work
            except UsageError:  # an unreadable manifest is not a checkpoint to resume from
                continue
    return out


def newest(root: str | Path, agree: bool = False) -> Path | None:
    """The newest whole committed checkpoint; with `agree`, the newest step every rank holds whole
    (each node may keep its own root, and a resume must load the same step everywhere)."""
    mine = complete_steps(root)
    steps = set(mine)
    if agree and dist.is_initialized():
        gathered: list[list[int]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, sorted(steps))
        for other in gathered:
            steps &= set(other)
    return mine[max(steps)] if steps else None


def read_train_state(step_dir: str | Path) -> dict[str, Any]:
    """The trainer's JSON state of a step dir, checked for the fields a resume uses."""
    path = Path(step_dir) / TRAIN_STATE
    try:
        data = read_regular(path, TRAIN_STATE_MAX)
    except FileNotFoundError:
        raise UsageError(f"{step_dir}: no {TRAIN_STATE}; not a clusterops training checkpoint") from None
    try:
        state = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{path}: not valid JSON ({str(e)[:120]})") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path}: not a JSON object")
    for key in ("step", "tokens_seen"):
        v = state.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise UsageError(f"{path}: {key} = {v!r}, not a count")
    loader = state.get("loader")
    if not isinstance(loader, dict):
        raise UsageError(f"{path}: loader = {loader!r}, not an object")
    for key in ("seed", "seq_len", "windows", "samples_seen"):
        v = loader.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise UsageError(f"{path}: loader.{key} = {v!r}, not a count")
    return state


def read_rng(step_dir: str | Path, rank: int) -> dict[str, Any] | None:
    """This rank's saved RNG state (safetensors; format 1's `.pt` through weights_only), or None."""
    step_dir = Path(step_dir)
    path = step_dir / RNG_NAME.format(rank=rank)
    if path.exists() or path.is_symlink():
        return _rng_from_safetensors(path)
    old = step_dir / RNG_NAME_V1.format(rank=rank)
    if not (old.exists() or old.is_symlink()):
        return None
    data = read_regular(old, 1 << 20)
    import io

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses any pickle that names a callable: nothing ran
        raise UsageError(f"{old}: refused, not a plain tensor file ({_short(e)})") from None
    if not isinstance(state, dict):
        raise UsageError(f"{old}: not an RNG state record")
    return state


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a checkpoint may hold")


def _retain(root: Path, keep: int) -> None:
    """Remove committed step dirs beyond the newest `keep`; never the newest, never an uncommitted one."""
    committed = [s for s in layout.list_steps(root) if s.committed]
    for old in committed[: max(0, len(committed) - max(keep, 1))]:
        shutil.rmtree(old.path, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _rng_bytes(state: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    version, internal, gauss = state["python"]
    tensors = {
        "torch": state["torch"].contiguous(),
        "python": torch.tensor(internal, dtype=torch.int64),
    }
    if "cuda" in state:
        tensors["cuda"] = state["cuda"].cpu().contiguous()
    meta = {"python_version": str(version), "python_gauss": "" if gauss is None else repr(float(gauss))}
    return save(tensors, metadata=meta)


def _rng_from_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_regular(path, 1 << 20)
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        version = int(meta.get("python_version", "3"))
        gauss_text = meta.get("python_gauss", "")
        gauss = float(gauss_text) if gauss_text else None
        internal = tuple(int(x) for x in tensors["python"].tolist())
    except (SafetensorError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise UsageError(f"{path}: not an RNG state file ({_short(e)})") from None
    if gauss is not None and not math.isfinite(gauss):
        raise UsageError(f"{path}: python_gauss {gauss_text!r} is not finite")
    out: dict[str, Any] = {"torch": tensors.get("torch"), "python": (version, internal, gauss)}
    if "cuda" in tensors:
        out["cuda"] = tensors["cuda"]
    return out


def _set_rng_state(state: dict[str, Any], step_dir: Path) -> None:
    try:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UsageError(
            f"{step_dir}: rank {_rank()}'s RNG state does not fit this torch ({_short(e)})"
        ) from None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__
