"""Typed records for what Slurm knows: nodes, jobs, reservations."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    name: str
    state: str  # base state, lower case: idle, allocated, mixed, down, unknown, future, ...
    flags: list[str] = field(default_factory=list)  # upper case: DRAIN, NOT_RESPONDING, COMPLETING, ...
    reason: str = ""
    partitions: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    address: str = ""
    cpus: int = 0
    extra: str = ""  # free-form node data; clusterops keeps a spare's warmth here
    reason_time: int | None = None  # when the reason was set (Unix time), where Slurm says

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.flags

    @property
    def responding(self) -> bool:
        return "NOT_RESPONDING" not in self.flags

    @property
    def down(self) -> bool:
        return self.state == "down" or not self.responding

    @property
    def usable(self) -> bool:
        """Up, responding, not drained: Slurm may schedule onto it."""
        return (
            self.state in ("idle", "mixed", "allocated", "completing")
            and not self.drained
            and self.responding
        )

    @property
    def label(self) -> str:
        return "+".join([self.state, *[f.lower() for f in self.flags]])


@dataclass
class Job:
    job_id: int
    name: str
    state: str  # upper case: PENDING, RUNNING, COMPLETED, FAILED, NODE_FAIL, ...
    nodes: list[str] = field(default_factory=list)
    reason: str = ""
    restart_count: int = 0
    partition: str = ""
    reservation: str = ""
    user: str = ""
    exit_code: int | None = None
    node_count: int = 0
    flags: list[str] = field(default_factory=list)  # the job's other state flags (newer Slurm lists them)
    held: bool = False  # held by a user or admin: waits until `scontrol release`

    @property
    def active(self) -> bool:
        return self.state in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "SUSPENDED", "COMPLETING")


@dataclass
class Reservation:
    name: str
    nodes: list[str] = field(default_factory=list)
    start: str = ""
    end: str = ""
    users: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    state: str = ""
