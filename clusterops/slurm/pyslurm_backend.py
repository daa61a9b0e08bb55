"""Optional pyslurm backend, for sites whose Slurm matches the pyslurm on PyPI (25.11).

Reads go through pyslurm's API (no fork per query); writes stay on scontrol, whose behaviour is the
same on every Slurm version. Debian 12's Slurm 22.05 cannot build pyslurm 25.11, so this backend is
not exercised by the test suite here: `unusable_reason` keeps it off unless the versions match.
"""

from __future__ import annotations

from typing import Any

from clusterops.slurm import hostlist
from clusterops.slurm.command import CommandBackend
from clusterops.slurm.records import Job, Node, Reservation


def unusable_reason(cmd: CommandBackend) -> str | None:
    """None when pyslurm imports and its Slurm major.minor matches the installed Slurm's."""
    try:
        import pyslurm  # type: ignore[import-not-found]
    except Exception as e:  # ImportError, or a libslurm load failure inside the extension
        return f"pyslurm does not import ({type(e).__name__}: {e})"
    theirs = ".".join(str(getattr(pyslurm, "__version__", "")).split(".")[:2])
    try:
        ours = ".".join(cmd.scontrol("--version").split()[-1].split(".")[:2])
    except Exception as e:
        return f"cannot read the Slurm version ({e})"
    if theirs != ours:
        return f"pyslurm {theirs} does not match Slurm {ours}"
    return None


class PyslurmBackend:
    name = "pyslurm"

    def __init__(self, cmd: CommandBackend) -> None:
        import pyslurm  # type: ignore[import-not-found]

        self._pyslurm = pyslurm
        self.cmd = cmd

    def nodes(self) -> list[Node]:
        out = []
        for name, n in self._pyslurm.Nodes.load().items():
            state, *flags = str(_attr(n, "state", "UNKNOWN")).split("+")
            out.append(
                Node(
                    name=name,
                    state=state.lower(),
                    flags=[f.upper() for f in flags],
                    reason=_attr(n, "reason", "") or "",
                    partitions=list(_attr(n, "partitions", []) or []),
                    features=list(_attr(n, "active_features", []) or []),
                    address=_attr(n, "address", "") or "",
                    cpus=int(_attr(n, "total_cpus", 0) or 0),
                )
            )
        return out

    def jobs(self) -> list[Job]:
        out = []
        for job_id, j in self._pyslurm.Jobs.load().items():
            nodes = _attr(j, "nodes", "") or ""
            out.append(
                Job(
                    job_id=int(job_id),
                    name=_attr(j, "name", "") or "",
                    state=str(_attr(j, "state", "UNKNOWN")).upper(),
                    nodes=hostlist.expand(nodes) if nodes else [],
                    reason=_attr(j, "state_reason", "") or "",
                    restart_count=int(_attr(j, "requeue_count", 0) or 0),
                    partition=_attr(j, "partition", "") or "",
                    reservation=_attr(j, "reservation", "") or "",
                    user=_attr(j, "user_name", "") or "",
                    node_count=int(_attr(j, "num_nodes", 0) or 0),
                )
            )
        return out

    def reservations(self) -> list[Reservation]:
        return self.cmd.reservations()

    def scontrol(self, *args: str) -> str:
        return self.cmd.scontrol(*args)


def _attr(obj: Any, name: str, default: Any) -> Any:
    return getattr(obj, name, default)
