"""EFA from sysfs: devices (RDMA devices whose PCI vendor is Amazon, 0x1d0f), their uverbs device
nodes, the memlock limit, and how much their hw_counters rose over the window.

Port `state` files read ACTIVE on EFA whatever the link does, so they are never read here: the
counters (drops, retransmit timeouts, admin command errors) are the evidence.
"""

from __future__ import annotations

import fnmatch

from clusterops.health import counters
from clusterops.health.checks import CheckContext
from clusterops.health.model import Outcome
from clusterops.health.telemetry import TelemetryError
from clusterops.verdict import Status

IB = "/sys/class/infiniband"
AMAZON = "0x1d0f"


def devices(t) -> list[str]:
    return [d for d in t.listdir(IB) or [] if (t.read(f"{IB}/{d}/device/vendor") or "").strip() == AMAZON]


def read_counters(t, dev: str) -> dict[str, int]:
    """Device-level and port-1 hw_counters, merged (names do not overlap)."""
    values: dict[str, int] = {}
    for base in (f"{IB}/{dev}/hw_counters", f"{IB}/{dev}/ports/1/hw_counters"):
        for name in t.listdir(base) or []:
            text = (t.read(f"{base}/{name}") or "").strip()
            if text.isdigit():
                values[name] = int(text)
    return values


def thresholds_for(name: str, table: dict[str, list[int]]) -> list[int] | None:
    if name in table:
        return table[name]
    for pattern, value in table.items():
        if "*" in pattern and fnmatch.fnmatchcase(name, pattern):
            return value
    return None


def check(ctx: CheckContext) -> Outcome:
    out = Outcome()
    want = ctx.profile.efa
    t = ctx.t
    found = devices(t)
    if want.count == 0 and not found:
        out.summary = f"no EFA expected (profile {ctx.profile.name})"
        return out
    if len(found) != want.count:
        out.add(Status.CRITICAL, "count", "", f"{len(found)}/{want.count} EFA devices")
    if want.memlock_unlimited:
        limit = t.memlock()
        if limit != -1:
            out.add(
                Status.CRITICAL,
                "memlock",
                "",
                f"memlock limit {limit} bytes, EFA needs unlimited (LimitMEMLOCK=infinity for slurmd)",
            )
    now = t.now()
    prev = ctx.state.get("devices", {})
    state: dict[str, dict] = {}
    inventory = []
    for dev in found:
        pci = ""
        for line in (t.read(f"{IB}/{dev}/device/uevent") or "").splitlines():
            if line.startswith("PCI_SLOT_NAME="):
                pci = line.split("=", 1)[1]
        verbs = t.listdir(f"{IB}/{dev}/device/infiniband_verbs") or []
        inventory.append({"name": dev, "pci": pci, "uverbs": verbs})
        if not verbs:
            out.add(Status.CRITICAL, "uverbs", dev, "no uverbs device registered (ib_uverbs not loaded?)")
        for v in verbs:
            if not t.exists(f"/dev/infiniband/{v}"):
                out.add(
                    Status.CRITICAL, "uverbs", dev, f"/dev/infiniband/{v} missing: user space cannot open it"
                )
        try:
            values = read_counters(t, dev)
        except TelemetryError as e:
            out.add(Status.WARNING, "counters", dev, f"hw_counters unreadable: {e}")
            continue
        deltas, span, state[dev] = counters.rise(prev.get(dev), values, now, ctx.counter_window_s)
        for name, delta in sorted(deltas.items()):
            lvl = counters.level(delta, thresholds_for(name, want.counters))
            if lvl:
                out.add(
                    Status.CRITICAL if lvl == 2 else Status.WARNING,
                    "counters",
                    dev,
                    f"{name} rose by {delta} in {span / 60:.0f} min",
                )
            if delta and thresholds_for(name, want.counters):
                out.metrics.append(
                    ("clusterops_health_efa_counter_rise", {"device": dev, "counter": name}, delta)
                )
    out.state = {"devices": state}
    out.data = {"count": len(found), "devices": inventory}
    out.metrics.append(("clusterops_health_efa_devices", {}, len(found)))
    out.summary = f"{len(found)}/{want.count} EFA devices, counters quiet"
    return out
