"""The files a sandbox writes: slurm.conf, the clusterops config, and the hook wrappers Slurm runs."""

from __future__ import annotations

import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from clusterops import config as config_mod
from clusterops.fsutil import atomic_write_text

BUCKET = "clusterops"
S3_KEY = "testing"  # dummy credentials: moto accepts any


@dataclass
class Layout:
    """Where everything of a sandbox lives under its root."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def clusterops_conf(self) -> Path:
        return self.etc / "clusterops.toml"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def slurm_bin(self) -> Path:
        """Wrappers for the sandbox's own Slurm commands (first on the exported PATH)."""
        return self.bin / "slurm"

    @property
    def hosts(self) -> Path:
        """/etc/hosts as the sandbox's Slurm 24.11 namespace sees it: node and controller names."""
        return self.etc / "hosts"

    @property
    def nsswitch(self) -> Path:
        return self.etc / "nsswitch.conf"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def ctld(self) -> Path:
        return self.root / "ctld"

    @property
    def munge(self) -> Path:
        return self.root / "munge"

    @property
    def s3(self) -> Path:
        return self.root / "s3"

    @property
    def nodes(self) -> Path:
        return self.root / "nodes"

    def node(self, name: str) -> Path:
        return self.nodes / name

    # Everything `down` removes; nothing else under root is ours.
    @property
    def owned(self) -> list[Path]:
        return [self.state_file, self.etc, self.bin, self.ctld, self.munge, self.s3, self.nodes, self.run]


@dataclass
class NodeSpec:
    name: str
    addr: str
    port: int
    cpus: int
    memory_mb: int


def slurm_conf(
    layout: Layout,
    ctld_addr: str,
    ctld_port: int,
    nodes: list[NodeSpec],
    slurmd_timeout: int,
    message_timeout: int,
    ports_mode: bool,
    slurm: str = "22.05",
) -> str:
    r = layout.root
    lines = [
        "# Written by `clusterops sandbox up`; removed by `clusterops sandbox down`.",
        "ClusterName=sandbox",
        # slurmctld only runs where the first name matches this host's own short hostname.
        f"SlurmctldHost={socket.gethostname().split('.')[0]}({ctld_addr})",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={layout.munge / 'munge.socket'}",
        f"StateSaveLocation={layout.ctld / 'state'}",
        f"SlurmctldPidFile={layout.ctld / 'slurmctld.pid'}",
        f"SlurmctldLogFile={layout.ctld / 'slurmctld.log'}",
        f"SlurmdSpoolDir={r}/nodes/%n/spool",
        f"SlurmdPidFile={r}/nodes/%n/slurmd.pid",
        f"SlurmdLogFile={r}/nodes/%n/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        # 23.02+ dropped the switch/none plugin (no SwitchType means none); 22.05 still names it.
        *(["SwitchType=switch/none"] if slurm == "22.05" else []),
        "SlurmdParameters=config_overrides",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "ReturnToService=2",
        f"SlurmdTimeout={slurmd_timeout}",
        f"MessageTimeout={message_timeout}",
        "InactiveLimit=0",
        "KillWait=5",
        "MinJobAge=300",
        "JobRequeue=1",
        f"Prolog={layout.bin / 'prolog'}",
        f"Epilog={layout.bin / 'epilog'}",
        "PrologFlags=Alloc",
        f"HealthCheckProgram={layout.bin / 'healthcheck'}",
        "HealthCheckInterval=30",
        "HealthCheckNodeState=ANY",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    for n in nodes:
        port = f" Port={n.port}" if ports_mode else ""
        lines.append(
            f"NodeName={n.name} NodeHostname={n.name} NodeAddr={n.addr}{port} "
            f"CPUs={n.cpus} RealMemory={n.memory_mb} State=UNKNOWN"
        )
    lines.append("PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO")
    return "\n".join(lines) + "\n"


def cgroup_conf() -> str:
    # No systemd and no cgroup delegation here: Slurm 23.02+ needs this said, or slurmd will not start.
    return "# Written by `clusterops sandbox up`.\nCgroupPlugin=disabled\n"


def hosts_file(ctld_name: str, ctld_addr: str, nodes: list[NodeSpec], ports_mode: bool) -> str:
    """The host's /etc/hosts plus every node's and the controller's name: Slurm 24.11 resolves them
    (without it every command retries getaddrinfo and gives up)."""
    try:
        base = Path("/etc/hosts").read_text()
    except OSError:
        base = "127.0.0.1 localhost\n"
    lines = [base.rstrip("\n"), "# clusterops sandbox"]
    if ports_mode:
        lines.append("127.0.0.1 " + " ".join(n.name for n in nodes))
    else:
        lines += [f"{n.addr} {n.name}" for n in nodes]
    # Every address the sandbox uses has a name here: slurmctld 24.11 looks up the name of each peer
    # that connects (the host reaches it from the bridge address), and an address missing here went to
    # DNS and stalled that RPC ~5 s (and would leave the machine).
    names = ["sandbox-ctld"] if ctld_name in base.split() else [ctld_name, "sandbox-ctld"]
    lines.append(" ".join([ctld_addr, *names]))
    return "\n".join(lines) + "\n"


def nsswitch_conf() -> str:
    """The host's nsswitch.conf with host names from files only: nothing in the sandbox's Slurm
    namespace asks DNS (which is off this machine)."""
    try:
        base = Path("/etc/nsswitch.conf").read_text()
    except OSError:
        base = "passwd: files\ngroup: files\nshadow: files\n"
    kept = [ln for ln in base.splitlines() if not ln.strip().startswith("hosts:")]
    return "\n".join(["# Written by `clusterops sandbox up`.", *kept, "hosts: files"]) + "\n"


def clusterops_conf(layout: Layout, endpoint_url: str) -> config_mod.Config:
    cfg = config_mod.Config()
    cfg.cluster.name = "sandbox"
    cfg.cluster.profile = "sandbox"
    node_dir = f"{layout.nodes}/{{node}}"
    cfg.paths.state_dir = f"{node_dir}/state"
    cfg.paths.local_root = f"{node_dir}/nvme"
    cfg.paths.log_dir = f"{node_dir}/log"
    cfg.paths.textfile_dir = f"{node_dir}/textfile"
    cfg.slurm.conf = str(layout.slurm_conf)
    cfg.slurm.bin_dir = str(layout.slurm_bin)
    cfg.s3.endpoint_url = endpoint_url
    cfg.s3.bucket = BUCKET
    cfg.s3.access_key_id = S3_KEY
    cfg.s3.secret_access_key = S3_KEY
    cfg.checkpoint.local_root = f"{node_dir}/nvme/checkpoints"
    return cfg


def write_hooks(layout: Layout) -> None:
    """Prolog, epilog and health-check wrappers. Slurm gives the health check almost no environment,
    so each wrapper names the config and the interpreter itself."""
    for hook in ("prolog", "epilog", "healthcheck"):
        script = (
            "#!/bin/sh\n"
            f"export CLUSTEROPS_CONFIG={shlex.quote(str(layout.clusterops_conf))}\n"
            f"export SLURM_CONF={shlex.quote(str(layout.slurm_conf))}\n"
            f"exec {shlex.quote(sys.executable)} -m clusterops hook {hook}\n"
        )
        atomic_write_text(layout.bin / hook, script, mode=0o755)
