"""The one Slurm client the rest of clusterops talks to: reads, drains, reservations, jobs."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from clusterops.errors import ConfigError, UsageError
from clusterops.slurm.command import CommandBackend, SlurmError
from clusterops.slurm.records import Job, Node, Reservation

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def find_conf(configured: str = "") -> Path:
    """slurm.conf to use. Without one, Slurm tools fall back to DNS SRV look-ups: never allow that."""
    for candidate in (configured, os.environ.get("SLURM_CONF", "")):
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise ConfigError(f"slurm.conf {path} does not exist (slurm.conf in config, or SLURM_CONF)")
            return path
    if DEFAULT_CONF.is_file():
        return DEFAULT_CONF
    raise ConfigError(
        "no Slurm config: set [slurm] conf in clusterops.toml or SLURM_CONF "
        f"(and {DEFAULT_CONF} does not exist)"
    )


def _check_name(kind: str, value: str) -> str:
    # Values go into scontrol arguments as Key=Value; refuse anything that could smuggle another key.
    if not _NAME.match(value):
        raise UsageError(f"{kind} {value!r}: only letters, digits, '_', '.', '-' are allowed")
    return value


def _check_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise UsageError("a drain needs a reason")
    if "=" in reason:
        raise UsageError(f"reason {reason!r}: '=' is not allowed (scontrol would read it as a key)")
    return reason


class SlurmClient:
    def __init__(
        self,
        conf: str | os.PathLike[str] = "",
        timeout: float = 15.0,
        backend: str = "auto",
        bin_dir: str | os.PathLike[str] = "",
    ) -> None:
        self.conf = find_conf(str(conf))
        self.timeout = timeout
        self.cmd = CommandBackend(self.conf, timeout, bin_dir)
        self.backend = self._pick_backend(backend)

    @classmethod
    def from_config(cls, cfg) -> SlurmClient:
        return cls(cfg.slurm.conf, cfg.slurm.timeout_s, cfg.slurm.backend, cfg.slurm.bin_dir)

    def _pick_backend(self, choice: str):
        if choice not in ("auto", "command", "pyslurm"):
            raise ConfigError(f"slurm.backend {choice!r}: must be auto, command or pyslurm")
        if choice == "command":
            return self.cmd
        from clusterops.slurm import pyslurm_backend

        reason = pyslurm_backend.unusable_reason(self.cmd)
        if reason is None:
            return pyslurm_backend.PyslurmBackend(self.cmd)
        if choice == "pyslurm":
            raise ConfigError(f"slurm.backend = 'pyslurm' but {reason}")
        return self.cmd

    # reads
    def nodes(self) -> list[Node]:
        return self.backend.nodes()

    def node(self, name: str) -> Node:
        """One node, read from Slurm's JSON (that node alone where the version can)."""
        one = getattr(self.backend, "node", None)
        found = (
            one(_check_name("node", name))
            if one is not None
            else next((n for n in self.nodes() if n.name == name), None)
        )
        if found is None:
            raise SlurmError(f"node {name!r}: Slurm does not know it")
        return found

    def jobs(self) -> list[Job]:
        return self.backend.jobs()

    def job(self, job_id: int) -> Job:
        """One job. The command backend asks Slurm for that job alone where the version honours it."""
        one = getattr(self.backend, "job", None)
        if one is not None:
            found = one(int(job_id))
        else:
            found = next((j for j in self.jobs() if j.job_id == int(job_id)), None)
        if found is None:
            raise SlurmError(f"job {job_id}: not in squeue (finished longer ago than MinJobAge?)")
        return found

    def reservations(self) -> list[Reservation]:
        return self.backend.reservations()

    def reservation(self, name: str) -> Reservation | None:
        return next((r for r in self.reservations() if r.name == name), None)

    # node state
    def drain(self, node: str, reason: str) -> None:
        self.cmd.scontrol(
            "update",
            f"NodeName={_check_name('node', node)}",
            "State=DRAIN",
            f"Reason={_check_reason(reason)}",
        )

    def down(self, node: str, reason: str) -> None:
        """Mark a dead node DOWN now: Slurm stops waiting on it (its jobs leave COMPLETING at once)
        instead of after its own timeouts."""
        self.cmd.scontrol(
            "update",
            f"NodeName={_check_name('node', node)}",
            "State=DOWN",
            f"Reason={_check_reason(reason)}",
        )

    def resume(self, node: str) -> None:
        self.cmd.scontrol("update", f"NodeName={_check_name('node', node)}", "State=RESUME")

    def set_extra(self, node: str, value: str) -> None:
        """Set the node's Extra field: data that travels through slurmctld, no shared filesystem needed."""
        if "\n" in value:
            raise UsageError("node Extra must be one line")
        self.cmd.scontrol("update", f"NodeName={_check_name('node', node)}", f"Extra={value}")

    # reservations
    def create_reservation(
        self,
        name: str,
        nodes: Sequence[str],
        users: Sequence[str] = ("root",),
        duration: str = "infinite",
        flags: Sequence[str] = ("IGNORE_JOBS",),
    ) -> None:
        args = [
            "create",
            "reservation",
            f"ReservationName={_check_name('reservation', name)}",
            f"Nodes={','.join(_check_name('node', n) for n in nodes)}",
            "StartTime=now",
            f"Duration={_check_name('duration', duration)}",
            f"Users={','.join(_check_name('user', u) for u in users)}",
        ]
        if flags:
            args.append(f"Flags={','.join(_check_name('flag', f) for f in flags)}")
        self.cmd.scontrol(*args)

    def set_reservation_nodes(self, name: str, nodes: Sequence[str]) -> None:
        if not nodes:
            raise UsageError(f"reservation {name}: Slurm cannot hold a reservation with no nodes; delete it")
        self.cmd.scontrol(
            "update",
            f"ReservationName={_check_name('reservation', name)}",
            f"Nodes={','.join(_check_name('node', n) for n in nodes)}",
        )

    def add_to_reservation(self, name: str, node: str) -> None:
        res = self._existing_reservation(name)
        if node not in res.nodes:
            self.set_reservation_nodes(name, [*res.nodes, node])

    def remove_from_reservation(self, name: str, node: str) -> None:
        res = self._existing_reservation(name)
        if node in res.nodes:
            self.set_reservation_nodes(name, [n for n in res.nodes if n != node])

    def delete_reservation(self, name: str) -> None:
        self.cmd.scontrol("delete", f"ReservationName={_check_name('reservation', name)}")

    def _existing_reservation(self, name: str) -> Reservation:
        res = self.reservation(name)
        if res is None:
            raise SlurmError(f"reservation {name!r} does not exist")
        return res

    # jobs
    def submit(self, args: Sequence[str] = (), script: str | None = None) -> int:
        """sbatch with `args` (options then the script path), or with `script` text on stdin; the job id."""
        return self.cmd.sbatch(list(args), script)

    def requeue(self, job_id: int, start_now: bool = True) -> None:
        """Requeue; Slurm then holds the job PENDING for 120 s (BeginTime) unless we start it now."""
        self.cmd.scontrol("requeue", str(int(job_id)))
        if start_now:
            self.start_when_pending(job_id)

    def start_when_pending(self, job_id: int, timeout: float = 30.0) -> None:
        """Clear a requeued job's BeginTime hold. Slurm sets that hold only once the job has left
        COMPLETING, and an earlier StartTime=now is overwritten, so wait for PENDING first."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.job(job_id).state == "PENDING":
                self.start_now(job_id)
                return
            time.sleep(0.2)
        raise SlurmError(f"job {job_id}: still not PENDING {timeout:g}s after requeue; StartTime not cleared")

    def start_now(self, job_id: int) -> None:
        self.cmd.scontrol("update", f"JobId={int(job_id)}", "StartTime=now")

    def release(self, job_id: int) -> None:
        self.cmd.scontrol("release", str(int(job_id)))

    def move_to_reservation(self, job_id: int, reservation: str) -> None:
        self.cmd.scontrol(
            "update", f"JobId={int(job_id)}", f"ReservationName={_check_name('reservation', reservation)}"
        )

    def cancel(self, job_id: int, signal: str | None = None) -> None:
        args = [f"--signal={_check_name('signal', signal)}"] if signal else []
        self.cmd.scancel(*args, str(int(job_id)))
