"""The default Slurm backend: run sinfo/squeue/scontrol with timeouts; normalize.py reads what they print.

Which commands it runs depends on the Slurm version, read once per backend from `sinfo -V` (no RPC):
- 22.05: `sinfo --json`, `squeue --json` (both ignore filters, so `job(id)` reads the whole list, still
  one RPC) and `scontrol show reservation -o` (22.05's scontrol has no --json).
- 23.02 and later: `scontrol --json show nodes` (one record per node), `squeue --json --states=all`
  (finished jobs still within MinJobAge too, as 22.05 lists them), `scontrol --json show job ID` for one
  job (it also knows finished jobs, and an unknown id is an empty list), and
  `scontrol --json show reservations`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusterops import proc
from clusterops.slurm.normalize import (
    SlurmError,
    SlurmUnavailable,
    parse_jobs,
    parse_kv_line,
    parse_nodes,
    parse_reservations,
    parse_version,
)
from clusterops.slurm.records import Job, Node, Reservation

__all__ = [
    "CommandBackend",
    "SlurmError",
    "SlurmUnavailable",
    "parse_jobs",
    "parse_kv_line",
    "parse_nodes",
    "parse_reservations",
]

_UNREACHABLE = (
    "unable to contact slurm controller",
    "slurm_load_",
    "connection refused",
    "socket timed out",
    "communication connection failure",
    "zero bytes were transmitted",
)
# Answers that name a missing object; they start with "slurm_load_..." too but are not an outage.
_NOT_FOUND = ("invalid job id specified", "invalid node name specified", "reservation not found")
# The first release whose scontrol has --json (data_parser/v0.0.39).
_SCONTROL_JSON = (23, 2)


class CommandBackend:
    """Slurm through its command-line tools. Every call has a timeout; nothing runs without a config."""

    name = "command"

    def __init__(
        self, conf: str | os.PathLike[str], timeout: float = 15.0, bin_dir: str | os.PathLike[str] = ""
    ) -> None:
        self.conf = Path(conf)
        self.timeout = timeout
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        if bin_dir:
            # Slurm's commands from this directory first (a site's /opt/slurm/bin, the sandbox's own).
            self.env["PATH"] = f"{bin_dir}:{self.env.get('PATH', os.defpath)}"
        self._version: tuple[int, int, int] | None = None

    def version(self) -> tuple[int, int, int]:
        """The installed Slurm's version, from `sinfo -V` (reads slurm.conf, asks no daemon); cached."""
        if self._version is None:
            self._version = parse_version(self._run(["sinfo", "-V"]))
        return self._version

    @property
    def scontrol_json(self) -> bool:
        """Whether this Slurm's scontrol speaks --json (23.02 and later)."""
        return self.version()[:2] >= _SCONTROL_JSON

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
            low = text.lower()
            if not any(s in low for s in _NOT_FOUND) and any(s in low for s in _UNREACHABLE):
                raise SlurmUnavailable(f"{' '.join(argv[:2])}: slurmctld unreachable: {text}")
            raise SlurmError(f"{' '.join(argv[:3])}: {text}")
        return result.stdout

    def _json(self, argv: Sequence[str]) -> Any:
        out = self._run(argv)
        try:
            payload = json.loads(out)
        except (ValueError, RecursionError) as e:
            raise SlurmError(f"{' '.join(argv)} printed something that is not JSON: {e}") from None
        if isinstance(payload, dict) and payload.get("errors"):
            # 22.05 reports an unreachable controller as a bare "Unspecified error": ask scontrol ping.
            self.ping()
        return payload

    def ping(self) -> None:
        """Raise SlurmUnavailable unless the primary slurmctld answers."""
        out = self._run(["scontrol", "ping"])
        if "UP" not in out:
            raise SlurmUnavailable(f"slurmctld is not answering: {out.strip()} (SLURM_CONF={self.conf})")

    def nodes(self) -> list[Node]:
        argv = ["scontrol", "--json", "show", "nodes"] if self.scontrol_json else ["sinfo", "--json"]
        return parse_nodes(self._json(argv), " ".join(argv))

    def node(self, name: str) -> Node | None:
        """One node, or None when Slurm does not know it: `scontrol --json show node NAME` where the
        version has it (one record), else the whole `sinfo --json` (22.05 ignores its filters)."""
        if not self.scontrol_json:
            return next((n for n in self.nodes() if n.name == name), None)
        argv = ["scontrol", "--json", "show", "node", name]
        try:
            payload = self._json(argv)
        except SlurmUnavailable:
            raise
        except SlurmError as e:
            if "invalid node name" in str(e).lower():
                return None
            raise
        return next((n for n in parse_nodes(payload, " ".join(argv)) if n.name == name), None)

    def jobs(self) -> list[Job]:
        # 23.02+ squeue lists only unfinished jobs by default; 22.05's --json lists all it still holds.
        argv = ["squeue", "--json", "--states=all"] if self.scontrol_json else ["squeue", "--json"]
        return parse_jobs(self._json(argv), " ".join(argv))

    def job(self, job_id: int) -> Job | None:
        """One job, or None when Slurm no longer knows it. Asks for that job alone where the version
        can (22.05 ignores filters with --json: there it reads the list, one RPC all the same)."""
        job_id = int(job_id)
        if not self.scontrol_json:
            return next((j for j in self.jobs() if j.job_id == job_id), None)
        argv = ["scontrol", "--json", "show", "job", str(job_id)]
        try:
            payload = self._json(argv)
        except SlurmUnavailable:
            raise
        except SlurmError as e:
            if "invalid job id" in str(e).lower():
                return None
            raise
        # An array or heterogeneous job id names several records; keep the one asked for.
        return next((j for j in parse_jobs(payload, " ".join(argv)) if j.job_id == job_id), None)

    def reservations(self) -> list[Reservation]:
        if self.scontrol_json:
            argv = ["scontrol", "--json", "show", "reservations"]
            return parse_reservations(self._json(argv), " ".join(argv))
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
