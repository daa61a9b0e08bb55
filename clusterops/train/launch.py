"""Who am I in the job: rank, world size and rendezvous from torchrun's variables or from srun's SLURM_*.

Under srun every task is a rank (no torchrun in between). The rendezvous host is the first node of the
step, resolved to its NodeAddr through Slurm itself (`scontrol show node NAME -o`): cluster node names
are often absent from DNS, and Slurm's own record is the address slurmd listens on. Gloo also needs to
know which interface to use when the hostname does not resolve, so GLOO_SOCKET_IFNAME is set to the
interface that holds this node's address unless the operator set it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from clusterops import proc
from clusterops.errors import UsageError
from clusterops.slurm.hostlist import expand


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # torchrun | srun | single
    node: str = ""
    node_addr: str = ""


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise UsageError(f"environment variable {name}={env.get(name)!r}: expected an integer") from None


def node_addr(name: str, env: Mapping[str, str] | None = None, timeout: float = 10.0) -> str:
    """A node's address as Slurm knows it (NodeAddr), falling back to name resolution."""
    try:
        out = proc.run(["scontrol", "show", "node", name, "-o"], timeout=timeout, env=env, check=False)
    except proc.CommandError:
        out = None
    if out is not None and out.returncode == 0:
        m = re.search(r"\bNodeAddr=(\S+)", out.stdout)
        if m:
            return m.group(1)
    try:
        return socket.gethostbyname(name)
    except OSError:
        raise UsageError(
            f"node {name}: neither `scontrol show node` nor DNS gives its address; set MASTER_ADDR"
        ) from None


def port_for_job(job_id: int) -> int:
    """A rendezvous port per job, below the Linux ephemeral range; a requeued job keeps its port."""
    return 15000 + job_id % 15000


def from_environ(env: Mapping[str, str] | None = None) -> LaunchEnv:
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=_int(env, "RANK"),
            world=_int(env, "WORLD_SIZE"),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:  # inside an srun step, not the batch script
        world = _int(env, "SLURM_STEP_NUM_TASKS")
        nodes = expand(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
        if not nodes:
            raise UsageError("srun step without SLURM_STEP_NODELIST / SLURM_JOB_NODELIST")
        me = env.get("SLURMD_NODENAME", "")
        master = env.get("MASTER_ADDR") or (node_addr(nodes[0], env) if world > 1 else "127.0.0.1")
        return LaunchEnv(
            rank=_int(env, "SLURM_PROCID"),
            world=world,
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=master,
            master_port=int(env.get("MASTER_PORT") or port_for_job(int(env.get("SLURM_JOB_ID", "0")))),
            source="srun",
            node=me,
            node_addr=node_addr(me, env) if (me and world > 1) else "",
        )
    return LaunchEnv(0, 1, 0, "127.0.0.1", 29500, "single")


def interface_for(addr: str) -> str | None:
    """The network interface holding `addr` on this host, if any."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == addr for a in addrs):
            return name
    return None


def export(le: LaunchEnv, env: MutableMapping[str, str] | None = None) -> None:
    """Set the variables torch.distributed's env:// rendezvous and gloo read."""
    env = os.environ if env is None else env
    env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(le.rank), str(le.world), str(le.local_rank)
    env["MASTER_ADDR"], env["MASTER_PORT"] = le.master_addr, str(le.master_port)
    if le.world > 1 and "GLOO_SOCKET_IFNAME" not in env:
        iface = interface_for(le.node_addr or le.master_addr)
        if iface:
            env["GLOO_SOCKET_IFNAME"] = iface
