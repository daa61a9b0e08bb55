"""The default Slurm backend: run sinfo/squeue --json and scontrol with timeouts, parse what they print.

Written against Slurm 22.05 (Debian 12): `sinfo --json` and `squeue --json` speak openapi v0.0.38 and
ignore filters, and `scontrol show ... -o` prints one `Key=Value` line per record.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusterops import proc
from clusterops.errors import ClusteropsError
from clusterops.slurm import hostlist
from clusterops.slurm.records import Job, Node, Reservation


class SlurmError(ClusteropsError):
    """Slurm refused an operation or answered with something we cannot read."""


class SlurmUnavailable(SlurmError):
    """The controller did not answer within the timeout, or is down."""


_UNREACHABLE = (
    "unable to contact slurm controller",
    "slurm_load_",
    "connection refused",
    "socket timed out",
    "communication connection failure",
    "zero bytes were transmitted",
)


def parse_nodes(payload: dict[str, Any]) -> list[Node]:
    _raise_errors(payload, "sinfo")
    nodes = []
    for n in payload.get("nodes", []):
        state = str(n.get("state", "unknown")).lower()
        flags = [str(f).upper() for f in n.get("state_flags", [])]
        nodes.append(
            Node(
                name=n["name"],
                state=state,
                flags=flags,
                reason=n.get("reason", "") or "",
                partitions=list(n.get("partitions", []) or []),
                features=_split_csv(n.get("active_features") or n.get("features")),
                address=n.get("address", "") or "",
                cpus=int(n.get("cpus", 0) or 0),
                extra=n.get("extra", "") or "",
            )
        )
    return nodes


def parse_jobs(payload: dict[str, Any]) -> list[Job]:
    _raise_errors(payload, "squeue")
    jobs = []
    for j in payload.get("jobs", []):
        nodes = j.get("nodes", "") or ""
        exit_code = j.get("exit_code")
        if isinstance(exit_code, dict):  # newer Slurm: {"status": ..., "return_code": N}
            exit_code = exit_code.get("return_code")
        jobs.append(
            Job(
                job_id=int(j["job_id"]),
                name=j.get("name", "") or "",
                state=str(j.get("job_state", "UNKNOWN")).upper(),
                nodes=hostlist.expand(nodes) if nodes else [],
                reason=j.get("state_reason", "") or "",
                restart_count=int(j.get("restart_cnt", 0) or 0),
                partition=j.get("partition", "") or "",
                reservation=j.get("resv_name", "") or "",
                user=j.get("user_name", "") or "",
                exit_code=int(exit_code) if isinstance(exit_code, int) else None,
                node_count=int(j.get("node_count", 0) or 0),
            )
        )
    return jobs


def parse_kv_line(line: str) -> dict[str, str]:
    """One `scontrol show -o` record. Values may contain spaces only in the trailing free-text keys."""
    out: dict[str, str] = {}
    for m in re.finditer(r"(\S+?)=(.*?)(?=\s+\S+?=|$)", line.strip()):
        out[m.group(1)] = m.group(2).strip()
    return out


def parse_reservations(text: str) -> list[Reservation]:
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("No reservations"):
            continue
        kv = parse_kv_line(line)
        if "ReservationName" not in kv:
            continue
        nodes = kv.get("Nodes", "")
        out.append(
            Reservation(
                name=kv["ReservationName"],
                nodes=hostlist.expand(nodes) if nodes and nodes != "(null)" else [],
                start=kv.get("StartTime", ""),
                end=kv.get("EndTime", ""),
                users=_split_csv(kv.get("Users")),
                flags=_split_csv(kv.get("Flags")),
                state=kv.get("State", ""),
            )
        )
    return out


def _split_csv(value: Any) -> list[str]:
    if not value or value == "(null)":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in str(value).split(",") if v]


def _raise_errors(payload: dict[str, Any], what: str) -> None:
    errors = payload.get("errors") or []
    if errors:
        first = errors[0]
        text = first.get("error", first) if isinstance(first, dict) else first
        raise SlurmError(f"{what} --json reported: {text}")


class CommandBackend:
    """Slurm through its command-line tools. Every call has a timeout; nothing runs without a config."""

    name = "command"

    def __init__(self, conf: str | os.PathLike[str], timeout: float = 15.0) -> None:
        self.conf = Path(conf)
        self.timeout = timeout
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _run(self, argv: Sequence[str], timeout: float | None = None) -> str:
        try:
            result = proc.run(argv, timeout=timeout or self.timeout, env=self.env, check=False)
        except proc.CommandTimeout:
            raise SlurmUnavailable(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''}: no answer from slurmctld within "
                f"{timeout or self.timeout:g}s (is it running? SLURM_CONF={self.conf})"
            ) from None
        except proc.CommandError as e:
            raise SlurmError(str(e)) from None
        if result.returncode != 0:
            msg = (result.stderr.strip() or result.stdout.strip()).splitlines()
            text = msg[-1] if msg else f"exit {result.returncode}"
            if any(s in text.lower() for s in _UNREACHABLE):
                raise SlurmUnavailable(f"{' '.join(argv[:2])}: slurmctld unreachable: {text}")
            raise SlurmError(f"{' '.join(argv[:3])}: {text}")
        return result.stdout

    def _json(self, argv: Sequence[str]) -> dict[str, Any]:
        out = self._run(argv)
        try:
            payload = json.loads(out)
        except json.JSONDecodeError as e:
            raise SlurmError(f"{argv[0]} --json printed something that is not JSON: {e}") from None
        if payload.get("errors"):
            # 22.05 reports an unreachable controller as a bare "Unspecified error": ask scontrol ping.
            self.ping()
        return payload

    def ping(self) -> None:
        """Raise SlurmUnavailable unless the primary slurmctld answers."""
        out = self._run(["scontrol", "ping"])
        if "UP" not in out:
            raise SlurmUnavailable(f"slurmctld is not answering: {out.strip()} (SLURM_CONF={self.conf})")

    def nodes(self) -> list[Node]:
        return parse_nodes(self._json(["sinfo", "--json"]))

    def jobs(self) -> list[Job]:
        return parse_jobs(self._json(["squeue", "--json"]))

    def reservations(self) -> list[Reservation]:
        return parse_reservations(self._run(["scontrol", "show", "reservation", "-o"]))

    def scontrol(self, *args: str) -> str:
        return self._run(["scontrol", *args])

    def sbatch(self, args: Sequence[str], script: str | None = None) -> int:
        out = (
            self._run(["sbatch", "--parsable", *args]) if script is None else self._sbatch_stdin(args, script)
        )
        first = out.strip().split(";")[0]
        if not first.isdigit():
            raise SlurmError(f"sbatch printed no job id: {out.strip()!r}")
        return int(first)

    def _sbatch_stdin(self, args: Sequence[str], script: str) -> str:
        try:
            result = proc.run(
                ["sbatch", "--parsable", *args], timeout=self.timeout, env=self.env, input=script
            )
        except proc.CommandTimeout:
            raise SlurmUnavailable(f"sbatch: no answer from slurmctld within {self.timeout:g}s") from None
        except proc.CommandError as e:
            raise SlurmError(str(e)) from None
        return result.stdout

    def scancel(self, *args: str) -> None:
        self._run(["scancel", *args])
