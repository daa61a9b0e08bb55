"""GPUs through NVML: count, reachability, lost / reset-required, ECC, retired pages, row remapping,
temperature, clock event reasons, PCIe link, NVLink state and error counters, persistence mode,
fabric registration, and the inventory (UUID, serial, VBIOS, PCI bus) for the report."""

from __future__ import annotations

from typing import Any

from clusterops.health import counters
from clusterops.health import nvml as N
from clusterops.health.checks import CheckContext
from clusterops.health.model import Outcome
from clusterops.health.nvml import NvmlError
from clusterops.verdict import Status

OK, WARN, CRIT = Status.OK, Status.WARNING, Status.CRITICAL


def check(ctx: CheckContext) -> Outcome:
    out = Outcome()
    want = ctx.profile.gpu
    if want.count == 0:
        out.summary = f"no GPUs expected (profile {ctx.profile.name})"
        return out
    try:
        nv = ctx.t.nvml()
        driver = _try(lambda: nv.system("nvmlSystemGetDriverVersion"))
        count = nv.count()
    except NvmlError as e:
        out.add(CRIT, "nvml", "", f"NVML unreachable ({e.name}): driver not loaded or GPUs gone")
        return out
    if count != want.count:
        out.add(CRIT, "count", "", f"{count}/{want.count} GPUs visible to NVML")
    inventory = []
    prev_links = ctx.state.get("nvlink", {})
    new_links: dict[str, Any] = {}
    for i in range(count):
        gpu = _sample(nv, i, want.nvlinks)
        inventory.append(
            {k: gpu.get(k) for k in ("index", "name", "uuid", "serial", "vbios", "pci")} | {"driver": driver}
        )
        subject = f"GPU {i}" + (f" ({gpu['pci']})" if gpu.get("pci") else "")
        if gpu.get("fatal"):
            out.add(CRIT, "lost", subject, gpu["fatal"])
            continue
        for verdict, item, message in device_findings(gpu, want):
            out.add(verdict, item, subject, message)
        if gpu.get("nvlink_errors") is not None and gpu.get("uuid"):
            deltas, span, new_links[gpu["uuid"]] = counters.rise(
                prev_links.get(gpu["uuid"]), gpu["nvlink_errors"], ctx.t.now(), ctx.counter_window_s
            )
            for verdict, item, message in nvlink_error_findings(deltas, span, want.nvlink_errors):
                out.add(verdict, item, subject, message)
        if gpu.get("temp") is not None:
            out.metrics.append(("clusterops_health_gpu_temperature_celsius", {"gpu": str(i)}, gpu["temp"]))
    out.state = {"nvlink": new_links}
    out.data = {"driver": driver, "count": count, "inventory": inventory}
    out.summary = f"{count}/{want.count} GPUs healthy" + (f", driver {driver}" if driver else "")
    out.metrics.append(("clusterops_health_gpu_count", {}, count))
    return out


def _try(fn: Any, default: Any = None) -> Any:
    """A value NVML may not support on this GPU: NOT_SUPPORTED and friends give `default`."""
    try:
        return fn()
    except NvmlError as e:
        if e.fatal:
            raise
        return default


