"""The warm-spare manager: Slurm reservations are the only membership there is.

The protected job runs in the training reservation; warm spares wait in a second reservation
(`<training>-spare`) where nothing else can land on them. A failover is three Slurm edits: drain the
failed node, move the warmest spare from the spare reservation into the training one (and the failed
node out), and requeue the job (or clear its BeginTime hold). Each tick reads Slurm afresh and acts only
on what is still true, so the watcher is idempotent and can be killed and restarted at any point.

Surviving Slurm: every read goes through `snapshot()`, which either returns a complete, consistent view
(nodes, reservations, jobs) or raises SlurmError: an answer that cannot be read, a controller that does
not answer, or a view that contradicts itself (a reserved node or a job's node missing from the node
list, as a half-read or mis-read answer gives). A tick that cannot get such a view acts on nothing.
`watch()` logs each failed tick as an alert event, retries with capped exponential backoff and jitter,
and returns to its normal cadence after the first good tick. Only KeyboardInterrupt and SystemExit
stop it; any other exception is logged with an alert and retried the same way.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterops.errors import ClusteropsError
from clusterops.fsutil import atomic_write_json, read_json
from clusterops.health import ownership
from clusterops.slurm import Job, Node, Reservation, SlurmClient, SlurmError, SlurmUnavailable
from clusterops.spare.warmth import Warmth
from clusterops.telemetry import Metric, log_event, write_textfile

WARM_JOB_NAME = "clusterops-warm"
DRAIN_PREFIX = "clusterops: spare:"
# The reason Slurm itself gives a node it marks DOWN for not answering: Slurm's, not a person's.
SLURM_NOT_RESPONDING = "Not responding"
MAX_BACKOFF_S = 60.0
# A node Slurm reports not responding is read again this long after, and failed over only if it is
# still so. Slurm 24.11 marks nodes DOWN "Not responding" for up to a second at times (after slurmctld
# starts or restarts, or with a SlurmdTimeout of a few seconds under load; it returns them on the next
# turn of its once-a-second background loop): one such read must not requeue a whole job.
# A drain is somebody's decision and is acted on at once.
CONFIRM_S = 2.0
# spare-watch.json: v2 carries `"v"`; v1 (the previous format) is the same fields without it.
STATE_VERSION = 2

# What a parser hands up when Slurm's answer is not the shape it expects. The client is meant to turn
# these into SlurmError itself; the watcher converts any that still escape, at the read, so that nothing
# but SlurmError ever comes out of a Slurm read here (and a bug elsewhere is not mistaken for one).
_PARSE_ERRORS = (TypeError, KeyError, ValueError, AttributeError, IndexError)


class StateFormatError(ClusteropsError):
    """The watcher's state file is unreadable or written by a newer format."""


class SnapshotError(SlurmError):
    """Slurm's answers, read one after another, do not form one complete and consistent view."""


@dataclass
class Snapshot:
    """One complete, consistent view of what the watcher acts on."""

    nodes: dict[str, Node]
    reservations: dict[str, Reservation]
    jobs: list[Job]


@dataclass
class Backoff:
    """Delay before the next tick: `poll_s` while ticks succeed; after n failures in a row
    min(cap, poll_s * 2**n), of which the upper half is random (jitter, so that several watchers
    or a restarted slurmctld's other clients do not retry in step)."""

    poll_s: float
    cap_s: float = MAX_BACKOFF_S
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def ok(self) -> float:
        self.failures = 0
        return self.poll_s

    def failed(self) -> float:
        self.failures += 1
        full = min(max(self.cap_s, self.poll_s), self.poll_s * 2**self.failures)
        return full / 2 + self.rng.uniform(0, full / 2)


@dataclass
class Recovery:
    """A failover in progress: the job, the failed node, the spare, and when we saw the failure."""

    job_id: int
    failed: str
    spare: str | None
    detected: float
    requeued: bool = False
    nudged: bool = False
    revived: int = 0  # requeues of a job the failure had already ended (FAILED / NODE_FAIL)


