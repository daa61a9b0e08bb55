"""Read which files a torch.distributed.checkpoint save consists of, from its `.metadata`, without torch.

`.metadata` is a pickle of torch's Metadata dataclass. We load it with an unpickler that resolves every
global to an inert stand-in class (nothing from the file is ever called), then read
`storage_data[*].relative_path / offset / length`: the `*.distcp` files every rank wrote, and how long
each must at least be.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from clusterops.errors import UsageError

METADATA = ".metadata"
DATA_SUFFIX = ".distcp"

# Containers the pickle builds its structure from; everything else becomes a stand-in.
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool"}


class _Stub:
    """Inert stand-in for a class named in the pickle: records constructor args and state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            merged = {**(state[0] or {}), **(state[1] or {})}
        else:
            merged = state if isinstance(state, dict) else {"_state": state}
        self.__dict__.update(merged)

    def __reduce__(self):  # pragma: no cover - never pickled back
        raise TypeError("stand-in objects are read-only")


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: io.BufferedIOBase) -> None:
        super().__init__(f)
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
        if module == "copyreg" and name == "_reconstructor":
            return _reconstruct
        if module == "collections" and name == "OrderedDict":
            return dict
        key = (module, name)
        if key not in self._stubs:
            self._stubs[key] = type(name, (_Stub,), {"_module": module})
        return self._stubs[key]


def _reconstruct(cls: type, base: type, state: Any) -> Any:
    obj = cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, _Stub) else _Stub()
    if state is not None:
        obj.__setstate__(state)
    return obj


def expected_files(step_dir: str | Path) -> dict[str, int] | None:
    """{relative path: minimum size} of every file the DCP save wrote (`.metadata` included), or None
    when `step_dir` holds no `.metadata`."""
    path = Path(step_dir) / METADATA
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            meta = _Unpickler(f).load()
        storage = meta.storage_data
    except Exception as e:  # a damaged pickle can raise nearly anything; report it as one line
        raise UsageError(f"{path}: not a readable torch.distributed.checkpoint metadata file ({e})") from None
    out: dict[str, int] = {METADATA: path.stat().st_size}
    if not isinstance(storage, dict):
        raise UsageError(f"{path}: metadata has no storage_data table")
    for info in storage.values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(rel, str):
            raise UsageError(f"{path}: a storage_data entry has no relative_path")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
            raise UsageError(f"{path}: storage path {rel!r} leaves the checkpoint directory")
        offset, length = getattr(info, "offset", 0) or 0, getattr(info, "length", 0) or 0
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, length)):
            raise UsageError(f"{path}: storage offset/length of {rel!r} is not a size")
        end = offset + length
        out[rel] = max(out.get(rel, 0), end)
    return out


def is_dcp_part(names: list[str]) -> bool:
    """Files of a DCP save without its `.metadata`: the part another node's rank wrote."""
    return METADATA not in names and any(n.endswith(DATA_SUFFIX) for n in names)
