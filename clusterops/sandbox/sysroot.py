"""Slurm 24.11 for the sandbox: a Debian 13 root, and a private mount namespace that runs it.

Debian 12 ships Slurm 22.05 (end of life); Debian 13's Slurm 24.11 needs Debian 13's libraries. So
`make install` builds a minimal Debian 13 root once with debootstrap, from the package mirror apt
already uses, into a cache outside the repository, and every later install reuses it.

The sandbox does not chroot into that root. It starts one holder process in a private mount namespace
in which the root's /usr (and /etc/alternatives, /etc/ld.so.cache) replace the host's, and the
sandbox's own hosts file is /etc/hosts. Everything else is the host's: /tmp, /var/tmp, the checkout,
the virtual environment, the interpreter. So munged, slurmctld and slurmd run Slurm 24.11 with its
own libraries, the prolog, epilog, health check and batch scripts slurmd starts see the same paths as
the host (a job's working directory, the project's venv), and the Slurm commands a user runs through
the sandbox's wrappers keep their working directory. The namespace's mounts exist only inside it and
vanish with its last process: nothing is mounted on the host, so nothing can be deleted through a
bind mount of it, and `down` has nothing to unmount.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from clusterops.errors import ClusteropsError, UsageError
from clusterops.fsutil import atomic_write_json

DEFAULT_ROOT = Path(os.environ.get("CLUSTEROPS_SLURM_ROOT", "/var/cache/clusterops/slurm-24.11"))
SUITE = "trixie"
# python3 brings the shared libraries a host interpreter's extension modules link to (libffi, libssl,
# libsqlite3, libbz2, ...): batch scripts and hooks run the project's venv inside the namespace.
PACKAGES = ("slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge", "python3", "procps")
MARKER = ".clusterops-root.json"
# Mounted over the host's inside the namespace; every other path is the host's own.
REPLACED = ("usr", "etc/alternatives", "etc/ld.so.cache")
# The Slurm commands a sandbox wraps: each runs the root's binary inside the namespace.
COMMANDS = (
    "sinfo", "squeue", "scontrol", "sbatch", "srun", "salloc", "scancel", "sdiag", "sacct",
    "sstat", "sprio", "sshare", "strigger", "sattach", "sbcast",
)  # fmt: skip


class SysrootError(ClusteropsError):
    pass


@dataclass(frozen=True)
class Sysroot:
    path: Path

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def ready(self) -> bool:
        return self.marker.is_file()

    def slurm_version(self) -> str:
        """The root's Slurm release (e.g. 24.11.5), from the marker the build wrote."""
        try:
            return str(json.loads(self.marker.read_text())["slurm_version"])
        except (OSError, ValueError, KeyError) as e:
            raise SysrootError(
                f"{self.path}: not a built Slurm root ({e}); run `make install` "
                "or `clusterops sandbox build-root`"
            ) from None

    def require(self) -> Sysroot:
        if not self.ready:
            raise SysrootError(
                f"no Slurm 24.11 root at {self.path}: run `make install` (or `clusterops sandbox "
                f"build-root --path {self.path}`), or use `--slurm 22.05` for the host's Slurm"
            )
        return self


def dpkg_version(root: Path, package: str) -> str:
    """A package's version from the root's dpkg status file, or '' when it is not installed."""
    try:
        text = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return ""
    for block in text.split("\n\n"):
        if (
            re.search(rf"^Package: {re.escape(package)}$", block, re.M)
            and "Status: install ok installed" in block
        ):
            m = re.search(r"^Version: (\S+)", block, re.M)
            return m.group(1) if m else ""
    return ""


