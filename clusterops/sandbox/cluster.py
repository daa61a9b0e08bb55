"""A real Slurm cluster on one machine: munged, slurmctld, N slurmd and an S3 endpoint (moto's server).

Each slurmd runs in its own network and UTS namespace (hostname nodeK, its own address on a bridge),
so a node can crash as a whole and a link can be cut; where namespaces are not allowed, the nodes share
the host's network on distinct ports. Every process started is recorded by pid in ROOT/sandbox.json,
and `down` stops exactly those and removes exactly what `up` created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from clusterops import config as config_mod
from clusterops import proc
from clusterops.errors import ClusteropsError, UsageError
from clusterops.fsutil import atomic_write_json, atomic_write_text
from clusterops.sandbox import net, sysroot
from clusterops.sandbox.files import (
    S3_KEY,
    Layout,
    NodeSpec,
    cgroup_conf,
    clusterops_conf,
    hosts_file,
    nsswitch_conf,
    slurm_conf,
    write_hooks,
)

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
# The host's own packages (Debian 12), or Slurm 24.11 from the Debian 13 root (sysroot.py).
VERSIONS = ("24.11", "22.05")
CTLD_SETTLE_S = 7.0  # see Sandbox._settle
DEFAULT_VERSION = "24.11"


class SandboxError(ClusteropsError):
    pass


@dataclass
class NodeState:
    name: str
    index: int
    addr: str
    port: int
    pid: int = 0
    netns: str = ""


@dataclass
class State:
    root: str
    mode: str  # netns | ports
    ctld_addr: str
    ctld_port: int
    s3_port: int
    bridge: str = ""
    munged_pid: int = 0
    slurmctld_pid: int = 0
    s3_pid: int = 0
    nodes: list[NodeState] = field(default_factory=list)
    # Slurm pings every SlurmdTimeout/3 s (whole seconds) and DOWNs a node not heard from for
    # SlurmdTimeout: at 2, Slurm 24.11 DOWNed nodes at start and on a loaded 2-core machine mid-job
    # (NODE_FAIL, job killed). At 10 a killed slurmd is still seen within about 3-6 s.
    slurmd_timeout: int = 10
    message_timeout: int = 5
    slurm: str = "22.05"  # 22.05: the host's packages; 24.11: the Debian 13 root below
    sysroot: str = ""
    holder_pid: int = 0  # the process holding the 24.11 mount namespace

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.ctld_addr}:{self.s3_port}"

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise SandboxError(
                f"{path}: unreadable sandbox state ({e}); remove it after `ip netns list` check"
            ) from None
        raw["nodes"] = [NodeState(**n) for n in raw.get("nodes", [])]
        return cls(**raw)


def _alive(pid: int, needle: str) -> bool:
    """The pid is running and its command line still names `needle` (guards against pid reuse)."""
    if pid <= 0:
        return False
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and needle in " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _kill(pid: int, needle: str, grace: float = 5.0) -> None:
    if not _alive(pid, needle):
        return
    try:
        p = psutil.Process(pid)
        p.terminate()
        p.wait(timeout=grace)
    except psutil.TimeoutExpired:
        p.kill()
        p.wait(timeout=grace)
    except psutil.NoSuchProcess:
        pass


def _free_port(addr: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None, user: str | None = None) -> int:
    """Start a long-lived process detached from us (own session), output to `log`; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    return p.pid


