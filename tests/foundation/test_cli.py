"""The command line as an operator meets it: help, config, one-line errors."""

from __future__ import annotations

import json

import pytest

from clusterops.cli import GROUPS
from tests.conftest import run_cli


def test_top_level_help_lists_every_group():
    out = run_cli("--help", check=True).stdout
    for _module, name, _help in GROUPS:
        assert name in out


@pytest.mark.parametrize("group", [g[1] for g in GROUPS])
def test_every_group_has_help(group):
    r = run_cli(group, "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout and "Commands" in r.stdout


def test_config_show_json_redacts_secrets(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[s3]\nbucket = "ckpts"\nsecret_access_key = "hunter2"\n')
    r = run_cli("--config", str(conf), "config", "show", "--json", check=True)
    data = json.loads(r.stdout)
    assert data["config"]["s3"]["bucket"] == "ckpts"
    assert data["config"]["s3"]["secret_access_key"] == "***"
    assert "hunter2" not in r.stdout + r.stderr
    assert data["sources"][-1] == str(conf)


def test_bad_config_is_one_clear_line(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[slurm]\ntimeout_s = 'soon'\n")
    r = run_cli("--config", str(conf), "config", "show")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert str(conf) in r.stderr and "slurm.timeout_s" in r.stderr


def test_slurm_without_config_never_guesses(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = run_cli("--config", "/dev/null", "slurm", "nodes", env=env)
    # No slurm.conf anywhere: refuse instead of letting sinfo fall back to DNS SRV look-ups.
    if r.returncode == 0:
        pytest.skip("this machine has /etc/slurm/slurm.conf")
    assert r.returncode == 2 and "no Slurm config" in r.stderr


@pytest.mark.parametrize(
    "argv, group",
    [
        (["ckpt", "push"], "ckpt"),
        (["-c", "x.toml", "stage", "run"], "stage"),
        (["--config", "x.toml", "demo"], "demo"),
        (["--config=x.toml", "health", "check"], "health"),
        (["--help"], None),
        ([], None),
    ],
)
def test_the_group_a_command_line_runs(argv, group):
    from clusterops.cli import _wanted_group

    assert _wanted_group(argv) == group


def test_one_command_loads_only_its_own_group():
    """A run of one command builds only its group: the others' modules (and what they import) stay out."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.argv = ['clusterops', '--config', '/dev/null', 'config', 'show', '--json']\n"
        "from clusterops.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "mods = sorted(m for m in sys.modules if m.startswith('clusterops.cli.'))\n"
        "print(' '.join(mods), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = set(r.stderr.split())
    assert json.loads(r.stdout)["sources"] is not None
    assert "clusterops.cli.config_cmd" in loaded
    assert not loaded & {f"clusterops.cli.{m}" for m, name, _ in GROUPS if name != "config"}, loaded
