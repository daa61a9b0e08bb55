"""Runs checks: each in its own forked process with a hard timeout, all at once, inside a budget.

A check that hangs (an NVML call stuck in the driver, statvfs on a dead mount) is SIGKILLed at its
deadline and never waited for again; its result is CRITICAL and names the check and the last step it
reported (`hung 20s in nvmlDeviceGetRemappedRows GPU 3`). Forking happens before any NVML call, and
each child calls os._exit, so nothing of the parent runs twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterops.health.checks import CheckContext
from clusterops.health.model import CheckResult, Finding, Outcome
from clusterops.verdict import Status


@dataclass
class Ran:
    result: CheckResult
    state: dict[str, Any] | None = None  # None: keep this check's previous state
    record: dict[str, Any] = field(default_factory=dict)


def _finish(name: str, fn: Callable[[CheckContext], Outcome], ctx: CheckContext) -> dict[str, Any]:
    started = time.monotonic()
    try:
        outcome = fn(ctx)
    except Exception as e:  # a bug or an unexpected answer is UNKNOWN: it says nothing about the node
        where = traceback.extract_tb(e.__traceback__)[-1]
        outcome = Outcome()
        outcome.add(
            Status.UNKNOWN,
            "error",
            "",
            f"check failed: {type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})",
        )
    result = CheckResult.from_outcome(name, outcome, time.monotonic() - started)
    record = getattr(ctx.t, "record", None)
    return {
        "result": result.to_dict(),
        "metrics": result.metrics,
        "state": outcome.state,
        "record": record or {},
    }


def _decode(payload: dict[str, Any]) -> Ran:
    r = payload["result"]
    result = CheckResult(
        r["name"],
        Status(r["verdict"]),
        r["detail"],
        r["seconds"],
        [Finding.from_dict(f) for f in r["findings"]],
        r["data"],
        [tuple(m) for m in payload.get("metrics", [])],
    )
    return Ran(result, payload.get("state"), payload.get("record") or {})


def _failed(name: str, verdict: Status, message: str, seconds: float) -> Ran:
    return Ran(CheckResult(name, verdict, message, seconds, [Finding(verdict, "runner", "", message)]))


def run(
    checks: dict[str, Callable[[CheckContext], Outcome]],
    contexts: dict[str, CheckContext],
    timeout: float,
    budget: float,
    isolation: str = "fork",
) -> dict[str, Ran]:
    """Run every check; results in the order of `checks`."""
    if isolation == "inline":
        out = {}
        for name, fn in checks.items():
            out[name] = _decode(_finish(name, fn, contexts[name]))
        return out
    if isolation != "fork":
        raise ValueError(f"health.isolation {isolation!r}: must be fork or inline")
    return _run_forked(checks, contexts, timeout, budget)


@dataclass
class _Child:
    name: str
    pid: int
    fd: int
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    last_step: str = ""


def _run_forked(checks, contexts, timeout: float, budget: float) -> dict[str, Ran]:
    start = time.monotonic()
    limit = min(timeout, budget)
    children: dict[int, _Child] = {}
    results: dict[str, Ran] = {}
    for name, fn in checks.items():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the check's own process
            code = 0
            try:
                os.close(r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                ctx = contexts[name]

                def progress(step: str, _w=w) -> None:
                    os.write(_w, b"P" + step.encode()[:200].replace(b"\n", b" ") + b"\n")

                ctx.t.progress = progress
                payload = json.dumps(_finish(name, fn, ctx), default=str).encode()
                view = memoryview(b"R" + payload + b"\n")
                while view:
                    view = view[os.write(w, view) :]
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        children[r] = _Child(name, pid, r, start + limit)
    while children:
        now = time.monotonic()
        wait = max(0.0, min(c.deadline for c in children.values()) - now)
        ready, _, _ = select.select(list(children), [], [], wait)
        for fd in ready:
            child = children[fd]
            chunk = os.read(fd, 65536)
            if chunk:
                child.buf += chunk
                _steps(child)
                continue
            del children[fd]
            os.close(fd)
            _, status = os.waitpid(child.pid, 0)
            results[child.name] = _collect(child, status, time.monotonic() - start)
        now = time.monotonic()
        for fd, child in list(children.items()):
            if now >= child.deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                # Reap it if it died; a process stuck in the kernel (D state) is left to init.
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)
                del children[fd]
                os.close(fd)
                where = f" in {child.last_step}" if child.last_step else ""
                results[child.name] = _failed(
                    child.name,
                    Status.CRITICAL,
                    f"hung: no answer within {limit:g}s{where}; check killed",
                    now - start,
                )
    return {name: results[name] for name in checks}


def _steps(child: _Child) -> None:
    while b"\n" in child.buf:
        line, _, rest = bytes(child.buf).partition(b"\n")
        if line.startswith(b"P"):
            child.last_step = line[1:].decode(errors="replace")
            child.buf = bytearray(rest)
        else:
            return  # the result line: wait for EOF


def _collect(child: _Child, status: int, seconds: float) -> Ran:
    data = bytes(child.buf)
    if data.startswith(b"R"):
        try:
            return _decode(json.loads(data[1:]))
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            return _failed(child.name, Status.UNKNOWN, f"unreadable result: {e}", seconds)
    if os.WIFSIGNALED(status):
        why = f"killed by signal {os.WTERMSIG(status)}"
    else:
        why = f"exited {os.WEXITSTATUS(status)} without a result"
    where = f" in {child.last_step}" if child.last_step else ""
    return _failed(child.name, Status.UNKNOWN, f"check process {why}{where}", seconds)
