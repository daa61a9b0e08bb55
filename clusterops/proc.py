"""Run an external command with a hard timeout; never a shell string, never a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from clusterops.errors import ClusteropsError

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], timeout: float, step: float = 0.25) -> tuple[bool, T | None]:
    """Call `predicate` every `step` seconds until it returns something truthy or `timeout` passes:
    (True, that value) or (False, the last value seen). Callers raise their own error on False."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return True, last
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(step)


class CommandError(ClusteropsError):
    """A command could not run, timed out, or exited non-zero."""


class CommandTimeout(CommandError):
    pass


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> Result:
    """Run `argv` in its own process group; on timeout kill the whole group and raise CommandTimeout."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise CommandError(f"{argv[0]}: command not found") from None
    except PermissionError:
        raise CommandError(f"{argv[0]}: permission denied") from None
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise CommandTimeout(f"{' '.join(argv[:3])}: no answer within {timeout:g}s") from None
    result = Result(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        detail = (err.strip() or out.strip()).splitlines()
        raise CommandError(
            f"{' '.join(argv[:3])}: exit {proc.returncode}: {detail[-1] if detail else 'no output'}"
        )
    return result
