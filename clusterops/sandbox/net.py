"""Network and UTS namespaces for sandbox nodes: one bridge on the host, one veth per node.

Namespaces are entered with nsenter rather than `ip netns exec`, which remounts /sys and leaves
slurmd without its cgroup mount. Namespaces have no default route: traffic stays on the bridge.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from clusterops import proc

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class Plan:
    """Names and addresses for one sandbox, derived from its root so two sandboxes never collide."""

    tag: str  # short hex id, part of every interface and namespace name
    subnet: ipaddress.IPv4Network

    @classmethod
    def for_root(cls, root: Path) -> Plan:
        digest = hashlib.sha256(str(root.resolve()).encode()).digest()
        third = 1 + digest[0] % 250
        return cls(tag=digest[1:3].hex(), subnet=ipaddress.IPv4Network(f"10.213.{third}.0/24"))

    @property
    def bridge(self) -> str:
        return f"cob{self.tag}"

    @property
    def host_addr(self) -> str:
        return str(self.subnet.network_address + 1)

    def netns(self, index: int) -> str:
        return f"co{self.tag}-n{index}"

    def veth_host(self, index: int) -> str:
        return f"cov{self.tag}n{index}"

    def node_addr(self, index: int) -> str:
        return str(self.subnet.network_address + 10 + index)


def available() -> bool:
    """Whether this process may create namespaces and links (root with CAP_NET_ADMIN, iproute2 present)."""
    if os.geteuid() != 0:
        return False
    probe = f"coprobe{os.getpid() % 100000}"
    try:
        proc.run(["ip", "netns", "add", probe], timeout=10)
    except proc.CommandError:
        return False
    proc.run(["ip", "netns", "del", probe], timeout=10, check=False)
    return True


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def ensure_bridge(plan: Plan) -> None:
    if not link_exists(plan.bridge):
        proc.run(["ip", "link", "add", plan.bridge, "type", "bridge"], timeout=10)
    addr = f"{plan.host_addr}/{plan.subnet.prefixlen}"
    shown = proc.run(["ip", "-o", "addr", "show", "dev", plan.bridge], timeout=10).stdout
    if addr not in shown:
        proc.run(["ip", "addr", "add", addr, "dev", plan.bridge], timeout=10)
    proc.run(["ip", "link", "set", plan.bridge, "up"], timeout=10)


def ensure_node(plan: Plan, index: int) -> None:
    """Create (or complete) node `index`'s namespace, veth pair and address. Idempotent."""
    ns, host_if = plan.netns(index), plan.veth_host(index)
    if not netns_exists(ns):
        proc.run(["ip", "netns", "add", ns], timeout=10)
    if not link_exists(host_if):
        proc.run(
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns], timeout=10
        )
    proc.run(["ip", "link", "set", host_if, "master", plan.bridge], timeout=10)
    proc.run(["ip", "link", "set", host_if, "up"], timeout=10)
    addr = f"{plan.node_addr(index)}/{plan.subnet.prefixlen}"
    shown = proc.run(["ip", "-n", ns, "-o", "addr", "show", "dev", "eth0"], timeout=10).stdout
    if addr not in shown:
        proc.run(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"], timeout=10)
    proc.run(["ip", "-n", ns, "link", "set", "eth0", "up"], timeout=10)
    proc.run(["ip", "-n", ns, "link", "set", "lo", "up"], timeout=10)


def set_link(plan: Plan, index: int, up: bool) -> None:
    """Cut or restore a node's only link: a real partition, seen by Slurm as a silent node."""
    proc.run(["ip", "link", "set", plan.veth_host(index), "up" if up else "down"], timeout=10)


def link_up(plan: Plan, index: int) -> bool:
    try:
        return Path("/sys/class/net", plan.veth_host(index), "operstate").read_text().strip() != "down"
    except OSError:
        return False


def pids_in(ns: str) -> list[int]:
    if not netns_exists(ns):
        return []
    out = proc.run(["ip", "netns", "pids", ns], timeout=10, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete_node(plan: Plan, index: int) -> None:
    if link_exists(plan.veth_host(index)):
        proc.run(["ip", "link", "del", plan.veth_host(index)], timeout=10, check=False)
    if netns_exists(plan.netns(index)):
        proc.run(["ip", "netns", "del", plan.netns(index)], timeout=10, check=False)


def delete_bridge(plan: Plan) -> None:
    if link_exists(plan.bridge):
        proc.run(["ip", "link", "del", plan.bridge], timeout=10, check=False)


def enter_argv(plan: Plan, index: int, hostname: str, argv: list[str], mount_ns: str = "") -> list[str]:
    """argv that runs `argv` inside node `index`'s network namespace with its own hostname (and, for
    Slurm 24.11, inside the mount namespace that holds its root: `mount_ns` is a /proc/PID/ns/mnt).

    nsenter and unshare exec in place, so the pid of this command is the pid of `argv` itself.
    """
    return [
        "nsenter",
        f"--net={NETNS_DIR / plan.netns(index)}",
        *([f"--mount={mount_ns}"] if mount_ns else []),
        "--",
        "unshare",
        "--uts",
        "--",
        "sh",
        "-c",
        'hostname "$0" && exec "$@"',
        hostname,
        *argv,
    ]
