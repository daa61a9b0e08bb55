"""NVIDIA XID errors from the kernel log, classified by code, counted only inside a time window.

Each XID is remembered on disk by (boot, kernel sequence number) with the time it was first seen, so
it is reported once as new, survives the kernel ring buffer wrapping, and stops counting when the
window has passed: one old XID does not hold a node drained forever.
"""

from __future__ import annotations

import re
from typing import Any

from clusterops.health.checks import CheckContext
from clusterops.health.model import Outcome
from clusterops.verdict import Status

XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f:.]+)\): (\d+)(?:, (.*))?")
# Hardware or driver state a job cannot survive: the GPU needs a reset, a reboot or replacing.
CRITICAL = {
    48: "double-bit ECC error",
    56: "display engine error",
    57: "video memory programming error",
    58: "unstable video memory interface",
    62: "internal micro-controller halt",
    64: "row remap / page retirement failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error: reset needed",
    95: "uncontained ECC error",
    110: "security fault",
    119: "GSP RPC timeout",
    120: "GSP error",
    136: "link training failed",
    140: "unrecovered ECC error",
    143: "GPU initialization failure",
    154: "GPU recovery action: reset or reboot needed",
}
# Usually caused by the application (bad kernel, out-of-bounds access, killed job): no node fault.
INFORMATIONAL = {
    13: "graphics engine exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "preemptive cleanup",
    63: "row remap / page retirement recorded",
    68: "video decoder exception",
    69: "graphics engine class error",
    92: "high single-bit ECC error rate",
    109: "context switch timeout",
}


def check(ctx: CheckContext) -> Outcome:
    out = Outcome()
    now = ctx.t.now()
    prof = ctx.profile.xid
    critical = set(CRITICAL) | set(prof.critical)
    informational = (set(INFORMATIONAL) | set(prof.informational)) - set(prof.critical)
    boot = (ctx.t.read("/proc/sys/kernel/random/boot_id") or "").strip()[:36]
    try:
        lines = ctx.t.kernel_log("NVRM: Xid")
    except Exception as e:  # an unreadable kernel log is not a GPU fault, but it is not a pass either
        if ctx.profile.gpu.count == 0:
            out.summary = f"kernel log unreadable ({e}); no GPUs expected"
            return out
        out.add(Status.UNKNOWN, "kernel_log", "", f"kernel log unreadable: {e}")
        return out
    seen: dict[str, float] = dict(ctx.state.get("seen", {}))
    recent: list[dict[str, Any]] = []
    for line in lines:
        m = XID_RE.search(line.get("msg", ""))
        if not m:
            continue
        key = f"{boot}:{line.get('seq')}"
        first = seen.setdefault(key, line.get("ts", now))
        when = min(first, line.get("ts", now))
        if now - when > ctx.xid_window_s:
            continue
        recent.append(
            {
                "key": key,
                "ts": when,
                "pci": m.group(1).lower(),
                "xid": int(m.group(2)),
                "text": (m.group(3) or "").strip()[:120],
                "new": key not in ctx.state.get("seen", {}),
            }
        )
    # Remembered XIDs the ring buffer no longer holds still count until the window passes.
    logged = {r["key"] for r in recent}
    for key, when in ctx.state.get("recent", {}).items():
        if key not in logged and now - when["ts"] <= ctx.xid_window_s:
            recent.append({**when, "key": key, "new": False})
    out.state = {
        "seen": {k: v for k, v in seen.items() if now - v <= 2 * ctx.xid_window_s},
        "recent": {r["key"]: {k: r[k] for k in ("ts", "pci", "xid", "text")} for r in recent},
    }
    for r in sorted(recent, key=lambda r: r["ts"]):
        code = r["xid"]
        if code in prof.ignore:
            continue
        age = f"{(now - r['ts']) / 60:.0f} min ago"
        what = CRITICAL.get(code) or INFORMATIONAL.get(code) or "unlisted code"
        subject = f"PCI {r['pci']}"
        if code in critical:
            out.add(Status.CRITICAL, "xid", subject, f"XID {code} ({what}) {age}")
        elif code not in informational:
            out.add(Status.WARNING, "xid", subject, f"XID {code} ({what}) {age}")
    out.data = {
        "window_s": ctx.xid_window_s,
        "xids": [{k: r[k] for k in ("ts", "pci", "xid", "text", "new")} for r in recent],
    }
    info = sum(1 for r in recent if r["xid"] in informational)
    out.summary = (
        f"no XIDs in the last {ctx.xid_window_s / 60:.0f} min"
        if not recent
        else (f"{info} informational XID(s) in the last {ctx.xid_window_s / 60:.0f} min")
    )
    out.metrics.append(("clusterops_health_xid_recent", {}, len(recent)))
    return out
