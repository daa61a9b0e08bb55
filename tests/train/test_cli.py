"""The CLI as an operator uses it: train run prints falling `loss=` lines and commits a checkpoint, export-hf
writes a directory transformers loads, submit writes a requeueable srun script."""

from __future__ import annotations

import re

from clusterops.checkpoint import layout
from tests.conftest import REPO, run_cli


def test_run_then_export_hf_loads_in_transformers(tmp_path):
    ckpt = tmp_path / "C"
    result = run_cli(
        "train",
        "run",
        str(REPO / "configs/tiny.toml"),
        "--checkpoint-dir",
        str(ckpt),
        "--steps",
        "30",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr
    losses = [float(x) for x in re.findall(r"loss=([0-9.]+)", result.stdout)]
    assert len(losses) >= 3 and losses[-1] < 0.75 * losses[0]
    newest = layout.newest_committed(ckpt)
    assert newest is not None and newest.step == 30
    out = tmp_path / "OUT"
    result = run_cli("train", "export-hf", str(newest.path), str(out), timeout=200)
    assert result.returncode == 0, result.stderr
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "SmolLM3ForCausalLM"
    again = run_cli("train", "export-hf", str(newest.path), str(out), timeout=200)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_submit_dry_run_writes_a_requeueable_srun_script(tmp_path):
    result = run_cli(
        "train",
        "submit",
        str(REPO / "configs/tiny.toml"),
        "--checkpoint-dir",
        str(tmp_path),
        "--nodes",
        "2",
        "--dry-run",
        check=True,
    )
    script = result.stdout
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR1@60",
        "#SBATCH --open-mode=append",
    ):
        assert line in script
    assert re.search(r"^exec srun .* -m clusterops train run \S+tiny.toml --checkpoint-dir", script, re.M)
    assert (tmp_path / "train.sbatch").read_text() == script


def test_bad_config_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    result = run_cli("train", "run", str(bad))
    assert result.returncode == 2
    assert "unknown key 'train.stepz'" in result.stderr and "Traceback" not in result.stderr


def test_sigusr1_checkpoints_and_stops(tmp_path):
    """What Slurm's --signal=USR1@60 does before a time limit: commit a checkpoint at the next step, stop."""
    import os
    import signal
    import subprocess
    import sys

    ckpt = tmp_path / "C"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusterops",
            "train",
            "run",
            str(REPO / "configs/tiny.toml"),
            "--checkpoint-dir",
            str(ckpt),
            "--steps",
            "100000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
    )
    try:
        for line in proc.stdout:
            if line.startswith("step="):
                proc.send_signal(signal.SIGUSR1)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    m = re.search(r"stopping at step (\d+) \(SIGUSR1\)", out)
    assert m, out
    newest = layout.newest_committed(ckpt)
    assert newest is not None and newest.step == int(m.group(1))