class Sandbox:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.layout = Layout(self.root)
        self.plan = net.Plan.for_root(self.root)

    # ---------------------------------------------------------------- public
    def up(
        self,
        nodes: int = 4,
        mode: str = "auto",
        cpus: int = 2,
        memory_mb: int = 2048,
        timeout: float = 60.0,
        progress=None,
        slurm: str = "",
        sysroot_path: str | os.PathLike[str] = "",
    ) -> State:
        """Bring the sandbox up, or complete it if some of it is already up. Idempotent.

        `slurm` empty: the version of the sandbox already in `root`, else 24.11."""
        say = progress or (lambda msg: None)
        state = State.load(self.layout.state_file)
        slurm = slurm or (state.slurm if state else DEFAULT_VERSION)
        if slurm not in VERSIONS:
            raise UsageError(f"--slurm {slurm}: must be one of {', '.join(VERSIONS)}")
        if not 1 <= nodes <= 64:
            raise UsageError(f"--nodes {nodes}: must be between 1 and 64")
        if state is not None and len(state.nodes) != nodes:
            raise UsageError(
                f"{self.root} already holds a {len(state.nodes)}-node sandbox; "
                "`clusterops sandbox down` it first to change the node count"
            )
        if state is not None and state.slurm != slurm:
            raise UsageError(
                f"{self.root} already holds a Slurm {state.slurm} sandbox; "
                f"`clusterops sandbox down` it first to run Slurm {slurm}"
            )
        root = sysroot.Sysroot(Path(sysroot_path or (state.sysroot if state else "") or sysroot.DEFAULT_ROOT))
        self._preflight(slurm, root)
        fresh = state is None
        if state is None:
            state = self._new_state(nodes, mode, cpus, memory_mb, slurm, root)
            say(f"sandbox: new {nodes}-node Slurm {slurm} cluster in {self.root} ({state.mode} mode)")
        self._save(state)
        self._start_holder(state)
        self._start_munged(state)
        if state.mode == "netns":
            net.ensure_bridge(self.plan)
        self._start_s3(state)
        self._start_slurmctld(state)
        for node in state.nodes:
            self._start_node(state, node)
        self._save(state)
        say("sandbox: waiting for every node to be idle")
        # A new cluster's nodes must come up idle and clean; on one already in use, reservations,
        # drains and jobs are its users' business: every node registered and responding is enough.
        self.wait_idle(state, timeout, clean=fresh)
        if state.slurm != "22.05":
            self._settle(state, timeout)
        return state

    def _settle(self, state: State, timeout: float) -> None:
        """Slurm 24.11's first ping rounds after slurmctld starts can mark nodes that registered moments
        before as not responding (seen 1 start in 4 here, ~4.4 s after start, with SlurmdTimeout 2 and 3),
        DOWN for a few milliseconds: long enough to requeue a job that had just started. Hand the
        cluster over only once that window has passed and every node is idle again. (SlurmdTimeout 10,
        the default now, leaves a registration seconds more; this wait stays as the second guard.)"""
        try:
            started = psutil.Process(state.slurmctld_pid).create_time()
        except psutil.NoSuchProcess:
            return
        left = CTLD_SETTLE_S - (time.time() - started)
        if left > 0:
            time.sleep(left)
            self.wait_idle(state, timeout, clean=False)

    def state(self) -> State:
        state = State.load(self.layout.state_file)
        if state is None:
            raise SandboxError(f"no sandbox in {self.root} (run `clusterops sandbox up --root {self.root}`)")
        return state

    def exports(self, state: State) -> dict[str, str]:
        bin_dir = str(self.layout.slurm_bin)
        path = [p for p in os.environ.get("PATH", os.defpath).split(":") if p and p != bin_dir]
        return {
            # The sandbox's own Slurm commands first, so sinfo and scontrol talk to its controller.
            "PATH": ":".join([bin_dir, *path]),
            "SLURM_CONF": str(self.layout.slurm_conf),
            "CLUSTEROPS_CONFIG": str(self.layout.clusterops_conf),
            "CLUSTEROPS_SLURM__BIN_DIR": bin_dir,
            "AWS_ENDPOINT_URL": state.endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def status(self) -> dict[str, Any]:
        state = self.state()
        slurm_view: dict[str, Any] = {}
        try:
            slurm_view = {n.name: n for n in self._client().nodes()}
        except ClusteropsError as e:
            slurm_error = str(e)
        else:
            slurm_error = ""
        nodes = []
        for n in state.nodes:
            seen = slurm_view.get(n.name)
            nodes.append(
                {
                    "name": n.name,
                    "addr": n.addr,
                    "slurmd_pid": n.pid,
                    "slurmd_running": _alive(n.pid, "slurmd"),
                    "link_up": net.link_up(self.plan, n.index) if state.mode == "netns" else True,
                    "slurm_state": seen.label if seen else None,
                    "reason": seen.reason if seen else None,
                    "local_root": str(self.layout.node(n.name) / "nvme"),
                }
            )
        return {
            "root": str(self.root),
            "mode": state.mode,
            "slurm_version": self.slurm_version(),
            "slurm_runtime": (
                f"Debian 13 root {state.sysroot}, mount namespace of pid {state.holder_pid}"
                if state.slurm != "22.05"
                else "host packages"
            ),
            "slurmctld": {"pid": state.slurmctld_pid, "running": _alive(state.slurmctld_pid, "slurmctld")},
            "munged": {"pid": state.munged_pid, "running": _alive(state.munged_pid, "munged")},
            "namespace": {
                "pid": state.holder_pid,
                "running": state.slurm == "22.05" or sysroot.in_namespace(state.holder_pid),
            },
            "s3": {
                "pid": state.s3_pid,
                "running": _alive(state.s3_pid, "moto"),
                "endpoint_url": state.endpoint_url,
            },
            "slurm_error": slurm_error,
            "nodes": nodes,
            "exports": self.exports(state),
        }

    def down(self, progress=None) -> list[str]:
        """Stop every process this sandbox started (by pid) and remove what it created."""
        say = progress or (lambda msg: None)
        state = State.load(self.layout.state_file)
        stopped: list[str] = []
        if state is not None:
            for node in state.nodes:
                stopped += self._stop_node(state, node)
            for pid, needle in (
                (state.slurmctld_pid, "slurmctld"),
                (state.s3_pid, "moto"),
                (state.munged_pid, "munged"),
                (state.holder_pid, "sleep"),
            ):
                if _alive(pid, needle):
                    _kill(pid, needle)
                    stopped.append(f"{needle}[{pid}]")
            if state.mode == "netns":
                for node in state.nodes:
                    net.delete_node(self.plan, node.index)
                net.delete_bridge(self.plan)
        mounted = sysroot.mounts_under(self.root)
        if mounted:
            # Nothing of ours mounts on the host; whatever this is, deleting through it is not ours to do.
            raise SandboxError(
                f"processes stopped, but {self.root} has mounts below it ({', '.join(mounted[:5])}); "
                "unmount them, then run `sandbox down` again"
            )
        for path in self.layout.owned:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        try:
            self.root.rmdir()  # only if nothing of the user's is left in it
        except OSError:
            pass
        say(f"sandbox: stopped {len(stopped)} processes, removed {self.root}")
        return stopped

    def kill_node(self, name: str) -> list[int]:
        """Crash a node: SIGKILL slurmd and every process of its jobs, as a power loss would."""
        state = self.state()
        node = self._node(state, name)
        victims = self._node_pids(state, node)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.pid = 0
        self._save(state)
        return victims

    def partition(self, name: str) -> None:
        state = self.state()
        node = self._node(state, name)
        if state.mode != "netns":
            raise SandboxError("partition needs network namespaces; this sandbox runs in ports mode")
        net.set_link(self.plan, node.index, up=False)

    def revive_node(self, name: str, timeout: float = 60.0) -> None:
        """Undo kill-node or partition: link up, slurmd started again, node registered and responding."""
        state = self.state()
        node = self._node(state, name)
        if state.mode == "netns":
            net.ensure_node(self.plan, node.index)
            net.set_link(self.plan, node.index, up=True)
        self._start_node(state, node)
        self._save(state)
        client = self._client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = client.node(name)
            if n.state == "down" and "DRAIN" not in n.flags and "NOT_RESPONDING" not in n.flags:
                # DOWN after a crash with a reason Slurm set: resume it, as an operator would.
                client.resume(name)
            # Back means registered and responding; a drain is an operator's decision and stays.
            if n.responding and n.state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise SandboxError(
            f"{name}: not back in service within {timeout:g}s (see {self.layout.node(name)}/slurmd.log)"
        )

    def wait_idle(self, state: State, timeout: float, clean: bool = True) -> None:
        """Every node registered and responding; with `clean`, also idle with no flag at all."""
        client = self._client()
        deadline = time.monotonic() + timeout
        last = "no answer from slurmctld yet"
        while time.monotonic() < deadline:
            try:
                seen = {n.name: n for n in client.nodes()}
            except ClusteropsError as e:
                last = str(e)
            else:
                waiting = [
                    f"{n.name}={seen[n.name].label}" if n.name in seen else f"{n.name}=missing"
                    for n in state.nodes
                    if n.name not in seen or not _ready(seen[n.name], clean)
                ]
                if not waiting:
                    return
                last = ", ".join(waiting)
            time.sleep(0.25)
        # A daemon that died says why in its own words; a timeout alone says nothing.
        dead = []
        if not _alive(state.slurmctld_pid, "slurmctld"):
            ctld = self.layout.ctld
            dead.append(f"slurmctld exited: {_why(ctld / 'slurmctld.out', ctld / 'slurmctld.log')}")
        for n in state.nodes:
            if not _alive(n.pid, "slurmd"):
                d = self.layout.node(n.name)
                dead.append(f"{n.name}'s slurmd exited: {_why(d / 'slurmd.out', d / 'slurmd.log')}")
        if dead:
            raise SandboxError("; ".join(dead))
        raise SandboxError(f"nodes not idle after {timeout:g}s: {last} (logs under {self.layout.nodes})")

    # ---------------------------------------------------------------- internals
    def _client(self):
        from clusterops.slurm import SlurmClient

        return SlurmClient(
            self.layout.slurm_conf, timeout=10, backend="command", bin_dir=self.layout.slurm_bin
        )

    def client(self, timeout: float = 15.0):
        """A SlurmClient for this sandbox's controller, running the sandbox's own Slurm commands."""
        from clusterops.slurm import SlurmClient

        return SlurmClient(self.layout.slurm_conf, timeout=timeout, bin_dir=self.layout.slurm_bin)

    def slurm_version(self) -> str:
        """The release the sandbox's Slurm commands report (`sinfo -V`), measured now."""
        try:
            out = proc.run([str(self.layout.slurm_bin / "sinfo"), "-V"], timeout=10, env=self._daemon_env())
        except proc.CommandError as e:
            return f"unknown ({e})"
        return out.stdout.strip().split()[-1] if out.stdout.strip() else "unknown"

    def _preflight(self, slurm: str, root: sysroot.Sysroot) -> None:
        if os.geteuid() != 0:
            raise UsageError("sandbox up must run as root (it starts slurmd and creates network namespaces)")
        if slurm == "22.05":
            missing = [p for p in (MUNGED, SLURMCTLD, SLURMD) if not Path(p).exists()]
            if missing:
                raise UsageError(
                    f"{', '.join(missing)} not found: install slurm-wlm and munge (`make install`)"
                )
            return
        root.require()
        if not root.slurm_version().startswith(slurm):
            raise UsageError(f"{root.path} holds Slurm {root.slurm_version()}, not {slurm}")
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                raise UsageError(f"{tool} not found: install util-linux")

    def _new_state(
        self, nodes: int, mode: str, cpus: int, memory_mb: int, slurm: str, root: sysroot.Sysroot
    ) -> State:
        if mode not in ("auto", "netns", "ports"):
            raise UsageError(f"--mode {mode}: must be auto, netns or ports")
        if mode == "auto":
            mode = "netns" if net.available() else "ports"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged (user munge) must reach its socket directory
        ctld_addr = self.plan.host_addr if mode == "netns" else "127.0.0.1"
        if mode == "netns":
            net.ensure_bridge(self.plan)
        node_states = []
        for i in range(1, nodes + 1):
            if mode == "netns":
                node_states.append(
                    NodeState(f"node{i}", i, self.plan.node_addr(i), 6818, netns=self.plan.netns(i))
                )
            else:
                node_states.append(NodeState(f"node{i}", i, "127.0.0.1", _free_port("127.0.0.1")))
        state = State(
            root=str(self.root),
            mode=mode,
            ctld_addr=ctld_addr,
            ctld_port=_free_port(ctld_addr),
            s3_port=_free_port(ctld_addr),
            bridge=self.plan.bridge if mode == "netns" else "",
            nodes=node_states,
            slurm=slurm,
            sysroot=str(root.path) if slurm != "22.05" else "",
        )
        specs = [NodeSpec(n.name, n.addr, n.port, cpus, memory_mb) for n in node_states]
        for sub in (self.layout.etc, self.layout.ctld / "state", self.layout.s3):
            sub.mkdir(parents=True, exist_ok=True)
        for n in node_states:
            for sub in ("spool", "nvme", "state", "log", "textfile"):
                (self.layout.node(n.name) / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.layout.slurm_conf,
            slurm_conf(
                self.layout,
                ctld_addr,
                state.ctld_port,
                specs,
                state.slurmd_timeout,
                state.message_timeout,
                mode == "ports",
                slurm,
            ),
        )
        if slurm != "22.05":
            atomic_write_text(self.layout.etc / "cgroup.conf", cgroup_conf())
            atomic_write_text(self.layout.nsswitch, nsswitch_conf())
        atomic_write_text(
            self.layout.hosts,
            hosts_file(socket.gethostname().split(".")[0], ctld_addr, specs, mode == "ports"),
        )
        cfg = clusterops_conf(self.layout, state.endpoint_url)
        atomic_write_text(self.layout.clusterops_conf, config_mod.dumps_toml(cfg), mode=0o600)
        write_hooks(self.layout)
        return state

    def _save(self, state: State) -> None:
        atomic_write_json(self.layout.state_file, asdict(state))

    def _daemon_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "AWS_"))}
        env["SLURM_CONF"] = str(self.layout.slurm_conf)
        env["CLUSTEROPS_CONFIG"] = str(self.layout.clusterops_conf)
        return env

    def _start_munged(self, state: State) -> None:
        if _alive(state.munged_pid, "munged"):
            return
        d = self.layout.munge
        d.mkdir(parents=True, exist_ok=True)
        key = d / "munge.key"
        if not key.exists():
            atomic_write_text(key, os.urandom(64).hex(), mode=0o400)
        shutil.chown(d, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        os.chmod(d, 0o755)  # munged insists the socket directory be searchable by all
        socket_path = d / "munge.socket"
        for stale in (socket_path, Path(f"{socket_path}.lock")):
            stale.unlink(missing_ok=True)
        state.munged_pid = self._spawn_slurm(
            state,
            [
                MUNGED,
                "--foreground",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={d / 'munged.pid'}",
                f"--log-file={d / 'munged.log'}",
                f"--seed-file={d / 'munged.seed'}",
                "--origin=127.0.0.1",
            ],
            d / "munged.out",
            user="munge",
        )
        self._save(state)
        self._wait_path(socket_path, 10, "munged socket", state.munged_pid, "munged", d / "munged.out")

    def _start_s3(self, state: State) -> None:
        if _alive(state.s3_pid, "moto"):
            return
        env = self._daemon_env()
        env["TMPDIR"] = str(self.layout.s3)
        state.s3_pid = _spawn(
            [sys.executable, "-m", "moto.server", "-H", state.ctld_addr, "-p", str(state.s3_port)],
            self.layout.s3 / "moto.log",
            env,
        )
        self._save(state)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{state.endpoint_url}/moto-api/", timeout=2):
                    break
            except OSError:
                if not _alive(state.s3_pid, "moto"):
                    raise SandboxError(
                        f"S3 endpoint exited at start (see {self.layout.s3 / 'moto.log'})"
                    ) from None
                time.sleep(0.2)
        else:
            raise SandboxError(f"S3 endpoint not answering on {state.endpoint_url} after 30s")
        self._ensure_bucket(state)

    def _ensure_bucket(self, state: State) -> None:
        from clusterops.sandbox.files import BUCKET

        # A bucket PUT is one unsigned-body request that moto accepts; no boto3 import needed here.
        req = urllib.request.Request(f"{state.endpoint_url}/{BUCKET}", method="PUT")
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except urllib.error.HTTPError as e:
            if e.code != 409:  # BucketAlreadyOwnedByYou
                raise SandboxError(f"cannot create bucket {BUCKET}: HTTP {e.code}") from None

    def _start_slurmctld(self, state: State) -> None:
        if _alive(state.slurmctld_pid, "slurmctld"):
            return
        state.slurmctld_pid = self._spawn_slurm(
            state,
            [SLURMCTLD, "-D", "-i", "-f", str(self.layout.slurm_conf)],
            self.layout.ctld / "slurmctld.out",
            self._daemon_env(),
        )
        self._save(state)

    def _start_node(self, state: State, node: NodeState) -> None:
        if _alive(node.pid, "slurmd"):
            return
        log = self.layout.node(node.name) / "slurmd.out"
        argv = [SLURMD, "-D", "-N", node.name, "-f", str(self.layout.slurm_conf)]
        if state.mode == "netns":
            net.ensure_node(self.plan, node.index)
            mount_ns = f"/proc/{state.holder_pid}/ns/mnt" if state.slurm != "22.05" else ""
            node.pid = _spawn(
                net.enter_argv(self.plan, node.index, node.name, argv, mount_ns), log, self._daemon_env()
            )
        else:
            node.pid = self._spawn_slurm(state, argv, log, self._daemon_env())
        self._save(state)

    def _stop_node(self, state: State, node: NodeState) -> list[str]:
        pids = self._node_pids(state, node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        psutil.wait_procs([p for p in map(_proc_or_none, pids) if p], timeout=5)
        return [f"{node.name}:{pid}" for pid in pids]

    def _node_pids(self, state: State, node: NodeState) -> list[int]:
        if state.mode == "netns":
            return net.pids_in(node.netns)
        # Ports mode: the node's slurmd, plus job processes (they carry SLURMD_NODENAME=node).
        pids = [node.pid] if _alive(node.pid, "slurmd") else []
        for p in psutil.process_iter(["pid", "name"]):
            try:
                if p.environ().get("SLURMD_NODENAME") == node.name and p.environ().get("SLURM_CONF") == str(
                    self.layout.slurm_conf
                ):
                    pids.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return sorted(set(pids))

    def _node(self, state: State, name: str) -> NodeState:
        for n in state.nodes:
            if n.name == name:
                return n
        raise UsageError(f"node {name!r}: not in this sandbox ({', '.join(n.name for n in state.nodes)})")

    def _start_holder(self, state: State) -> None:
        """Slurm 24.11: the process whose private mount namespace shows the Debian 13 root's /usr."""
        if state.slurm == "22.05":
            sysroot.write_wrappers(self.layout.slurm_bin, None)
            return
        if _alive(state.holder_pid, "sleep") and sysroot.in_namespace(state.holder_pid):
            sysroot.write_wrappers(self.layout.slurm_bin, state.holder_pid)
            return
        host_usr = self.layout.run / "host-usr"
        host_usr.mkdir(parents=True, exist_ok=True)
        argv = sysroot.holder_argv(
            sysroot.Sysroot(Path(state.sysroot)), self.layout.hosts, host_usr, self.layout.nsswitch
        )
        log = self.layout.run / "holder.out"
        state.holder_pid = _spawn(argv, log)
        self._save(state)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _alive(state.holder_pid, "sleep") and sysroot.in_namespace(state.holder_pid):
                break
            if not psutil.pid_exists(state.holder_pid) or _zombie(state.holder_pid):
                raise SandboxError(f"Slurm 24.11 namespace could not be set up: {_why(log)}")
            time.sleep(0.05)
        else:
            raise SandboxError(f"Slurm 24.11 namespace not ready within 10s (see {log})")
        sysroot.write_wrappers(self.layout.slurm_bin, state.holder_pid)

    def _spawn_slurm(
        self,
        state: State,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> int:
        """Start one of Slurm's (or munge's) daemons from the host's packages or inside the 24.11 root."""
        if state.slurm == "22.05":
            return _spawn(argv, log, env, user=user)
        return _spawn(sysroot.enter_argv(state.holder_pid, argv, user=user, wd="/"), log, env)

    @staticmethod
    def _wait_path(
        path: Path, timeout: float, what: str, pid: int = 0, needle: str = "", *logs: Path
    ) -> None:
        """Wait for a daemon's file; a daemon that died says why in its own words, not as a timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return
            if pid and _zombie(pid):  # gone (its cmdline may not name it yet right after the fork)
                why = _why(*logs)
                raise SandboxError(
                    f"{needle or what} exited at start: {why} (log: {', '.join(map(str, logs))})"
                )
            time.sleep(0.05)
        why = _why(*logs)
        raise SandboxError(
            f"{what} {path} did not appear within {timeout:g}s" + (f"; its log says: {why}" if why else "")
        )


def _ready(node, clean: bool) -> bool:
    if clean:
        return node.state == "idle" and not node.flags
    return node.responding and node.state in ("idle", "mixed", "allocated", "completing")


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _why(*logs: Path) -> str:
    """A daemon's own words for why it stopped: the last error or fatal line of its output or log
    (else the last line at all)."""
    last = ""
    for path in logs:
        try:
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        errors = [ln for ln in lines if re.search(r"\b(error|fatal)\b", ln, re.I)]
        if errors:
            return errors[-1][-300:]
        last = last or (lines[-1][-300:] if lines else "")
    return last or "it left no log line"


def _proc_or_none(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
