"""RAID 0 over the instance-store NVMe drives: plan, apply (through a command runner), status.

The plan is a list of steps (commands and file lines) computed from what the machine shows: sysfs,
/proc/mdstat, the mount table, /etc/fstab and mdadm.conf. `apply` runs exactly those steps, so an
assembled and mounted array plans to nothing and applying again is a no-op.
"""

from __future__ import annotations

import os
import re
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clusterops import proc
from clusterops.errors import ClusteropsError
from clusterops.storage import nvme

ARRAY_NAME = "clusterops-scratch"
FS_LABEL = "scratch"
MOUNT_OPTIONS = "noatime"
# nofail: a node whose instance store is gone (stop/start) still boots; the health check reports it.
FSTAB_OPTIONS = "defaults,noatime,nofail,x-systemd.device-timeout=30s"


class RaidError(ClusteropsError):
    pass


class Runner(Protocol):
    def run(self, argv: Sequence[str]) -> proc.Result: ...


class CommandRunner:
    """Runs the plan's commands for real, each under a timeout."""

    def __init__(self, timeout: float = 600.0):
        self.timeout = timeout

    def run(self, argv: Sequence[str]) -> proc.Result:
        return proc.run(argv, timeout=self.timeout, check=False)


@dataclass
class MdArray:
    name: str  # md0
    state: str  # active / inactive
    level: str  # raid0
    devices: list[str]  # nvme1n1, ...
    blocks: int
    chunk_kib: int | None

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def parse_mdstat(text: str) -> list[MdArray]:
    arrays: list[MdArray] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(md\S*)\s*:\s*(\S+)\s+(?:\(\S+\)\s+)?(raid\d+|linear|multipath)?\s*(.*)$", line)
        if not m:
            continue
        name, state, level, rest = m.groups()
        devices = [re.sub(r"\[\d+\].*$", "", d) for d in rest.split()]
        detail = lines[i + 1] if i + 1 < len(lines) else ""
        blocks = re.search(r"(\d+) blocks", detail)
        chunk = re.search(r"(\d+)k chunks", detail)
        arrays.append(
            MdArray(
                name=name,
                state=state,
                level=level or "",
                devices=sorted(devices, key=nvme._natural),
                blocks=int(blocks.group(1)) if blocks else 0,
                chunk_kib=int(chunk.group(1)) if chunk else None,
            )
        )
    return arrays


@dataclass
class Step:
    kind: str  # "run" | "append"
    why: str
    argv: list[str] = field(default_factory=list)
    path: str = ""
    line: str = ""

    def to_dict(self) -> dict[str, object]:
        if self.kind == "run":
            return {"kind": "run", "why": self.why, "argv": self.argv}
        return {"kind": "append", "why": self.why, "path": self.path, "line": self.line}

    def __str__(self) -> str:
        if self.kind == "run":
            return " ".join(self.argv)
        return f"echo {self.line!r} >> {self.path}"


@dataclass
class Plan:
    md_device: str
    mount_point: str
    devices: list[str]
    chunk_kib: int
    fs_uuid: str
    steps: list[Step]
    notes: list[str]

    @property
    def noop(self) -> bool:
        return not self.steps

    def to_dict(self) -> dict[str, object]:
        return {
            "md_device": self.md_device,
            "mount_point": self.mount_point,
            "devices": self.devices,
            "chunk_kib": self.chunk_kib,
            "fs_uuid": self.fs_uuid,
            "noop": self.noop,
            "steps": [s.to_dict() for s in self.steps],
            "notes": self.notes,
        }


@dataclass
class Machine:
    """What the plan is computed from; every field can come from a fixture."""

    sysfs: str = "/sys"
    mdstat: str = "/proc/mdstat"
    mounts: str = "/proc/self/mounts"
    swaps: str = "/proc/swaps"
    fstab: str = "/etc/fstab"
    mdadm_conf: str = "/etc/mdadm/mdadm.conf"

    def read(self, attr: str) -> str:
        try:
            return Path(getattr(self, attr)).read_text()
        except FileNotFoundError:
            return ""


