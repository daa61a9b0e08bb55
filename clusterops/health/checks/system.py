"""The node itself: processes stuck in D state across two runs, memory present and available, load,
CPU count and instance type against the profile."""

from __future__ import annotations

from clusterops.health.checks import CheckContext
from clusterops.health.model import Outcome
from clusterops.verdict import Status


def meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def check(ctx: CheckContext) -> Outcome:
    out = Outcome()
    t, want = ctx.t, ctx.profile.system
    now = t.now()
    # D state: a process seen in D now and in the last run (same pid and start time) is stuck.
    before = ctx.state.get("dstate", {})
    blocked = {f"{p['pid']}:{p['start']}": p for p in t.blocked_processes()}
    stuck = [p for key, p in blocked.items() if key in before]
    out.state = {"dstate": {key: before.get(key, now) for key in blocked}}
    if stuck:
        names = ", ".join(
            f"{p['comm']}[{p['pid']}]" + (f" in {p['wchan']}" if p.get("wchan") else "") for p in stuck[:4]
        )
        if want.dstate_critical and len(stuck) >= want.dstate_critical:
            out.add(Status.CRITICAL, "dstate", "", f"{len(stuck)} processes stuck in D state: {names}")
        elif want.dstate_warn and len(stuck) >= want.dstate_warn:
            out.add(Status.WARNING, "dstate", "", f"{len(stuck)} process(es) stuck in D state: {names}")
    mem = meminfo(t.read("/proc/meminfo") or "")
    total_gib = mem.get("MemTotal", 0) / 1024**3
    avail_pct = 100.0 * mem.get("MemAvailable", 0) / mem["MemTotal"] if mem.get("MemTotal") else 0.0
    if want.mem_total_min_gib and total_gib < want.mem_total_min_gib:
        out.add(
            Status.CRITICAL,
            "memory",
            "",
            f"{total_gib:.0f} GiB memory, expected at least {want.mem_total_min_gib:g} GiB (failed DIMM?)",
        )
    if want.mem_available_min_pct and mem.get("MemTotal") and avail_pct < want.mem_available_min_pct:
        out.add(Status.WARNING, "memory", "", f"{avail_pct:.1f}% memory available")
    cpus = t.cpu_count()
    if want.cpus and cpus < want.cpus:
        out.add(Status.WARNING, "cpus", "", f"{cpus} CPUs online, expected {want.cpus}")
    load = (t.read("/proc/loadavg") or "").split()
    load1 = float(load[0]) if load else 0.0
    if want.load_per_cpu_warn and cpus and load1 / cpus > want.load_per_cpu_warn:
        out.add(Status.WARNING, "load", "", f"load {load1:g} on {cpus} CPUs")
    if ctx.profile.instance_type:
        product = (t.read("/sys/devices/virtual/dmi/id/product_name") or "").strip()
        if product and product != ctx.profile.instance_type:
            out.add(
                Status.WARNING,
                "instance_type",
                "",
                f"this is a {product}, profile is for {ctx.profile.instance_type}",
            )
    out.data = {
        "mem_total_gib": round(total_gib, 1),
        "mem_available_pct": round(avail_pct, 1),
        "load1": load1,
        "cpus": cpus,
        "dstate": len(blocked),
    }
    out.metrics.append(("clusterops_health_dstate_processes", {}, len(blocked)))
    out.summary = f"{total_gib:.0f} GiB, {avail_pct:.0f}% available, load {load1:g} on {cpus} CPUs"
    return out
