"""The telemetry boundary every check reads through: NVML, files under /sys and /proc, the kernel log,
filesystem probes. LiveTelemetry reads this machine; fixture.FixtureTelemetry replays a recording;
RecordingTelemetry wraps a live one and keeps everything it answered, for `health record`.

Every method that can block calls `progress(...)` first, so the runner can say where a hung check hung.
"""

from __future__ import annotations

import errno
import os
import resource
import time
from collections.abc import Callable
from typing import Any, Protocol

from clusterops.health.nvml import LiveNvml, NvmlError

KMSG = "/dev/kmsg"


class TelemetryError(Exception):
    """A read failed in a way that is not simply 'absent' (EIO from sysfs, EACCES, ...)."""


class Nvml(Protocol):
    def system(self, fn: str) -> Any: ...
    def count(self) -> int: ...
    def call(self, index: int, fn: str, *args: Any) -> Any: ...


class Telemetry(Protocol):
    kind: str
    progress: Callable[[str], None]

    def now(self) -> float: ...
    def nvml(self) -> Nvml: ...
    def read(self, path: str) -> str | None: ...
    def listdir(self, path: str) -> list[str] | None: ...
    def exists(self, path: str) -> bool: ...
    def statvfs(self, path: str) -> dict[str, int] | None: ...
    def probe_write(self, path: str) -> str: ...
    def kernel_log(self, match: str) -> list[dict[str, Any]]: ...
    def blocked_processes(self) -> list[dict[str, Any]]: ...
    def memlock(self) -> int: ...
    def cpu_count(self) -> int: ...