def filesystem_on(runner: Runner, device: str) -> str:
    """The filesystem (or RAID/partition-table) signature blkid finds on a device, '' when blank."""
    r = runner.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device])
    if r.returncode == 0 and r.stdout.strip():
        return r.stdout.strip()
    r = runner.run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", device])
    return f"partition table {r.stdout.strip()}" if r.returncode == 0 and r.stdout.strip() else ""


def plan(
    machine: Machine,
    runner: Runner,
    mount_point: str = "/scratch",
    md_device: str = "/dev/md0",
    chunk_kib: int = 512,
    models: tuple[str, ...] = nvme.INSTANCE_STORE_MODELS,
    force: bool = False,
    fs_uuid: str | None = None,
) -> Plan:
    if not mount_point.startswith("/") or mount_point == "/":
        raise RaidError(f"mount point {mount_point!r} must be an absolute path other than /")
    mounts = nvme.parse_mounts(machine.read("mounts"))
    arrays = parse_mdstat(machine.read("mdstat"))
    fstab = machine.read("fstab")
    mdconf = machine.read("mdadm_conf")
    md_name = os.path.basename(md_device)
    notes: list[str] = []
    steps: list[Step] = []
    fs_uuid = fs_uuid or str(uuid_mod.uuid4())

    existing = next((a for a in arrays if a.name == md_name and a.state == "active"), None)
    if existing is not None:
        if existing.level != "raid0":
            raise RaidError(f"{md_device} is already an active {existing.level} array; refusing to touch it")
        devices = [f"/dev/{d}" for d in existing.devices]
        notes.append(f"{md_device} already assembled (raid0 over {', '.join(existing.devices)})")
        fs = filesystem_on(runner, md_device)
        if not fs:
            steps.append(
                _mkfs(md_device, existing.chunk_kib or chunk_kib, len(devices), fs_uuid, force=False)
            )
        elif fs != "xfs":
            raise RaidError(f"{md_device} holds a {fs} filesystem, expected xfs; refusing to touch it")
        else:
            fs_uuid = _uuid_of(runner, md_device) or fs_uuid
        chunk_kib = existing.chunk_kib or chunk_kib
    else:
        found = nvme.discover(machine.sysfs, machine.read("mounts"), machine.read("swaps"), models)
        usable = nvme.candidates(found)
        for d in found:
            if d.instance_store and d.in_use:
                notes.append(f"{d.path}: skipped, {d.in_use}")
        if not usable:
            raise RaidError(
                f"no free instance-store NVMe drive found under {machine.sysfs}/block "
                f"(models {', '.join(models)}; {len(found)} NVMe namespaces seen)"
            )
        devices = [d.path for d in usable]
        for dev in devices:
            fs = filesystem_on(runner, dev)
            if fs and not force:
                raise RaidError(f"{dev} holds {fs}; refusing to overwrite it (use --force to wipe)")
            if fs:
                notes.append(f"{dev}: {fs} will be wiped (--force)")
        create = ["mdadm", "--create", md_device, "--run", "--level=0", f"--chunk={chunk_kib}"]
        create += ["--metadata=1.2", f"--name={ARRAY_NAME}", f"--raid-devices={len(devices)}"]
        if len(devices) == 1 or force:
            create.append("--force")
        steps.append(
            Step("run", f"stripe {len(devices)} drives, {chunk_kib} KiB chunks", argv=create + devices)
        )
        steps.append(_mkfs(md_device, chunk_kib, len(devices), fs_uuid, force=force))

    mounted = next((m for m in mounts if m.mountpoint == mount_point), None)
    if mounted is None:
        steps.append(Step("run", "mount point", argv=["mkdir", "-p", mount_point]))
        steps.append(Step("run", "mount it", argv=["mount", "-o", MOUNT_OPTIONS, md_device, mount_point]))
    elif os.path.basename(mounted.device) not in (
        md_name,
        f"md/{ARRAY_NAME}",
    ) and not mounted.device.endswith(ARRAY_NAME):
        raise RaidError(f"{mount_point} is already mounted from {mounted.device}; refusing to mount over it")
    else:
        notes.append(f"{mount_point} already mounted from {mounted.device}")

    if not _fstab_has(fstab, mount_point):
        line = f"UUID={fs_uuid} {mount_point} xfs {FSTAB_OPTIONS} 0 2"
        steps.append(Step("append", "mount at boot, boot without it", path=machine.fstab, line=line))
    if ARRAY_NAME not in mdconf:
        line = f"ARRAY {md_device} metadata=1.2 name={ARRAY_NAME}"
        steps.append(Step("append", "assemble at boot", path=machine.mdadm_conf, line=line))
    return Plan(md_device, mount_point, devices, chunk_kib, fs_uuid, steps, notes)