def apt_mirror() -> str:
    """The Debian mirror apt already uses here (a deb822 `URIs:` or a one-line `deb` entry)."""
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for src in candidates:
        try:
            text = src.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)/?\s", text, re.M):
            return m.group(1)
    return "http://deb.debian.org/debian"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace."""
    base = str(path.resolve()).rstrip("/") + "/"
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            mnt = fields[4].encode().decode("unicode_escape")
            if (mnt + "/").startswith(base):
                found.append(mnt)
    return found


def remove_tree(path: Path) -> None:
    """rm -r that refuses to run while anything is mounted below `path` (it would delete through it)."""
    mounted = mounts_under(path)
    if mounted:
        raise SysrootError(f"refusing to remove {path}: still mounted below it: {', '.join(mounted[:5])}")
    shutil.rmtree(path)


def build(path: Path = DEFAULT_ROOT, mirror: str = "", progress=None) -> Sysroot:
    """Build the root once (debootstrap, ~1-2 min); a built root is reused as it is."""
    say = progress or (lambda msg: None)
    root = Sysroot(path)
    if root.ready:
        say(f"slurm root: {path} already built (Slurm {root.slurm_version()})")
        return root
    if os.geteuid() != 0:
        raise UsageError("building the Slurm root needs root (debootstrap)")
    if not shutil.which("debootstrap"):
        raise SysrootError("debootstrap is not installed: apt-get install debootstrap (make install does)")
    mirror = mirror or apt_mirror()
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        remove_tree(partial)  # an interrupted build: start over, never through a mount
    if path.exists():
        remove_tree(path)  # a root without its marker is an unfinished one
    partial.parent.mkdir(parents=True, exist_ok=True)
    say(f"slurm root: debootstrap {SUITE} into {partial} from {mirror}")
    started = time.monotonic()
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(partial),
        mirror,
    ]
    log = path.with_name(path.name + ".build.log")
    with open(log, "wb") as out:
        try:
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise SysrootError(f"debootstrap failed (exit {rc}): {' / '.join(tail)} (full log: {log})")
    leftover = mounts_under(partial)
    if leftover:
        raise SysrootError(f"debootstrap left mounts under {partial}: {', '.join(leftover)}")
    version = dpkg_version(partial, "slurm-wlm-basic-plugins") or dpkg_version(partial, "slurmctld")
    if not version:
        raise SysrootError(f"{partial}: debootstrap finished but Slurm is not installed in it (see {log})")
    atomic_write_json(
        partial / MARKER,
        {
            "suite": SUITE,
            "packages": list(PACKAGES),
            "mirror": mirror,
            "slurm_version": version.split("-")[0],
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    os.rename(partial, path)
    say(f"slurm root: built in {time.monotonic() - started:.0f}s, Slurm {root.slurm_version()}")
    return root


def host_only_paths() -> list[str]:
    """Host paths under /usr that the namespace must still show: this interpreter when it lives there
    (Debian's own python3), so the venv's python runs inside the namespace too."""
    paths = {
        os.path.realpath(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable),
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"],
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["platstdlib"],
    }
    return sorted(p for p in paths if p.startswith("/usr/") and os.path.exists(p))


def holder_script(root: Sysroot, hosts_file: Path, host_usr: Path, nsswitch: Path | None = None) -> str:
    """The shell the holder runs inside its new mount namespace: mount, then sleep for good."""
    q = _quote
    lines = ["set -e"]
    keep = host_only_paths()
    if keep:
        # The host's /usr stays reachable through a sandbox-owned directory, for the paths above.
        lines.append(f"mount --bind /usr {q(str(host_usr))}")
    for rel in REPLACED:
        lines.append(f"mount --bind {q(str(root.path / rel))} /{rel}")
    for p in keep:
        target = root.path / p.lstrip("/")
        # A mount point must exist inside the root's /usr; an empty one is all it takes.
        if os.path.isdir(p):
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        lines.append(f"mount --bind {q(str(host_usr) + p[len('/usr') :])} {q(p)}")
    lines.append(f"mount --bind {q(str(hosts_file))} /etc/hosts")
    if nsswitch is not None:
        lines.append(f"mount --bind {q(str(nsswitch))} /etc/nsswitch.conf")
    lines.append("exec sleep infinity")
    return "\n".join(lines)


def holder_argv(root: Sysroot, hosts_file: Path, host_usr: Path, nsswitch: Path | None = None) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            holder_script(root, hosts_file, host_usr, nsswitch)]  # fmt: skip


def enter_argv(holder_pid: int, argv: list[str], user: str | None = None, wd: str | None = None) -> list[str]:
    """argv run inside the holder's mount namespace (optionally as `user`)."""
    out = ["nsenter", f"--mount=/proc/{holder_pid}/ns/mnt"]
    if wd:
        out.append(f"--wd={wd}")
    if user:
        import pwd

        pw = pwd.getpwnam(user)
        out += [f"--setuid={pw.pw_uid}", f"--setgid={pw.pw_gid}"]
    return [*out, "--", *argv]


def in_namespace(holder_pid: int) -> bool:
    """The holder is alive and its namespace is not ours (it really switched /usr)."""
    try:
        return os.readlink(f"/proc/{holder_pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def write_wrappers(bin_dir: Path, holder_pid: int | None) -> None:
    """One script per Slurm command: the sandbox's own Slurm, whatever else is on PATH.

    In 24.11 mode each enters the holder's namespace keeping the caller's working directory (sbatch's
    relative paths and a job's default directory depend on it); in 22.05 mode it is the host's binary.
    """
    from clusterops.fsutil import atomic_write_text

    bin_dir.mkdir(parents=True, exist_ok=True)
    for cmd in COMMANDS:
        if holder_pid:
            body = (
                f'exec /usr/bin/nsenter --mount=/proc/{holder_pid}/ns/mnt --wd="$PWD" -- /usr/bin/{cmd} "$@"'
            )
        else:
            body = f'exec /usr/bin/{cmd} "$@"'
        atomic_write_text(
            bin_dir / cmd, f"#!/bin/sh\n# Written by `clusterops sandbox up`.\n{body}\n", mode=0o755
        )


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
