"""Read a torch.distributed.checkpoint save without letting its files run code.

DCP unpickles in two places: `FileSystemReader.read_metadata` (`.metadata`, a plain pickle) and
`DefaultLoadPlanner.load_bytes` (non-tensor items inside `*.distcp`, `torch.load(weights_only=False)`).
`SafeReader` unpickles `.metadata` with an allow-list of exactly the classes DCP's own format holds, and
checks every storage path stays inside the checkpoint; `SafeLoadPlanner` loads byte items with
`weights_only=True`. Anything else is a UsageError naming the file. Imports torch: trainer side only.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path, PosixPath, PurePosixPath
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as md
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo

from clusterops.errors import UsageError

_MD = "torch.distributed.checkpoint.metadata"
_ALLOWED: dict[tuple[str, str], Any] = {
    (_MD, "Metadata"): md.Metadata,
    (_MD, "TensorStorageMetadata"): md.TensorStorageMetadata,
    (_MD, "TensorProperties"): md.TensorProperties,
    (_MD, "ChunkStorageMetadata"): md.ChunkStorageMetadata,
    (_MD, "BytesStorageMetadata"): md.BytesStorageMetadata,
    (_MD, "MetadataIndex"): md.MetadataIndex,
    (_MD, "StorageMeta"): md.StorageMeta,
    (_MD, "_MEM_FORMAT_ENCODING"): md._MEM_FORMAT_ENCODING,
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("pathlib", "PosixPath"): PosixPath,
    ("pathlib", "PurePosixPath"): PurePosixPath,
    ("collections", "OrderedDict"): dict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP metadata file")


def read_metadata(path: str | Path) -> md.Metadata:
    """The Metadata of `.metadata` at `path`, through the allow-list; a UsageError for anything else."""
    try:
        with open(path, "rb") as f:
            meta = _MetadataUnpickler(f).load()
    except FileNotFoundError:
        raise UsageError(f"{path}: missing; not a torch.distributed.checkpoint save") from None
    except Exception as e:  # a crafted pickle can raise nearly anything; it is refused, never run
        raise UsageError(f"{path}: refused, not a plain DCP metadata file ({_one_line(e)})") from None
    _check(meta, Path(path))
    return meta


def _check(meta: Any, path: Path) -> None:
    if not isinstance(meta, md.Metadata) or not isinstance(meta.state_dict_metadata, dict):
        raise UsageError(f"{path}: refused, not a DCP Metadata record")
    if not isinstance(meta.storage_data, dict):
        raise UsageError(f"{path}: refused, storage_data is not a table")
    for info in meta.storage_data.values():
        if not isinstance(info, _StorageInfo):
            raise UsageError(f"{path}: refused, a storage_data entry is {type(info).__name__}")
        rel = info.relative_path
        if (
            not isinstance(rel, str)
            or not rel
            or rel.startswith("/")
            or any(p in ("", ".", "..") for p in rel.split("/"))
            or any(ord(c) < 32 for c in rel)
        ):
            raise UsageError(f"{path}: refused, storage path {rel!r} leaves the checkpoint directory")
        for v in (info.offset, info.length):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UsageError(f"{path}: refused, storage offset/length {v!r} is not a size")
        if info.transform_descriptors:
            raise UsageError(f"{path}: refused, storage transforms {info.transform_descriptors!r}")


class SafeReader(FileSystemReader):
    """FileSystemReader whose `.metadata` goes through the allow-list above."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> md.Metadata:
        meta = read_metadata(self._get_metadata_path(kwargs.get("rank")))
        if getattr(meta, "storage_meta", None) is None:
            meta.storage_meta = md.StorageMeta()
        meta.storage_meta.load_id = self.load_id
        return meta


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner whose non-tensor items load with `weights_only=True`."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except Exception as e:
            raise UsageError(
                f"DCP item {read_item.dest_index.fqn!r}: refused, not plain data ({_one_line(e)})"
            ) from None
        # As DefaultLoadPlanner.load_bytes does, with the value loaded above.
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def load(state: dict[str, Any], step_dir: str | Path) -> None:
    """dcp.load into `state` from `step_dir` through SafeReader and SafeLoadPlanner; our own errors only."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    # Read (and refuse) `.metadata` here first: DCP falls back to other files, logging a traceback, when
    # its reader raises.
    read_metadata(Path(step_dir) / ".metadata")
    try:
        dcp.load(state, storage_reader=SafeReader(str(step_dir)), planner=SafeLoadPlanner())
    except UsageError:
        raise
    except CheckpointException as e:
        inners = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()]
        ours = [x for x in inners if isinstance(x, UsageError)]
        if ours:
            raise ours[0] from None
        first = inners[0] if inners else e
        raise UsageError(f"{step_dir}: the DCP checkpoint could not be loaded ({_one_line(first)})") from None
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError, pickle.UnpicklingError) as e:
        raise UsageError(f"{step_dir}: the DCP checkpoint could not be loaded ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]