def _mkfs(md_device: str, chunk_kib: int, ndev: int, fs_uuid: str, force: bool) -> Step:
    # su = chunk, sw = data drives: XFS aligns allocation groups and the log to the stripe.
    argv = ["mkfs.xfs", "-L", FS_LABEL, "-m", f"uuid={fs_uuid}", "-d", f"su={chunk_kib}k,sw={ndev}"]
    argv += ["-f", md_device] if force else [md_device]
    return Step("run", f"xfs aligned to the stripe (su={chunk_kib}k, sw={ndev})", argv=argv)


def _uuid_of(runner: Runner, device: str) -> str:
    r = runner.run(["blkid", "-p", "-o", "value", "-s", "UUID", device])
    return r.stdout.strip() if r.returncode == 0 else ""


def _fstab_has(fstab: str, mount_point: str) -> bool:
    for line in fstab.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and parts[1] == mount_point:
            return True
    return False


def apply(p: Plan, runner: Runner) -> list[str]:
    """Run the plan's steps in order; stop at the first failure with one line naming the step."""
    done: list[str] = []
    for step in p.steps:
        if step.kind == "run":
            r = runner.run(step.argv)
            if r.returncode != 0:
                detail = (r.stderr.strip() or r.stdout.strip()).splitlines()
                raise RaidError(f"{step}: exit {r.returncode}: {detail[-1] if detail else 'no output'}")
        else:
            path = Path(step.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text() if path.exists() else ""
            if step.line not in text.splitlines():
                from clusterops.fsutil import atomic_write_text

                sep = "" if not text or text.endswith("\n") else "\n"
                atomic_write_text(path, f"{text}{sep}{step.line}\n")
        done.append(str(step))
    return done


def status(machine: Machine, mount_point: str = "/scratch") -> dict[str, object]:
    arrays = parse_mdstat(machine.read("mdstat"))
    mounts = nvme.parse_mounts(machine.read("mounts"))
    mounted = next((m for m in mounts if m.mountpoint == mount_point), None)
    raid0 = [a for a in arrays if a.level == "raid0"]
    ok = bool(mounted) and any(
        a.state == "active" and os.path.basename(mounted.device) == a.name for a in raid0
    )
    problems = []
    if not raid0:
        problems.append("no raid0 array in mdstat")
    if not mounted:
        problems.append(f"{mount_point} is not mounted")
    elif not ok:
        problems.append(f"{mount_point} is mounted from {mounted.device}, not from an active raid0 array")
    if mounted and "noatime" not in mounted.options.split(","):
        problems.append(f"{mount_point} is mounted without noatime")
    return {
        "ok": ok and not problems,
        "arrays": [a.to_dict() for a in arrays],
        "mount": mounted.__dict__ if mounted else None,
        "mount_point": mount_point,
        "problems": problems,
    }