def _sample(nv: Any, i: int, nvlinks: int) -> dict[str, Any]:
    """Everything the findings need from GPU i, as plain values; `fatal` when the GPU is gone."""
    g: dict[str, Any] = {"index": i}

    def q(fn: str, *args: Any, default: Any = None) -> Any:
        return _try(lambda: nv.call(i, fn, *args), default)

    try:
        nv.call(i, "nvmlDeviceGetHandleByIndex")  # any error here: this GPU cannot be used at all
        g["name"] = q("nvmlDeviceGetName")
        g["uuid"] = q("nvmlDeviceGetUUID")
        g["serial"] = q("nvmlDeviceGetSerial")
        g["vbios"] = q("nvmlDeviceGetVbiosVersion")
        g["pci"] = (q("nvmlDeviceGetPciInfo") or {}).get("busId")
        g["persistence"] = q("nvmlDeviceGetPersistenceMode")
        g["ecc_volatile"] = q(
            "nvmlDeviceGetTotalEccErrors", N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC
        )
        g["ecc_aggregate"] = q(
            "nvmlDeviceGetTotalEccErrors", N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_AGGREGATE_ECC
        )
        g["retired_pending"] = q("nvmlDeviceGetRetiredPagesPendingStatus")
        g["remapped"] = q("nvmlDeviceGetRemappedRows")  # (correctable, uncorrectable, pending, failure)
        g["temp"] = q("nvmlDeviceGetTemperature", N.NVML_TEMPERATURE_GPU)
        g["temp_slowdown"] = q("nvmlDeviceGetTemperatureThreshold", N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        g["clocks_event"] = q("nvmlDeviceGetCurrentClocksEventReasons")
        g["pcie"] = [
            q(fn)
            for fn in (
                "nvmlDeviceGetCurrPcieLinkGeneration",
                "nvmlDeviceGetMaxPcieLinkGeneration",
                "nvmlDeviceGetCurrPcieLinkWidth",
                "nvmlDeviceGetMaxPcieLinkWidth",
            )
        ]
        g["nvlink_up"] = [q("nvmlDeviceGetNvLinkState", link) for link in range(nvlinks)]
        fields = q("nvmlDeviceGetFieldValues", *N.NVLINK_ERROR_FIELDS.values())
        if isinstance(fields, list) and len(fields) == len(N.NVLINK_ERROR_FIELDS):
            g["nvlink_errors"] = {
                k: int(v) for k, v in zip(N.NVLINK_ERROR_FIELDS, fields, strict=True) if isinstance(v, int)
            }
        g["fabric"] = q("nvmlDeviceGetGpuFabricInfoV")
    except NvmlError as e:
        g["fatal"] = {
            N.GPU_IS_LOST: "GPU is lost (fallen off the bus): reboot or replace",
            N.RESET_REQUIRED: "GPU requires a reset (nvidia-smi -r) before it can be used",
        }.get(e.code, f"{e.call}: {e.name}")
    return g


def device_findings(g: dict[str, Any], want: Any) -> list[tuple[Status, str, str]]:
    """The verdicts for one GPU's sample, each a small rule an operator can read."""
    found: list[tuple[Status, str, str]] = []
    if want.model and g.get("name") and g["name"] != want.model:
        found.append((WARN, "model", f"is a {g['name']}, profile expects {want.model}"))
    if g.get("ecc_volatile"):
        found.append((CRIT, "ecc", f"{g['ecc_volatile']} uncorrected ECC errors since the last reset"))
    if g.get("ecc_aggregate"):
        bad = want.ecc_aggregate_critical and g["ecc_aggregate"] >= want.ecc_aggregate_critical
        found.append(
            (
                CRIT if bad else WARN,
                "ecc_aggregate",
                f"{g['ecc_aggregate']} uncorrected ECC errors over its lifetime",
            )
        )
    if g.get("retired_pending"):
        found.append((CRIT, "retired_pages", "retired pages pending: reset the GPU"))
    remap = g.get("remapped")
    if isinstance(remap, list) and len(remap) == 4:
        if remap[3]:
            found.append((CRIT, "row_remap", "row remapping failed: replace the GPU"))
        elif remap[2]:
            found.append((CRIT, "row_remap", "row remap pending: reset the GPU"))
    temp, limit = g.get("temp"), g.get("temp_slowdown")
    if temp is not None and limit:
        if temp >= limit:
            found.append((CRIT, "temperature", f"{temp} C at or over its slowdown threshold {limit} C"))
        elif temp >= limit - want.temp_margin_c:
            found.append(
                (WARN, "temperature", f"{temp} C within {want.temp_margin_c:g} C of slowdown ({limit} C)")
            )
    reasons = g.get("clocks_event") or 0
    hw = [
        name
        for bit, name in (
            (N.CLOCKS_EVENT_HW_SLOWDOWN, "HW slowdown"),
            (N.CLOCKS_EVENT_HW_THERMAL, "HW thermal slowdown"),
            (N.CLOCKS_EVENT_HW_POWER_BRAKE, "HW power brake"),
        )
        if reasons & bit
    ]
    if hw:
        found.append((CRIT, "clocks", f"clocks held down: {', '.join(hw)}"))
    elif reasons & N.CLOCKS_EVENT_SW_THERMAL:
        found.append((WARN, "clocks", "clocks held down: SW thermal slowdown"))
    gen, max_gen, width, max_width = g.get("pcie") or [None] * 4
    want_width = want.pcie_width or max_width
    if width and want_width and width < want_width:
        found.append((CRIT, "pcie", f"PCIe link x{width}, expected x{want_width}"))
    if max_gen and want.pcie_gen and max_gen < want.pcie_gen:
        found.append((WARN, "pcie", f"PCIe link trains at most gen{max_gen}, expected gen{want.pcie_gen}"))
    elif gen and max_gen and gen < max_gen and not reasons & N.CLOCKS_EVENT_GPU_IDLE:
        # An idle GPU drops its link speed to save power; only a busy one below its maximum is a fault.
        found.append((WARN, "pcie", f"PCIe link at gen{gen} while busy, maximum gen{max_gen}"))
    links = g.get("nvlink_up") or []
    if want.nvlinks and links:
        down = [str(n) for n, up in enumerate(links) if up != 1]
        if down:
            found.append(
                (
                    CRIT,
                    "nvlink",
                    f"{len(links) - len(down)}/{want.nvlinks} NVLinks up (down: {','.join(down)})",
                )
            )
    if want.persistence_mode and g.get("persistence") == 0:
        found.append((WARN, "persistence", "persistence mode off: slow CUDA start, NVML calls may stall"))
    fabric = g.get("fabric")
    if (
        want.fabric
        and isinstance(fabric, dict)
        and (fabric.get("state") != N.NVML_GPU_FABRIC_STATE_COMPLETED or fabric.get("status") != 0)
    ):
        found.append(
            (
                CRIT,
                "fabric",
                f"not registered with the NVSwitch fabric (state {fabric.get('state')}, "
                f"status {fabric.get('status')}): is nvidia-fabricmanager running?",
            )
        )
    return found


def nvlink_error_findings(
    deltas: dict[str, int], span: float, thresholds: dict[str, list[int]]
) -> list[tuple[Status, str, str]]:
    found = []
    for name, delta in sorted(deltas.items()):
        lvl = counters.level(delta, thresholds.get(name))
        if lvl:
            found.append(
                (
                    CRIT if lvl == 2 else WARN,
                    "nvlink_errors",
                    f"NVLink {name} errors rose by {delta} in {span / 60:.0f} min",
                )
            )
    return found
