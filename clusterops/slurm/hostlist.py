"""Slurm host lists: `node[1-3,7],gpu-a[01-02]` <-> names. Pure parsing, no scontrol round trip."""

from __future__ import annotations

import re

from clusterops.errors import UsageError


def expand(hostlist: str) -> list[str]:
    """Expand a Slurm host list into names, in order; one bracket group per name is what Slurm emits."""
    names: list[str] = []
    for item in _split_top(hostlist.strip()):
        m = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", item)
        if not m:
            if "[" in item or "]" in item:
                raise UsageError(f"host list {hostlist!r}: cannot parse {item!r}")
            names.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise UsageError(f"host list {hostlist!r}: bad range {part!r}")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                names.append(f"{prefix}{i:0{width}d}{suffix}")
    return names


def compress(names: list[str]) -> str:
    """Inverse of expand, for display and for scontrol arguments (which accept plain lists too)."""
    return ",".join(names)


def _split_top(text: str) -> list[str]:
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        items.append("".join(cur))
    return [i for i in (s.strip() for s in items) if i]