@dataclass
class WatchState:
    recoveries: list[Recovery] = field(default_factory=list)
    failovers: int = 0
    last_failover_s: float | None = None


@dataclass
class SpareInfo:
    node: str
    slurm_state: str
    warmth: Warmth
    warm_job: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "slurm_state": self.slurm_state,
            "warm_job": self.warm_job,
            **asdict(self.warmth),
        }


class SpareManager:
    def __init__(
        self,
        client: SlurmClient,
        reservation: str,
        spare_reservation: str,
        state_dir: Path,
        event_log: Path,
        textfile_dir: Path | None = None,
        min_spares: int = 1,
        job_name: str = "",
        warm_command: list[str] | None = None,
        warm_timeout_s: float = 1800.0,
        remote_latest: Callable[[], int | None] | None = None,
        clock: Callable[[], float] = time.time,
        confirm_s: float = CONFIRM_S,
        drain_key: Path | None = None,
    ) -> None:
        self.slurm = client
        self.reservation = reservation
        self.spare_reservation = spare_reservation or f"{reservation}-spare"
        self.state_file = state_dir / "spare-watch.json"
        self.event_log = event_log
        self.textfile_dir = textfile_dir
        self.min_spares = min_spares
        self.job_name = job_name
        self.warm_command = warm_command or [sys.executable, "-m", "clusterops", "spare", "warm-here"]
        self.warm_timeout_s = warm_timeout_s
        self.remote_latest = remote_latest or (lambda: None)
        self.confirm_s = confirm_s
        self.clock = clock
        # The same key as the nodes' health hooks (clusterops.health.ownership): drains set here are
        # provably ours to every reader, and a reason nobody here set is never written over.
        self.drain_key_path = drain_key or state_dir / ".keys" / "drain.key"

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> tuple[dict[str, Node], Reservation | None, Reservation | None, list[Job]]:
        return self._unpack(self.read())

    def _unpack(
        self, view: Snapshot
    ) -> tuple[dict[str, Node], Reservation | None, Reservation | None, list[Job]]:
        return (
            view.nodes,
            view.reservations.get(self.reservation),
            view.reservations.get(self.spare_reservation),
            view.jobs,
        )

    def read(self) -> Snapshot:
        """Nodes, reservations and jobs, checked to be complete and consistent, or SlurmError."""
        node_list = _read("sinfo (nodes)", self.slurm.nodes)
        res_list = _read("scontrol show reservation", self.slurm.reservations)
        jobs = _read("squeue (jobs)", self.slurm.jobs)
        nodes = {n.name: n for n in node_list}
        reservations = {r.name: r for r in res_list}
        if not nodes:
            # A cluster has nodes: an empty list is an answer we did not read (e.g. another version's
            # format), and acting on it would fail over every training node as "vanished".
            raise SnapshotError("Slurm listed no nodes at all: not acting on an empty view")
        if len(nodes) != len(node_list) or len(reservations) != len(res_list):
            raise SnapshotError("Slurm listed a node or reservation twice: not a consistent view")
        for r in (reservations.get(self.reservation), reservations.get(self.spare_reservation)):
            missing = sorted(set(r.nodes) - set(nodes)) if r else []
            if missing:
                raise SnapshotError(
                    f"reservation {r.name} names {', '.join(missing)}, which the node list lacks: "
                    "not a consistent view"
                )
        for j in jobs:
            missing = sorted(set(j.nodes) - set(nodes)) if j.active else []
            if missing:
                raise SnapshotError(
                    f"job {j.job_id} runs on {', '.join(missing)}, which the node list lacks: "
                    "not a consistent view"
                )
            # Slurm refuses to delete a reservation a running job uses: one missing is a mis-read.
            if j.state == "RUNNING" and j.reservation and j.reservation not in reservations:
                raise SnapshotError(
                    f"job {j.job_id} runs in reservation {j.reservation}, which the reservation list "
                    "lacks: not a consistent view"
                )
        return Snapshot(nodes, reservations, jobs)

    def protected_jobs(self, jobs: list[Job]) -> list[Job]:
        return [
            j
            for j in jobs
            if j.reservation == self.reservation
            and (not self.job_name or j.name == self.job_name)
            and (j.active or j.state in ("NODE_FAIL", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"))
        ]

    def warm_jobs(self, jobs: list[Job]) -> dict[str, Job]:
        return {j.nodes[0]: j for j in jobs if j.name == WARM_JOB_NAME and j.active and j.nodes}

    def spares(self, nodes=None, spare_res=None, jobs=None) -> list[SpareInfo]:
        if nodes is None:
            nodes, _, spare_res, jobs = self.snapshot()
        warming = self.warm_jobs(jobs or [])
        out = []
        for name in spare_res.nodes if spare_res else []:
            n = nodes.get(name)
            out.append(
                SpareInfo(
                    node=name,
                    slurm_state=n.label if n else "missing",
                    warmth=Warmth.decode(n.extra if n else ""),
                    warm_job=warming[name].job_id if name in warming else None,
                )
            )
        return out

    def status(self) -> dict[str, Any]:
        nodes, res, spare_res, jobs = self.snapshot()
        state = self._load()
        return {
            "reservation": {
                "name": self.reservation,
                "nodes": res.nodes if res else [],
                "exists": res is not None,
            },
            "spare_reservation": {
                "name": self.spare_reservation,
                "nodes": spare_res.nodes if spare_res else [],
            },
            "jobs": [
                {
                    "job_id": j.job_id,
                    "name": j.name,
                    "state": j.state,
                    "nodes": j.nodes,
                    "reason": j.reason,
                    "restart_count": j.restart_count,
                }
                for j in self.protected_jobs(jobs)
            ],
            "spares": [s.as_dict() for s in self.spares(nodes, spare_res, jobs)],
            "failovers": state.failovers,
            "last_failover_seconds": state.last_failover_s,
            "recovering": [asdict(r) for r in state.recoveries],
        }

    # ------------------------------------------------------------------ operator actions
    def add(self, node: str, warm: bool = True) -> None:
        nodes, res, spare_res, _ = self.snapshot()
        if node not in nodes:
            raise SlurmError(f"node {node!r}: Slurm does not know it")
        if res and node in res.nodes:
            raise SlurmError(
                f"{node} is in the training reservation {self.reservation}; it cannot also be a spare"
            )
        if spare_res is None:
            self.slurm.create_reservation(self.spare_reservation, [node])
        elif node not in spare_res.nodes:
            self.slurm.add_to_reservation(self.spare_reservation, node)
        self.event("spare_added", node=node)
        if warm:
            self.warm(node)

    def remove(self, node: str) -> None:
        _, _, spare_res, jobs = self.snapshot()
        if spare_res is None or node not in spare_res.nodes:
            raise SlurmError(f"{node} is not a spare (not in reservation {self.spare_reservation})")
        warming = self.warm_jobs(jobs)
        if node in warming:
            self.slurm.cancel(warming[node].job_id)
        self._leave_spare_reservation(spare_res, node)
        Warmth.clear(self.slurm, node)
        self.event("spare_removed", node=node)

    def replace(self, node: str, reason: str = "operator replace") -> str | None:
        """Operator-initiated swap (maintenance): the same path as a failure, with the operator's reason."""
        nodes, res, spare_res, jobs = self.snapshot()
        if res is None or node not in res.nodes:
            raise SlurmError(f"{node} is not in the training reservation {self.reservation}")
        state = self._load()
        spare = self._failover(node, reason, nodes, res, spare_res, jobs, state)
        self._save(state)
        return spare

    def warm(self, node: str) -> int:
        """Submit the warm job on a spare: stage data, pull the newest checkpoint, health check, report."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        script = "#!/bin/sh\nexec " + " ".join(_sh_quote(a) for a in self.warm_command) + "\n"
        job_id = self.slurm.submit(
            [
                "-N",
                "1",
                "-w",
                node,
                f"--reservation={self.spare_reservation}",
                "-J",
                WARM_JOB_NAME,
                f"--time={max(1, int(self.warm_timeout_s // 60))}",
                "-o",
                str(self.state_file.parent / "warm-%j.out"),
            ],
            script=script,
        )
        self.event("warm_started", node=node, job_id=job_id)
        return job_id

    # ------------------------------------------------------------------ the watch loop
    def tick(self) -> None:
        """One pass. Reads a consistent view first; if it cannot, raises SlurmError having done nothing.
        Every action is followed by a fresh view before the next decision."""
        view = self.read()
        nodes, res, spare_res, jobs = self._unpack(view)
        state = self._load()
        acted = bool(state.recoveries)  # recoveries in flight change Slurm below
        if res is not None:
            for name in list(res.nodes):
                why = failure_reason(nodes.get(name))
                if why and _not_responding(nodes.get(name)):
                    why = self._confirm(name, why)
                if why:
                    self._failover(name, why, nodes, res, spare_res, jobs, state)
                    acted = True
                    view = self.read()
                    nodes, res, spare_res, jobs = self._unpack(view)
        self._advance_recoveries(state, jobs)
        # A quiet tick reads Slurm once (nodes, reservations, jobs); only after acting is it read again.
        view = self._tend_spares(nodes, spare_res, jobs, None if acted else view)
        self._save(state)
        self._export(state, view)

    def _confirm(self, name: str, why: str) -> str | None:
        """Slurm said `name` stopped answering: read it again `confirm_s` later. The failure, or None
        when Slurm has it answering again (its own momentary verdict, not a dead node)."""
        self.event("failure_suspected", node=name, why=why, confirm_s=self.confirm_s)
        time.sleep(self.confirm_s)
        again = failure_reason(self.slurm.node(name))
        if again is None:
            self.event("failure_dismissed", node=name, why=why, confirm_s=self.confirm_s)
        return again

    def watch(
        self,
        stop: Callable[[], bool] = lambda: False,
        poll_s: float = 2.0,
        on_error: Callable[[BaseException], Any] | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Tick every `poll_s` until `stop()`. A failed tick is an alert event and a backoff, never the
        end of the loop: only KeyboardInterrupt / SystemExit (BaseException) leave it."""
        backoff = Backoff(poll_s, max_backoff_s)
        down_since: float | None = None
        while not stop():
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the loop must outlive any one tick; BaseException ends it
                delay = backoff.failed()
                down_since = down_since or time.time()
                self._tick_failed(e, backoff.failures, delay, on_error)
            else:
                if backoff.failures:
                    with _never_raises():
                        self.event(
                            "watch_recovered",
                            failures=backoff.failures,
                            seconds=round(time.time() - (down_since or time.time()), 2),
                        )
                down_since = None
                delay = backoff.ok()
            _sleep_unless(stop, delay, sleep)

    def _tick_failed(self, e: Exception, failures: int, delay: float, on_error) -> None:
        """An alert event for a failed tick. A Slurm or clusterops error (Slurm away, unreadable,
        inconsistent, an action refused) is expected; anything else is our bug or an answer no one
        foresaw, and gets its traceback. Reporting never raises: it must not end the loop."""
        fields: dict[str, Any] = {"failures": failures, "retry_in_s": round(delay, 2)}
        if isinstance(e, ClusteropsError):
            fields.update(cause=_error_kind(e), error=str(e))
        else:
            fields.update(
                cause="unexpected",
                error=f"{type(e).__name__}: {e}",
                traceback="".join(traceback.format_exception(e)[-6:]),
            )
        with _never_raises():
            self.event("watch_error", alert=True, **fields)
        if on_error:
            with _never_raises():
                on_error(e)

    # ------------------------------------------------------------------ internals
    def _failover(self, failed, why, nodes, res, spare_res, jobs, state: WatchState) -> str | None:
        detected = self.clock()
        self.event("failure_detected", node=failed, why=why)
        node = nodes.get(failed)
        affected = [
            j for j in self.protected_jobs(jobs) if failed in j.nodes or j.state in ("PENDING", "NODE_FAIL")
        ]
        requeued_now: set[int] = set()
        if node is not None and not node.responding and node.state != "down":
            # Requeue first: a job whose node goes DOWN under it can end FAILED (its batch script exits
            # when srun loses the node) before Slurm's own requeue. Flagged for requeue, it cannot.
            for job in affected:
                if job.state == "RUNNING":
                    try:
                        self.slurm.cmd.scontrol("requeue", str(job.job_id))
                        requeued_now.add(job.job_id)
                        self.event("requeued", job_id=job.job_id)
                    except SlurmError as e:
                        self.event("recovery_step_failed", job_id=job.job_id, error=str(e))
            # A dead node holds its jobs in COMPLETING until Slurm's own timeouts mark it DOWN; say so now.
            try:
                reason = self._reason(node, failed, why)
                if reason is None:
                    self.event("mark_down_skipped", node=failed, reason=node.reason, why="not our reason")
                else:
                    self.slurm.down(failed, reason)
                    self.event("marked_down", node=failed, reason=reason)
            except ClusteropsError as e:
                self.event("mark_down_failed", node=failed, error=str(e))
        if node is None or not node.drained:
            # DRAIN as well, so the node stays out when its slurmd registers again (ReturnToService).
            reason = self._reason(node, failed, why)
            if reason is None:
                self.event("drain_skipped", node=failed, reason=node.reason if node else "")
            else:
                self.slurm.drain(failed, reason)
                self.event("drained", node=failed, reason=reason)
        spare = self._pick_spare(nodes, spare_res, jobs)
        members = [n for n in res.nodes if n != failed]
        if spare is not None:
            warming = self.warm_jobs(jobs)
            if spare.node in warming:
                self.slurm.cancel(warming[spare.node].job_id)
            self._leave_spare_reservation(spare_res, spare.node)
            members.append(spare.node)
            self.event(
                "spare_swapped_in",
                node=spare.node,
                replaces=failed,
                warm=spare.warmth.state == "warm",
                ckpt_step=spare.warmth.ckpt_step,
            )
        else:
            self.event("no_spare_available", node=failed, alert=True)
        if members:
            self.slurm.set_reservation_nodes(self.reservation, members)
        else:
            self.slurm.delete_reservation(self.reservation)
        for job in affected:
            if not any(r.job_id == job.job_id for r in state.recoveries):
                state.recoveries.append(
                    Recovery(
                        job.job_id,
                        failed,
                        spare.node if spare else None,
                        detected,
                        requeued=job.job_id in requeued_now,
                    )
                )
        state.failovers += 1
        self._advance_recoveries(state, self.read().jobs)
        return spare.node if spare else None

    def _advance_recoveries(self, state: WatchState, jobs: list[Job]) -> None:
        by_id = {j.job_id: j for j in jobs}
        still = []
        for r in state.recoveries:
            job = by_id.get(r.job_id)
            if job is not None and job.state in ("FAILED", "NODE_FAIL") and r.revived < 3:
                # The failure took the job down before Slurm's requeue held (its batch script exits when
                # srun loses the node, and a node marked DOWN can race the requeue): a finished batch
                # job can be requeued while Slurm still holds its record (MinJobAge).
                try:
                    self.slurm.cmd.scontrol("requeue", str(job.job_id))
                    self.event("requeued", job_id=job.job_id, after=job.state)
                except SlurmError as e:
                    self.event("recovery_step_failed", job_id=job.job_id, error=str(e))
                r.revived += 1
                still.append(r)
                continue
            if job is None or job.state in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL"):
                self.event("recovery_ended", job_id=r.job_id, state=job.state if job else "gone")
                continue
            if job.state == "RUNNING" and r.failed not in job.nodes:
                seconds = round(self.clock() - r.detected, 2)
                state.last_failover_s = seconds
                self.event(
                    "job_running",
                    job_id=r.job_id,
                    nodes=job.nodes,
                    seconds_from_detection=seconds,
                    on_spare=r.spare in job.nodes if r.spare else False,
                )
                continue
            try:
                if job.state == "RUNNING" and not r.requeued:
                    # Slurm keeps a job running on a drained node; requeue it onto the new membership.
                    self.slurm.cmd.scontrol("requeue", str(job.job_id))
                    r.requeued = True
                    self.event("requeued", job_id=job.job_id)
                elif job.state == "PENDING" and job.reason == "BeginTime":
                    self.slurm.start_now(job.job_id)
                elif job.state == "PENDING" and not r.nudged and "held" not in job.reason.lower():
                    # Requeued and waiting only for the next scheduling pass: a job update asks for one.
                    self.slurm.start_now(job.job_id)
                    r.nudged = True
                elif job.state == "PENDING" and "held" in job.reason.lower():
                    self.slurm.release(job.job_id)
            except SlurmError as e:
                self.event("recovery_step_failed", job_id=job.job_id, error=str(e))
            still.append(r)
        state.recoveries = still

    def _tend_spares(self, nodes, spare_res, jobs, view: Snapshot | None = None) -> Snapshot | None:
        """Reject failed spares, re-warm stale ones, top up to min_spares. `view` is the tick's own
        read when nothing has changed Slurm since. Returns the fresh view it used, or None when it
        changed Slurm after reading it."""
        spares = self.spares(nodes, spare_res, jobs)
        newest = None
        acted = view is None
        for s in spares:
            if s.warm_job is not None:
                continue
            if s.warmth.state in ("failed",) or (s.warmth.health is not None and not s.warmth.healthy):
                # A spare that fails its health check is not a spare.
                self._leave_spare_reservation(spare_res, s.node)
                node = nodes.get(s.node)
                if node is None or not node.drained:
                    why = f"failed warm-up: {s.warmth.detail or 'health check'}"
                    reason = self._reason(node, s.node, why)
                    if reason is not None:
                        self.slurm.drain(s.node, reason)
                self.event("spare_rejected", node=s.node, detail=s.warmth.detail, health=s.warmth.health)
                spare_res = self.read().reservations.get(self.spare_reservation)
                acted = True
                continue
            node = nodes.get(s.node)
            if node is None or not node.usable:
                continue
            if s.warmth.state == "cold":
                self.warm(s.node)
                acted = True
                continue
            if newest is None:
                newest = self.remote_latest() or -1
            if s.warmth.state == "warm" and newest > (s.warmth.ckpt_step or -1):
                self.event("rewarm", node=s.node, have=s.warmth.ckpt_step, newest=newest)
                self.warm(s.node)
                acted = True
        # Acting above changed Slurm (drains, memberships): choose new spares from a fresh view.
        if acted or view is None:
            view = self.read()
        nodes = dict(view.nodes)
        spare_res = view.reservations.get(self.spare_reservation)
        have = len(spare_res.nodes) if spare_res else 0
        fresh: Snapshot | None = view
        while have < self.min_spares:
            candidate = self._idle_pool(nodes, view.reservations.values())
            if candidate is None:
                self.event("no_spare_available", alert=True, have=have, want=self.min_spares)
                break
            self.add(candidate, warm=True)
            fresh = None
            nodes.pop(candidate, None)
            have += 1
        return fresh

    def _idle_pool(self, nodes: dict[str, Node], reservations) -> str | None:
        reserved = set()
        for r in reservations:
            reserved.update(r.nodes)
        for name in sorted(nodes):
            n = nodes[name]
            if name not in reserved and n.state == "idle" and n.usable:
                return name
        return None

    def _pick_spare(self, nodes, spare_res, jobs) -> SpareInfo | None:
        candidates = [
            s
            for s in self.spares(nodes, spare_res, jobs)
            if nodes.get(s.node) is not None
            and nodes[s.node].usable
            and s.warmth.state != "failed"
            and (s.warmth.health is None or s.warmth.healthy)
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda s: s.warmth.score)

    def _leave_spare_reservation(self, spare_res: Reservation | None, node: str) -> None:
        if spare_res is None or node not in spare_res.nodes:
            return
        rest = [n for n in spare_res.nodes if n != node]
        if rest:
            self.slurm.set_reservation_nodes(self.spare_reservation, rest)
            return
        # Jobs keep the reservation "in use": the warm-up just cancelled until it has left, and a warm-up
        # still pending in it (a re-warm queued behind the running one). The reservation goes away with
        # its last node, so cancel those and wait, rather than fail the failover and redo it next tick.
        deadline = time.monotonic() + 15.0
        cancelled: set[int] = set()
        while True:
            try:
                self.slurm.delete_reservation(self.spare_reservation)
                return
            except SlurmError as e:
                if "in use" not in str(e) or time.monotonic() > deadline:
                    raise
            for j in _read("squeue (jobs)", self.slurm.jobs):
                if (
                    j.reservation == self.spare_reservation
                    and j.name == WARM_JOB_NAME
                    and j.active
                    and j.job_id not in cancelled
                ):
                    self.slurm.cancel(j.job_id)
                    cancelled.add(j.job_id)
            time.sleep(0.2)

    def _key(self) -> ownership.DrainKey | None:
        try:
            return ownership.load(self.drain_key_path)
        except ClusteropsError as e:
            self.event("drain_key_unusable", error=str(e), alert=True)
            return None

    def _reason(self, node: Node | None, name: str, why: str) -> str | None:
        """The reason for a drain or DOWN of `name`: ours, tagged; or, when the node holds a reason
        someone else set (a person's drain), that reason word for word, so it is never written over;
        None when even that cannot be passed back to scontrol (then nothing is set)."""
        key = self._key()
        if node is not None and node.reason and (node.drained or node.state == "down"):
            ours = key is not None and key.owns(name, node.reason, node.reason_time)
            slurms = not node.drained and node.reason == SLURM_NOT_RESPONDING
            if not ours and not slurms:
                kept = node.reason
                return kept if "=" not in kept and kept == " ".join(kept.split()) else None
        text = f"{DRAIN_PREFIX} {why}"
        return key.sign(name, text) if key is not None else ownership.normalize(text)[:240]

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Log one decision. A log that cannot be written (full disk, a planted symlink refused) must not
        stop a failover: the event goes to stderr (the journal) instead, with why."""
        try:
            return log_event(self.event_log, f"spare.{kind}", **fields)
        except OSError as e:
            event = {"ts": round(time.time(), 3), "event": f"spare.{kind}", **fields}
            print(
                f"spare: event log {self.event_log}: {e}; event: {json.dumps(event, default=str)}",
                file=sys.stderr,
            )
            return event

    def _load(self) -> WatchState:
        try:
            raw = read_json(self.state_file)
        except (FileNotFoundError, ValueError):
            return WatchState()
        return parse_state(raw, str(self.state_file))

    def _save(self, state: WatchState) -> None:
        atomic_write_json(self.state_file, {"v": STATE_VERSION, **asdict(state)})

    def _export(self, state: WatchState, view: Snapshot | None = None) -> None:
        if self.textfile_dir is None:
            return
        view = view or self.read()
        nodes, spare_res, jobs = view.nodes, view.reservations.get(self.spare_reservation), view.jobs
        spares = self.spares(nodes, spare_res, jobs)
        metrics = [
            Metric("clusterops_spares", "Nodes in the spare reservation").add(len(spares)),
            Metric("clusterops_spares_warm", "Spares whose warm-up finished and passed health").add(
                sum(s.warmth.state == "warm" for s in spares)
            ),
            Metric(
                "clusterops_spare_failovers_total", "Failovers since the watcher's state began", "counter"
            ).add(state.failovers),
        ]
        if state.last_failover_s is not None:
            metrics.append(
                Metric(
                    "clusterops_spare_last_failover_seconds",
                    "Seconds from failure detection to the job running again",
                ).add(state.last_failover_s)
            )
        write_textfile(self.textfile_dir, "clusterops_spare", metrics)


def parse_state(raw: Any, where: str = "spare-watch.json") -> WatchState:
    """The watcher's state file: format v2 (`"v": 2`) or the previous, unversioned v1 (same fields).
    A newer format is refused with one line: an older watcher must not act on, or write over, it."""
    if not isinstance(raw, dict):
        raise StateFormatError(f"{where}: not a JSON object")
    v = raw.get("v", 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise StateFormatError(f"{where}: format v {v!r} is not a version")
    if v > STATE_VERSION:
        raise StateFormatError(
            f"{where}: format v{v} is newer than this clusterops knows (v{STATE_VERSION}): upgrade clusterops"
        )
    try:
        recoveries = [_recovery(r) for r in raw.get("recoveries", [])]
        failovers = raw.get("failovers", 0)
        last = raw.get("last_failover_s")
        if not isinstance(failovers, int) or isinstance(failovers, bool) or failovers < 0:
            raise ValueError(f"failovers {failovers!r}")
        if last is not None and not _number(last):
            raise ValueError(f"last_failover_s {last!r}")
    except (TypeError, ValueError) as e:
        raise StateFormatError(f"{where}: {e}") from None
    return WatchState(recoveries=recoveries, failovers=failovers, last_failover_s=last)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _recovery(r: Any) -> Recovery:
    if not isinstance(r, dict):
        raise ValueError("a recovery is not an object")
    known = {k: v for k, v in r.items() if k in Recovery.__dataclass_fields__}
    rec = Recovery(**known)
    if not isinstance(rec.job_id, int) or not isinstance(rec.failed, str):
        raise ValueError(f"recovery {str(r)[:80]}: job_id or failed of the wrong type")
    if not _number(rec.detected) or (rec.spare is not None and not isinstance(rec.spare, str)):
        raise ValueError(f"recovery {str(r)[:80]}: detected or spare of the wrong type")
    return rec


def _read(what: str, fn: Callable[[], Any]) -> Any:
    """One Slurm read; whatever goes wrong reading it comes out as SlurmError naming the read."""
    try:
        return fn()
    except SlurmError:
        raise
    except _PARSE_ERRORS as e:
        raise SlurmError(f"{what}: Slurm's answer could not be read ({type(e).__name__}: {e})") from e


def _error_kind(e: BaseException) -> str:
    if isinstance(e, SlurmUnavailable):
        return "unavailable"
    if isinstance(e, SnapshotError):
        return "inconsistent"
    if isinstance(e, SlurmError):
        return "slurm"
    return "error"


@contextlib.contextmanager
def _never_raises():
    """For reporting inside the watch loop: a full disk must not end the watcher (Exception only)."""
    try:
        yield
    except Exception:  # noqa: BLE001
        pass


def _sleep_unless(stop: Callable[[], bool], seconds: float, sleep: Callable[[float], None]) -> None:
    """Sleep `seconds` in short slices, so a stop request is seen within a fraction of a second."""
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sleep(min(left, 0.2))


def failure_reason(node: Node | None) -> str | None:
    """Why a training node counts as failed, or None. A drain by anyone counts: the node must go."""
    if node is None:
        return "node vanished from Slurm"
    if not node.responding:
        return "node not responding"
    if node.state == "down":
        return f"node down ({node.reason or 'no reason'})"
    if node.drained:
        return f"drained ({node.reason or 'no reason'})"
    return None


def _not_responding(node: Node | None) -> bool:
    """Slurm's own verdict that the node stopped answering (the flag, or DOWN for 'Not responding')."""
    if node is None:
        return False
    return not node.responding or (node.state == "down" and "not responding" in node.reason.lower())


def _sh_quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
