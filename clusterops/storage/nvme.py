"""Find the instance-store NVMe drives a RAID 0 may use, from sysfs and the mount table.

A drive is a candidate when its model is an instance-store model, it is not the root disk, and neither
it nor any of its partitions is mounted, used as swap, or held by md/dm (`holders/`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

INSTANCE_STORE_MODELS = ("Amazon EC2 NVMe Instance Storage",)
SECTOR = 512


@dataclass
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: str


def parse_mounts(text: str) -> list[Mount]:
    """/proc/mounts (or /proc/self/mounts); octal escapes (\\040 for space) decoded."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        dev, mnt, fstype, opts = (
            re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p) for p in parts[:4]
        )
        out.append(Mount(dev, mnt, fstype, opts))
    return out


def parse_swaps(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines()[1:] if line.strip()]


@dataclass
class BlockDevice:
    name: str  # nvme1n1
    model: str
    serial: str
    size_bytes: int
    partitions: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    mounted_at: list[str] = field(default_factory=list)
    swap: bool = False
    root: bool = False
    instance_store: bool = False

    @property
    def path(self) -> str:
        return f"/dev/{self.name}"

    @property
    def in_use(self) -> str | None:
        """Why this drive must not be touched, or None."""
        if self.root:
            return "holds the root filesystem"
        if self.mounted_at:
            return f"mounted at {', '.join(self.mounted_at)}"
        if self.swap:
            return "used as swap"
        if self.holders:
            return f"in use by {', '.join(self.holders)}"
        return None

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "path": self.path, "in_use": self.in_use}


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _base_of(dev: str) -> str:
    """/dev/nvme0n1p1 -> nvme0n1; /dev/md0 -> md0."""
    name = os.path.basename(dev)
    m = re.match(r"^(nvme\d+n\d+)(p\d+)?$", name)
    return m.group(1) if m else name


def discover(
    sysfs: str | os.PathLike[str] = "/sys",
    mounts_text: str | None = None,
    swaps_text: str | None = None,
    models: tuple[str, ...] = INSTANCE_STORE_MODELS,
) -> list[BlockDevice]:
    """Every NVMe namespace under SYSFS/block, annotated; candidates have instance_store and no in_use."""
    if mounts_text is None:
        mounts_text = _read(Path("/proc/self/mounts"))
    if swaps_text is None:
        swaps_text = _read(Path("/proc/swaps"))
    mounts = parse_mounts(mounts_text)
    swaps = {_base_of(s) for s in parse_swaps(swaps_text)}
    block = Path(sysfs) / "block"
    devices: list[BlockDevice] = []
    for entry in sorted(block.iterdir() if block.is_dir() else [], key=lambda p: _natural(p.name)):
        name = entry.name
        if not re.match(r"^nvme\d+n\d+$", name):
            continue
        model = _read(entry / "device" / "model")
        dev = BlockDevice(
            name=name,
            model=model,
            serial=_read(entry / "device" / "serial"),
            size_bytes=int(_read(entry / "size", "0") or 0) * SECTOR,
            partitions=sorted(
                p.name for p in entry.iterdir() if p.is_dir() and p.name.startswith(name + "p")
            ),
            holders=_holders(entry / "holders"),
            instance_store=any(model.strip() == m for m in models),
        )
        for part in dev.partitions:
            dev.holders += _holders(entry / part / "holders")
        for mnt in mounts:
            if _base_of(mnt.device) == name:
                dev.mounted_at.append(mnt.mountpoint)
                if mnt.mountpoint == "/":
                    dev.root = True
        dev.swap = name in swaps
        devices.append(dev)
    return devices


def _holders(path: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith("."))
    except OSError:
        return []


def candidates(devices: list[BlockDevice]) -> list[BlockDevice]:
    return [d for d in devices if d.instance_store and d.in_use is None]


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
