"""`clusterops raid`: RAID 0 over the instance-store NVMe drives (plan, apply, status)."""

from __future__ import annotations

import typer

from clusterops.cli.common import JSON_OPTION, print_json

app = typer.Typer(no_args_is_help=True)

MOUNT = typer.Option("/scratch", "--mount", help="Where the array is mounted.")
MD = typer.Option("/dev/md0", "--md", help="The md device to create.")
CHUNK = typer.Option(512, "--chunk-kib", help="Stripe chunk in KiB (XFS su).")
MODEL = typer.Option(None, "--model", help="Instance-store model string (repeatable).")
FORCE = typer.Option(False, "--force", help="Wipe drives that already hold a filesystem.")
SYSFS = typer.Option("/sys", "--sysfs", help="sysfs root (a fixture tree in tests).")
MDSTAT = typer.Option("/proc/mdstat", "--mdstat", help="mdstat file.")
MOUNTS = typer.Option("/proc/self/mounts", "--mounts", help="Mount table.")
FSTAB = typer.Option("/etc/fstab", "--fstab", help="fstab to add the mount to.")
MDCONF = typer.Option("/etc/mdadm/mdadm.conf", "--mdadm-conf", help="mdadm.conf to add the array to.")


def _plan(mount, md, chunk, model, force, sysfs, mdstat, mounts, fstab, mdconf):
    from clusterops.storage import nvme, raid

    machine = raid.Machine(sysfs=sysfs, mdstat=mdstat, mounts=mounts, fstab=fstab, mdadm_conf=mdconf)
    runner = raid.CommandRunner()
    models = tuple(model) if model else nvme.INSTANCE_STORE_MODELS
    return raid.plan(machine, runner, mount, md, chunk, models, force), runner


@app.command("plan")
def plan_cmd(
    mount: str = MOUNT,
    md: str = MD,
    chunk: int = CHUNK,
    model: list[str] = MODEL,
    force: bool = FORCE,
    sysfs: str = SYSFS,
    mdstat: str = MDSTAT,
    mounts: str = MOUNTS,
    fstab: str = FSTAB,
    mdconf: str = MDCONF,
    json_out: bool = JSON_OPTION,
) -> None:
    """Show what `apply` would do (nothing when the array is assembled and mounted)."""
    p, _ = _plan(mount, md, chunk, model, force, sysfs, mdstat, mounts, fstab, mdconf)
    if json_out:
        print_json(p.to_dict())
        return
    for note in p.notes:
        print(f"# {note}")
    if p.noop:
        print(f"# nothing to do: {p.md_device} is assembled and mounted at {p.mount_point}")
    for step in p.steps:
        print(f"{step}    # {step.why}")


@app.command("apply")
def apply_cmd(
    mount: str = MOUNT,
    md: str = MD,
    chunk: int = CHUNK,
    model: list[str] = MODEL,
    force: bool = FORCE,
    sysfs: str = SYSFS,
    mdstat: str = MDSTAT,
    mounts: str = MOUNTS,
    fstab: str = FSTAB,
    mdconf: str = MDCONF,
    json_out: bool = JSON_OPTION,
) -> None:
    """Create, format and mount the array; idempotent. Refuses drives with a filesystem unless --force."""
    from clusterops.storage import raid

    p, runner = _plan(mount, md, chunk, model, force, sysfs, mdstat, mounts, fstab, mdconf)
    done = raid.apply(p, runner)
    if json_out:
        print_json({**p.to_dict(), "done": done})
        return
    print(f"{p.md_device} at {p.mount_point}: " + (f"{len(done)} steps done" if done else "already in place"))


@app.command("status")
def status_cmd(
    mount: str = MOUNT,
    mdstat: str = MDSTAT,
    mounts: str = MOUNTS,
    json_out: bool = JSON_OPTION,
) -> None:
    """The arrays in /proc/mdstat and whether MOUNT is an active RAID 0. Exit 2 when it is not."""
    from clusterops.storage import raid

    s = raid.status(raid.Machine(mdstat=mdstat, mounts=mounts), mount)
    if json_out:
        print_json(s)
    else:
        for a in s["arrays"]:
            devices = ", ".join(a["devices"])
            print(f"{a['name']}: {a['state']} {a['level']} over {devices}, chunk {a['chunk_kib']}k")
        print(f"{mount}: {'OK' if s['ok'] else 'NOT OK: ' + '; '.join(s['problems'])}")
    if not s["ok"]:
        raise typer.Exit(2)
