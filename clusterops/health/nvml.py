"""The NVML boundary: named pynvml calls per device, live (pynvml) or replayed from a fixture.

Checks ask `nv.call(index, "nvmlDeviceGetRemappedRows")` and get plain JSON values back, so a
recording of those answers replays exactly. pynvml is imported only by LiveNvml, in the check's
own process (the runner forks before any NVML call: NVML is not fork-safe once initialised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Values of pynvml's constants (tests/health/test_nvml_constants.py checks them against pynvml).
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_GPU_FABRIC_STATE_COMPLETED = 3
# nvmlClocksEventReason* bits
CLOCKS_EVENT_GPU_IDLE = 0x1
CLOCKS_EVENT_SW_POWER_CAP = 0x4
CLOCKS_EVENT_HW_SLOWDOWN = 0x8
CLOCKS_EVENT_SW_THERMAL = 0x20
CLOCKS_EVENT_HW_THERMAL = 0x40
CLOCKS_EVENT_HW_POWER_BRAKE = 0x80
# NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL field ids, summed over all links of a GPU
NVLINK_ERROR_FIELDS = {"crc_flit": 38, "crc_data": 45, "replay": 52, "recovery": 59}

ERRORS = {
    1: "NVML_ERROR_UNINITIALIZED",
    2: "NVML_ERROR_INVALID_ARGUMENT",
    3: "NVML_ERROR_NOT_SUPPORTED",
    4: "NVML_ERROR_NO_PERMISSION",
    6: "NVML_ERROR_NOT_FOUND",
    9: "NVML_ERROR_DRIVER_NOT_LOADED",
    10: "NVML_ERROR_TIMEOUT",
    11: "NVML_ERROR_IRQ_ISSUE",
    12: "NVML_ERROR_LIBRARY_NOT_FOUND",
    13: "NVML_ERROR_FUNCTION_NOT_FOUND",
    14: "NVML_ERROR_CORRUPTED_INFOROM",
    15: "NVML_ERROR_GPU_IS_LOST",
    16: "NVML_ERROR_RESET_REQUIRED",
    17: "NVML_ERROR_OPERATING_SYSTEM",
    18: "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    20: "NVML_ERROR_MEMORY",
    21: "NVML_ERROR_NO_DATA",
    27: "NVML_ERROR_NOT_READY",
    28: "NVML_ERROR_GPU_NOT_FOUND",
    999: "NVML_ERROR_UNKNOWN",
}
CODES = {v: k for k, v in ERRORS.items()}
NOT_SUPPORTED = 3
GPU_IS_LOST = 15
RESET_REQUIRED = 16
# Errors that mean "this GPU is broken", whichever call returned them.
FATAL = {GPU_IS_LOST, RESET_REQUIRED, 14, 28}


class NvmlError(Exception):
    def __init__(self, code: int, call: str = "") -> None:
        self.code = int(code)
        self.name = ERRORS.get(self.code, f"NVML_ERROR_{self.code}")
        self.call = call
        super().__init__(f"{call}: {self.name}" if call else self.name)

    @property
    def fatal(self) -> bool:
        return self.code in FATAL

    def to_json(self) -> dict[str, Any]:
        return {"$error": self.name}


def call_key(fn: str, args: tuple[Any, ...]) -> str:
    """How a call is named in a fixture: `nvmlDeviceGetTotalEccErrors(1,0)`."""
    return f"{fn}({','.join(str(a) for a in args)})" if args else fn


def from_json(value: Any, call: str) -> Any:
    """A recorded answer: the value, or NvmlError for a recorded error."""
    if isinstance(value, dict) and "$error" in value:
        raise NvmlError(CODES.get(value["$error"], 999), call)
    return value


class LiveNvml:
    """pynvml on this machine. Construct it only in the process that will make the calls."""

    def __init__(self, progress: Callable[[str], None] = lambda s: None) -> None:
        self.progress = progress
        import pynvml  # lazy: ~40 ms, and not needed when replaying a fixture

        self._nv = pynvml
        self._handles: dict[int, Any] = {}
        progress("nvmlInit")
        self._guard("nvmlInit", pynvml.nvmlInit)

    def _guard(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nv.NVMLError as e:
            raise NvmlError(getattr(e, "value", 999), name) from None

    def system(self, fn: str) -> Any:
        self.progress(fn)
        return _plain(self._guard(fn, getattr(self._nv, fn)))

    def count(self) -> int:
        self.progress("nvmlDeviceGetCount")
        return int(self._guard("nvmlDeviceGetCount", self._nv.nvmlDeviceGetCount))

    def handle(self, index: int) -> Any:
        if index not in self._handles:
            self.progress(f"nvmlDeviceGetHandleByIndex GPU {index}")
            self._handles[index] = self._guard(
                "nvmlDeviceGetHandleByIndex", self._nv.nvmlDeviceGetHandleByIndex, index
            )
        return self._handles[index]

    def call(self, index: int, fn: str, *args: Any) -> Any:
        h = self.handle(index)
        self.progress(f"{fn} GPU {index}")
        if fn == "nvmlDeviceGetHandleByIndex":
            return None
        if fn == "nvmlDeviceGetFieldValues":
            values = self._guard(fn, self._nv.nvmlDeviceGetFieldValues, h, list(args))
            return [
                v.value.ullVal if v.nvmlReturn == 0 else {"$error": ERRORS.get(v.nvmlReturn, "NVML_ERROR")}
                for v in values
            ]
        if fn == "nvmlDeviceGetGpuFabricInfoV":
            info = self._nv.c_nvmlGpuFabricInfo_v2_t()
            self._guard(fn, self._nv.nvmlDeviceGetGpuFabricInfoV, h, self._nv.byref(info))
            return {"state": int(info.state), "status": int(info.status)}
        if fn == "nvmlDeviceGetPciInfo":
            pci = self._guard(fn, self._nv.nvmlDeviceGetPciInfo, h)
            bus = pci.busId
            return {"busId": bus.decode() if isinstance(bus, bytes) else str(bus)}
        return _plain(self._guard(fn, getattr(self._nv, fn), h, *args))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class ReplayNvml:
    """Answers from a fixture's `nvml` section; `hang` names calls that never return (for tests)."""

    def __init__(
        self, data: dict[str, Any], progress: Callable[[str], None], hang: Callable[[str], None]
    ) -> None:
        self.data = data
        self.progress = progress
        self._hang = hang
        if data.get("init_error"):
            raise NvmlError(CODES.get(data["init_error"], 999), "nvmlInit")

    def system(self, fn: str) -> Any:
        self.progress(fn)
        self._hang(fn)
        if fn not in self.data.get("system", {}):
            raise NvmlError(NOT_SUPPORTED, fn)
        return from_json(self.data["system"][fn], fn)

    def count(self) -> int:
        self.progress("nvmlDeviceGetCount")
        self._hang("nvmlDeviceGetCount")
        return int(from_json(self.data.get("count", 0), "nvmlDeviceGetCount"))

    def call(self, index: int, fn: str, *args: Any) -> Any:
        device = self.data.get("devices", {}).get(str(index), {})
        handle = device.get("nvmlDeviceGetHandleByIndex")
        if handle is not None:
            from_json(handle, "nvmlDeviceGetHandleByIndex")
        if fn == "nvmlDeviceGetHandleByIndex":
            return None
        key = call_key(fn, args)
        self.progress(f"{fn} GPU {index}")
        self._hang(fn)
        if key not in device:
            raise NvmlError(NOT_SUPPORTED, fn)
        return from_json(device[key], fn)