class LiveTelemetry:
    """This machine. `root` prefixes /sys and /proc paths (tests point it at a built tree)."""

    kind = "live"

    def __init__(self, root: str = "", kmsg: str = KMSG) -> None:
        self.root = root.rstrip("/")
        self.kmsg = kmsg
        self.progress: Callable[[str], None] = lambda s: None
        self._nvml: LiveNvml | None = None

    def now(self) -> float:
        return time.time()

    def nvml(self) -> LiveNvml:
        if self._nvml is None:
            self._nvml = LiveNvml(self.progress)
        return self._nvml

    def read(self, path: str) -> str | None:
        try:
            with open(self.root + path, errors="replace") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise TelemetryError(f"{path}: {e.strerror or e}") from None

    def listdir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(self.root + path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(self.root + path)

    def statvfs(self, path: str) -> dict[str, int] | None:
        self.progress(f"statvfs {path}")
        try:
            st = os.statvfs(path)
        except FileNotFoundError:
            return None
        return {"total": st.f_blocks * st.f_frsize, "avail": st.f_bavail * st.f_frsize}

    def probe_write(self, path: str) -> str:
        """'' when a small file can be created, written, fsynced and removed under `path`; else why not."""
        self.progress(f"write probe {path}")
        probe = os.path.join(path, f".clusterops-health-probe.{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"clusterops health probe\n" * 16)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(probe)
        except OSError as e:
            return f"{errno.errorcode.get(e.errno or 0, 'E?')}: {e.strerror}"
        return ""

    def kernel_log(self, match: str) -> list[dict[str, Any]]:
        """Kernel log records containing `match`, with sequence number and wall-clock time."""
        self.progress("read kernel log")
        boot_wall = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
        out: list[dict[str, Any]] = []
        try:
            fd = os.open(self.kmsg, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise TelemetryError(f"{self.kmsg}: {e.strerror}") from None
        try:
            while True:
                try:
                    record = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except BrokenPipeError:  # the ring buffer overwrote what we were about to read
                    continue
                if not record:
                    break
                if match.encode() not in record:
                    continue
                head, _, body = record.decode(errors="replace").partition(";")
                fields = head.split(",")
                if len(fields) < 3:
                    continue
                out.append(
                    {
                        "seq": int(fields[1]),
                        "ts": round(boot_wall + int(fields[2]) / 1e6, 3),
                        "msg": body.split("\n")[0],
                    }
                )
        finally:
            os.close(fd)
        return out

    def blocked_processes(self) -> list[dict[str, Any]]:
        """Processes in uninterruptible sleep (D), with their start time so a pid reuse is not 'stuck'."""
        self.progress("scan /proc for D-state processes")
        out = []
        for pid in os.listdir(self.root + "/proc"):
            if not pid.isdigit():
                continue
            stat = self.read(f"/proc/{pid}/stat")
            if not stat:
                continue
            comm = stat[stat.find("(") + 1 : stat.rfind(")")]
            rest = stat[stat.rfind(")") + 2 :].split()
            if not rest or rest[0] != "D":
                continue
            wchan = (self.read(f"/proc/{pid}/wchan") or "").strip()
            out.append({"pid": int(pid), "comm": comm, "start": int(rest[19]), "wchan": wchan})
        return out

    def memlock(self) -> int:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return -1 if soft == resource.RLIM_INFINITY else int(soft)

    def cpu_count(self) -> int:
        return os.cpu_count() or 0


class _RecordingNvml:
    def __init__(self, inner: Nvml, into: dict[str, Any]) -> None:
        self.inner = inner
        self.into = into

    def _keep(self, where: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except NvmlError as e:
            where[key] = e.to_json()
            raise
        where[key] = value
        return value

    def system(self, fn: str) -> Any:
        return self._keep(self.into.setdefault("system", {}), fn, lambda: self.inner.system(fn))

    def count(self) -> int:
        return self._keep(self.into, "count", self.inner.count)

    def call(self, index: int, fn: str, *args: Any) -> Any:
        from clusterops.health.nvml import call_key

        device = self.into.setdefault("devices", {}).setdefault(str(index), {})
        return self._keep(device, call_key(fn, args), lambda: self.inner.call(index, fn, *args))


class RecordingTelemetry:
    """Answers from `inner`, and keeps every answer in `self.record` in the fixture format."""

    def __init__(self, inner: Telemetry) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.record: dict[str, Any] = {}

    @property
    def progress(self) -> Callable[[str], None]:
        return self.inner.progress

    @progress.setter
    def progress(self, fn: Callable[[str], None]) -> None:
        self.inner.progress = fn

    def _put(self, section: str, key: str, value: Any) -> Any:
        self.record.setdefault(section, {})[key] = value
        return value

    def now(self) -> float:
        self.record["now"] = self.inner.now()
        return self.record["now"]

    def nvml(self) -> Nvml:
        section = self.record.setdefault("nvml", {})
        try:
            return _RecordingNvml(self.inner.nvml(), section)
        except NvmlError as e:
            section["init_error"] = e.name
            raise

    def read(self, path: str) -> str | None:
        return self._put("files", path, self.inner.read(path))

    def listdir(self, path: str) -> list[str] | None:
        return self._put("dirs", path, self.inner.listdir(path))

    def exists(self, path: str) -> bool:
        return self._put("exists", path, self.inner.exists(path))

    def statvfs(self, path: str) -> dict[str, int] | None:
        return self._put("statvfs", path, self.inner.statvfs(path))

    def probe_write(self, path: str) -> str:
        return self._put("writable", path, self.inner.probe_write(path))

    def kernel_log(self, match: str) -> list[dict[str, Any]]:
        lines = self.inner.kernel_log(match)
        self.record["kernel_log"] = lines
        return lines

    def blocked_processes(self) -> list[dict[str, Any]]:
        self.record["blocked_processes"] = self.inner.blocked_processes()
        return self.record["blocked_processes"]

    def memlock(self) -> int:
        self.record["memlock"] = self.inner.memlock()
        return self.record["memlock"]

    def cpu_count(self) -> int:
        self.record["cpu_count"] = self.inner.cpu_count()
        return self.record["cpu_count"]


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge one check's recording into the node's fixture."""
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into
