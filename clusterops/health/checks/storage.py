"""Storage: required mounts present and read-write, md RAID state from /proc/mdstat, paths writable
(a real create/write/fsync/unlink, which is what hangs on a dead network filesystem), free space."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clusterops.health.checks import CheckContext
from clusterops.health.model import Outcome
from clusterops.verdict import Status

GIB = 1024**3


@dataclass
class MdState:
    name: str
    active: bool
    level: str
    members: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    status: str = ""  # "[UU_U]" for redundant levels
    rebuilding: str = ""


def parse_mounts(text: str) -> dict[str, tuple[str, str, list[str]]]:
    """mountpoint -> (device, fstype, options) from /proc/self/mounts (the last mount wins)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            point = parts[1].replace("\\040", " ")
            out[point] = (parts[0], parts[2], parts[3].split(","))
    return out


def parse_mdstat(text: str) -> dict[str, MdState]:
    arrays: dict[str, MdState] = {}
    current: MdState | None = None
    for line in text.splitlines():
        m = re.match(
            r"^(md\S+)\s*:\s*(active|inactive)\s*(?:\((?:auto-)?read-only\)\s*)?(raid\d+|linear)?\s*(.*)$",
            line,
        )
        if m:
            current = MdState(m.group(1), m.group(2) == "active", m.group(3) or "")
            for member in m.group(4).split():
                dev = member.split("[")[0]
                current.members.append(dev)
                if "(F)" in member:
                    current.failed.append(dev)
            arrays[current.name] = current
            continue
        if current is None:
            continue
        status = re.search(r"\[([U_]+)\]", line)
        if status:
            current.status = status.group(1)
        rebuild = re.search(r"(recovery|resync|reshape)\s*=\s*([\d.]+%)", line)
        if rebuild:
            current.rebuilding = f"{rebuild.group(1)} {rebuild.group(2)}"
        if not line.strip():
            current = None
    return arrays


def check(ctx: CheckContext) -> Outcome:
    out = Outcome()
    t, want = ctx.t, ctx.profile.storage
    mounts = parse_mounts(t.read("/proc/self/mounts") or "")
    for point in want.required_mounts:
        point = ctx.expand(point)
        if point not in mounts:
            out.add(Status.CRITICAL, "mount", point, "not mounted")
        elif "ro" in mounts[point][2]:
            out.add(Status.CRITICAL, "mount", point, f"mounted read-only ({mounts[point][0]})")
    if want.md:
        arrays = parse_mdstat(t.read("/proc/mdstat") or "")
        for md in want.md:
            a = arrays.get(md.name)
            if a is None:
                out.add(Status.CRITICAL, "raid", md.name, "array not assembled")
            elif not a.active:
                out.add(Status.CRITICAL, "raid", md.name, "array inactive")
            elif a.failed:
                out.add(Status.CRITICAL, "raid", md.name, f"failed member(s): {', '.join(a.failed)}")
            elif md.devices and len(a.members) < md.devices:
                out.add(Status.CRITICAL, "raid", md.name, f"{len(a.members)}/{md.devices} member devices")
            elif md.level and a.level and a.level != md.level:
                out.add(Status.WARNING, "raid", md.name, f"level {a.level}, expected {md.level}")
            elif "_" in a.status:
                out.add(
                    Status.WARNING,
                    "raid",
                    md.name,
                    f"degraded {a.status}" + (f", {a.rebuilding}" if a.rebuilding else ""),
                )
    free = {}
    for path in dict.fromkeys(ctx.expand(p) for p in [*want.required_mounts, *want.writable]):
        st = t.statvfs(path)
        if st is None:
            out.add(Status.CRITICAL, "path", path, "does not exist")
            continue
        if path in [ctx.expand(p) for p in want.writable]:
            error = t.probe_write(path)
            if error:
                out.add(Status.CRITICAL, "writable", path, f"cannot write: {error}")
        avail_gib = st["avail"] / GIB
        pct = 100.0 * st["avail"] / st["total"] if st["total"] else 0.0
        free[path] = round(avail_gib, 2)
        out.metrics.append(("clusterops_health_free_bytes", {"path": path}, st["avail"]))
        low = (want.min_free_gib and avail_gib < want.min_free_gib) or (
            want.min_free_pct and pct < want.min_free_pct
        )
        near = (want.min_free_gib and avail_gib < 2 * want.min_free_gib) or (
            want.min_free_pct and pct < 2 * want.min_free_pct
        )
        if low:
            out.add(
                Status.CRITICAL,
                "free",
                path,
                f"{avail_gib:.1f} GiB free ({pct:.1f}%), "
                f"floor {want.min_free_gib:g} GiB / {want.min_free_pct:g}%",
            )
        elif near:
            out.add(Status.WARNING, "free", path, f"{avail_gib:.1f} GiB free ({pct:.1f}%), near the floor")
    out.data = {"free_gib": free}
    out.summary = ", ".join(f"{p} {g:.0f} GiB free" for p, g in free.items()) or "nothing to check"
    return out
