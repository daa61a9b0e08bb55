"""RAID 0 discovery, plan, apply and status against a p5-like sysfs tree and mdstat fixtures (the kernel
here has no md driver). apply goes through a runner that records every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clusterops import proc
from clusterops.storage import nvme, raid
from tests.conftest import run_cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs" / "p5"
UUID = "11111111-2222-3333-4444-555555555555"


class RecordingRunner:
    """Answers blkid like a machine whose drives are blank (or hold `signatures`); records every call."""

    def __init__(self, signatures: dict[str, str] | None = None, fail: str | None = None):
        self.calls: list[list[str]] = []
        self.signatures = signatures or {}
        self.fail = fail

    def run(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "blkid":
            dev, what = argv[-1], argv[-2]
            value = self.signatures.get(dev, "") if what == "TYPE" else ""
            if what == "UUID" and dev in self.signatures:
                value = UUID
            return proc.Result(argv, 0 if value else 2, value + ("\n" if value else ""), "")
        if self.fail and argv[0] == self.fail:
            return proc.Result(argv, 1, "", f"{argv[0]}: something broke")
        return proc.Result(argv, 0, "", "")

    def commands(self):
        return [c for c in self.calls if c[0] != "blkid"]


@pytest.fixture
def machine(tmp_path) -> raid.Machine:
    etc = tmp_path / "etc"
    (etc / "mdadm").mkdir(parents=True)
    shutil.copy(FIX / "fstab", etc / "fstab")
    return raid.Machine(
        sysfs=str(FIX / "sys"),
        mdstat=str(FIX / "mdstat-none"),
        mounts=str(FIX / "mounts"),
        swaps=str(FIX / "swaps"),
        fstab=str(etc / "fstab"),
        mdadm_conf=str(etc / "mdadm" / "mdadm.conf"),
    )


def test_discovery_picks_instance_store_and_skips_root_and_ebs():
    devices = nvme.discover(FIX / "sys", (FIX / "mounts").read_text(), (FIX / "swaps").read_text())
    by_name = {d.name: d for d in devices}
    assert sorted(by_name) == ["nvme0n1", "nvme1n1", "nvme2n1", "nvme3n1", "nvme4n1", "nvme5n1"]
    assert by_name["nvme0n1"].root and by_name["nvme0n1"].in_use == "holds the root filesystem"
    assert not by_name["nvme5n1"].instance_store  # an EBS data volume
    assert [d.name for d in nvme.candidates(devices)] == ["nvme1n1", "nvme2n1", "nvme3n1", "nvme4n1"]
    assert by_name["nvme1n1"].size_bytes == 7324218750 * 512

    busy = nvme.discover(FIX / "sys", (FIX / "mounts-busy").read_text(), "")
    assert [d.name for d in nvme.candidates(busy)] == ["nvme1n1", "nvme2n1", "nvme4n1"]


def test_plan_and_apply_run_the_right_commands(machine):
    runner = RecordingRunner()
    p = raid.plan(machine, runner, "/scratch", fs_uuid=UUID)
    assert p.devices == ["/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1", "/dev/nvme4n1"]
    raid.apply(p, runner)
    create, mkfs, mkdir, mount = runner.commands()
    assert create[:3] == ["mdadm", "--create", "/dev/md0"]
    assert "--level=0" in create and "--raid-devices=4" in create and "--chunk=512" in create
    assert create[-4:] == p.devices and "--force" not in create
    assert mkfs[0] == "mkfs.xfs" and "su=512k,sw=4" in mkfs and mkfs[-1] == "/dev/md0" and "-f" not in mkfs
    assert f"uuid={UUID}" in mkfs
    assert mkdir == ["mkdir", "-p", "/scratch"]
    assert mount == ["mount", "-o", "noatime", "/dev/md0", "/scratch"]
    fstab = Path(machine.fstab).read_text().splitlines()
    assert fstab[0].startswith("#") and len(fstab) == 3  # the old lines kept, one added
    uuid, mnt, fstype, opts, *_ = fstab[-1].split()
    assert (uuid, mnt, fstype) == (f"UUID={UUID}", "/scratch", "xfs")
    assert "nofail" in opts.split(",") and "noatime" in opts.split(",")
    assert "ARRAY /dev/md0 metadata=1.2 name=clusterops-scratch" in Path(machine.mdadm_conf).read_text()
    # Every blank drive was checked for a filesystem before anything ran.
    probed = {c[-1] for c in runner.calls if c[0] == "blkid"}
    assert set(p.devices) <= probed


def test_assembled_and_mounted_is_a_noop(machine):
    runner = RecordingRunner({"/dev/md0": "xfs"})
    first = raid.plan(machine, runner, fs_uuid=UUID)
    raid.apply(first, runner)
    machine.mdstat = str(FIX / "mdstat-raid0")
    machine.mounts = str(FIX / "mounts-raid0")
    runner = RecordingRunner({"/dev/md0": "xfs"})
    again = raid.plan(machine, runner)
    assert again.noop, [str(s) for s in again.steps]
    assert raid.apply(again, runner) == [] and runner.commands() == []
    assert Path(machine.fstab).read_text().count("/scratch") == 1


def test_assembled_but_not_mounted_only_mounts(machine):
    machine.mdstat = str(FIX / "mdstat-raid0")
    runner = RecordingRunner({"/dev/md0": "xfs"})
    p = raid.plan(machine, runner)
    raid.apply(p, runner)
    assert [c[0] for c in runner.commands()] == ["mkdir", "mount"]
    assert f"UUID={UUID} /scratch xfs" in Path(machine.fstab).read_text()


def test_refuses_a_drive_with_a_filesystem_unless_forced(machine):
    runner = RecordingRunner({"/dev/nvme3n1": "ext4"})
    with pytest.raises(raid.RaidError, match=r"/dev/nvme3n1 holds ext4; refusing .* --force"):
        raid.plan(machine, runner)
    assert runner.commands() == []
    p = raid.plan(machine, runner, force=True)
    raid.apply(p, runner)
    create, mkfs = runner.commands()[:2]
    assert "--force" in create and "-f" in mkfs


def test_a_failing_step_stops_apply_with_one_line(machine):
    runner = RecordingRunner(fail="mkfs.xfs")
    p = raid.plan(machine, runner)
    with pytest.raises(raid.RaidError, match=r"^mkfs.xfs .*: exit 1: mkfs.xfs: something broke$"):
        raid.apply(p, runner)
    assert [c[0] for c in runner.commands()] == ["mdadm", "mkfs.xfs"]  # nothing mounted after a failure


def test_mdstat_and_status():
    arrays = raid.parse_mdstat((FIX / "mdstat-raid0").read_text())
    assert len(arrays) == 1
    a = arrays[0]
    assert (a.name, a.state, a.level, a.chunk_kib) == ("md0", "active", "raid0", 512)
    assert a.devices == ["nvme1n1", "nvme2n1", "nvme3n1", "nvme4n1"]
    r = run_cli(
        "raid",
        "status",
        "--json",
        "--mdstat",
        str(FIX / "mdstat-raid0"),
        "--mounts",
        str(FIX / "mounts-raid0"),
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["ok"] is True and s["mount"]["device"] == "/dev/md0"
    r = run_cli(
        "raid", "status", "--json", "--mdstat", str(FIX / "mdstat-none"), "--mounts", str(FIX / "mounts")
    )
    assert r.returncode == 2 and json.loads(r.stdout)["problems"]


def test_cli_plan_against_fixtures(machine):
    args = ["--sysfs", machine.sysfs, "--mdstat", machine.mdstat, "--mounts", machine.mounts]
    args += ["--fstab", machine.fstab, "--mdadm-conf", machine.mdadm_conf]
    r = run_cli("raid", "plan", "--json", *args)
    # blkid on the fixture's /dev names finds nothing here (the drives do not exist): a blank plan.
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["devices"] == ["/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1", "/dev/nvme4n1"]
    assert [s["argv"][0] for s in plan["steps"] if s["kind"] == "run"] == [
        "mdadm",
        "mkfs.xfs",
        "mkdir",
        "mount",
    ]
