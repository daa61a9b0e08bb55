from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer

from clusterops.cli.common import JSON_OPTION, console, print_json

app = typer.Typer(no_args_is_help=True)

DEFAULT_ROOT = "/var/tmp/clusterops-sandbox"
ROOT_OPTION = typer.Option(
    DEFAULT_ROOT, "--root", help="Directory holding the sandbox's config, state and node dirs."
)


def _sandbox(root: str):
    from clusterops.sandbox.cluster import Sandbox

    return Sandbox(Path(root))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@app.command("up")
def up(
    nodes: int = typer.Option(4, "--nodes", "-n", help="Number of slurmd nodes."),
    root: str = ROOT_OPTION,
    mode: str = typer.Option(
        "auto", "--mode", help="netns (own hostname and address per node), ports, or auto."
    ),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for every node to be idle."),
    slurm: str = typer.Option(
        "",
        "--slurm",
        help="24.11 (Debian 13 root built by `make install`; the default) or 22.05 (host packages).",
    ),
    slurm_root: str = typer.Option(
        "", "--slurm-root", help="The Debian 13 root for 24.11 (default /var/cache/clusterops/slurm-24.11)."
    ),
) -> None:
    """Start munged, slurmctld, N slurmd and an S3 endpoint; print the `export` lines a shell needs.

    Running it again on a sandbox that is up changes nothing and prints the exports again.
    """
    sb = _sandbox(root)
    started = time.monotonic()
    state = sb.up(
        nodes=nodes, mode=mode, timeout=timeout, progress=_say, slurm=slurm, sysroot_path=slurm_root
    )
    _say(
        f"sandbox: {len(state.nodes)} nodes idle in {time.monotonic() - started:.1f}s "
        f"(Slurm {sb.slurm_version()}, {state.mode} mode); S3 at {state.endpoint_url}"
    )
    for name, value in sb.exports(state).items():
        print(f"export {name}={shlex.quote(value)}")


@app.command("build-root")
def build_root(
    path: str = typer.Option(
        "", "--path", help="Where to build (default /var/cache/clusterops/slurm-24.11)."
    ),
    mirror: str = typer.Option("", "--mirror", help="Debian mirror (default: the one apt uses)."),
) -> None:
    """Build the Debian 13 root that runs Slurm 24.11, once (debootstrap); a built root is reused."""
    from clusterops.sandbox import sysroot

    root = sysroot.build(Path(path) if path else sysroot.DEFAULT_ROOT, mirror, progress=_say)
    print(f"{root.path} Slurm {root.slurm_version()}")


@app.command("status")
def status(root: str = ROOT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Processes, node states as Slurm sees them, and the exports."""
    info = _sandbox(root).status()
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    out = console()
    out.print(f"slurm      {info['slurm_version']} ({info['slurm_runtime']})")
    for part in ("slurmctld", "munged", "s3"):
        p = info[part]
        out.print(
            f"{part:10} pid {p['pid']:>7}  {'[green]running[/]' if p['running'] else '[red]stopped[/]'}"
        )
    if info["slurm_error"]:
        out.print(f"[red]slurm: {info['slurm_error']}[/]")
    table = Table("node", "address", "slurmd", "link", "slurm state", "reason")
    for n in info["nodes"]:
        table.add_row(
            n["name"],
            n["addr"],
            f"{n['slurmd_pid']} " + ("up" if n["slurmd_running"] else "dead"),
            "up" if n["link_up"] else "cut",
            n["slurm_state"] or "?",
            n["reason"] or "",
        )
    out.print(table)


@app.command("down")
def down(root: str = ROOT_OPTION) -> None:
    """Stop exactly the processes the sandbox started (by pid) and remove what it created."""
    _sandbox(root).down(progress=_say)


@app.command("kill-node")
def kill_node(node: str, root: str = ROOT_OPTION) -> None:
    """Crash NODE: SIGKILL its slurmd and every process of its jobs."""
    pids = _sandbox(root).kill_node(node)
    _say(f"sandbox: killed {node} ({len(pids)} processes)")


@app.command("partition")
def partition(node: str, root: str = ROOT_OPTION) -> None:
    """Cut NODE's network link (netns mode): its processes run on, unreachable."""
    _sandbox(root).partition(node)
    _say(f"sandbox: {node} cut off the network")


@app.command("revive-node")
def revive_node(node: str, root: str = ROOT_OPTION) -> None:
    """Restore NODE's link, restart its slurmd, and wait until Slurm has it back in service."""
    _sandbox(root).revive_node(node)
    _say(f"sandbox: {node} back in service")
