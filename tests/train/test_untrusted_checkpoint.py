"""A checkpoint directory is input someone else may have written: nothing in it may run code on resume.

Each test takes a real committed checkpoint of the tiny trainer, replaces one file resume reads with a
pickle whose loading would create a file (then commits the directory again, so it looks whole), and runs
`clusterops train run CONFIG --checkpoint-dir C` as an operator would: it resumes or refuses with one
line, exit non-zero, no traceback, and the file is never created."""

from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from clusterops.checkpoint import layout
from tests.conftest import REPO, run_cli

STEPS = 2
CONFIG = str(REPO / "configs/tiny.toml")


class _Plant:
    """Unpickling this calls open(path, 'w'): a file appears if, and only if, the loader ran the pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _env(tmp: Path) -> dict[str, str]:
    env = os.environ.copy()
    env["TMPDIR"] = str(tmp)  # the synthetic corpus's private dir lives here, not in the shared /tmp
    return env


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A committed step-STEPS checkpoint written by the real CLI."""
    base = tmp_path_factory.mktemp("saved")
    ckpt = base / "C"
    result = run_cli(
        "train", "run", CONFIG, "--checkpoint-dir", str(ckpt), "--steps", str(STEPS),
        env=_env(base), timeout=400, check=True,
    )  # fmt: skip
    assert layout.newest_committed(ckpt).step == STEPS, result.stdout
    return ckpt


def _copy(saved: Path, tmp_path: Path) -> tuple[Path, Path]:
    ckpt = tmp_path / "C"
    shutil.copytree(saved, ckpt)
    return ckpt, ckpt / layout.step_dir_name(STEPS)


def _recommit(step_dir: Path) -> None:
    layout.manifest_path(step_dir).unlink()
    layout.commit(step_dir, STEPS)


def _resume(ckpt: Path, tmp_path: Path, marker: Path):
    result = run_cli(
        "train", "run", CONFIG, "--checkpoint-dir", str(ckpt), "--steps", str(STEPS + 1),
        env=_env(tmp_path), timeout=400,
    )  # fmt: skip
    assert not marker.exists(), f"the planted pickle ran: {marker} was created"
    return result


def _assert_refused(result, names: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("clusterops: ") and names in lines[0], result.stderr


def test_a_pickle_as_the_rng_state_is_refused(saved, tmp_path):
    ckpt, step_dir = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    (step_dir / "rng-rank0.safetensors").write_bytes(pickle.dumps(_Plant(marker)))
    _recommit(step_dir)
    _assert_refused(_resume(ckpt, tmp_path, marker), "rng-rank0.safetensors")


def test_a_pickle_as_the_previous_formats_rng_pt_is_refused(saved, tmp_path):
    """Format 1 kept the RNG in rng-rank0.pt (torch.save), weights_only: a crafted one is refused."""
    ckpt, step_dir = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    (step_dir / "rng-rank0.safetensors").unlink()
    buf = io.BytesIO()
    torch.save(_Plant(marker), buf)
    (step_dir / "rng-rank0.pt").write_bytes(buf.getvalue())
    _recommit(step_dir)
    _assert_refused(_resume(ckpt, tmp_path, marker), "rng-rank0.pt")


def test_a_pickle_as_the_dcp_metadata_is_refused(saved, tmp_path):
    ckpt, step_dir = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    (step_dir / ".metadata").write_bytes(pickle.dumps(_Plant(marker)))
    _recommit(step_dir)
    _assert_refused(_resume(ckpt, tmp_path, marker), ".metadata")


def test_a_metadata_that_smuggles_a_callable_among_real_records_is_refused(saved, tmp_path):
    ckpt, step_dir = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    meta = _metadata(step_dir)
    meta.planner_data = {"x": _Plant(marker)}
    (step_dir / ".metadata").write_bytes(pickle.dumps(meta))
    _recommit(step_dir)
    _assert_refused(_resume(ckpt, tmp_path, marker), ".metadata")


def test_a_pickle_among_the_distcp_byte_items_is_refused(saved, tmp_path):
    """DCP stores non-tensor values (the optimizer's lr, betas, ...) as torch.save bytes inside the
    .distcp file, and torch's own planner loads them with weights_only=False."""
    ckpt, step_dir = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Plant(marker), buf)
    item = _replace_byte_item(step_dir, "optim.param_groups.0.lr", buf.getvalue())
    _recommit(step_dir)
    _assert_refused(_resume(ckpt, tmp_path, marker), item)


def test_a_storage_path_leaving_the_checkpoint_is_refused(saved, tmp_path):
    ckpt, step_dir = _copy(saved, tmp_path)
    meta = _metadata(step_dir)
    for info in meta.storage_data.values():
        info.relative_path = "../../" + info.relative_path
    (step_dir / ".metadata").write_bytes(pickle.dumps(meta))
    _recommit(step_dir)
    _assert_refused(_resume(ckpt, tmp_path, tmp_path / "never"), "leaves the checkpoint directory")


def test_an_untouched_checkpoint_resumes(saved, tmp_path):
    ckpt, _ = _copy(saved, tmp_path)
    result = _resume(ckpt, tmp_path, tmp_path / "never")
    assert result.returncode == 0, result.stderr
    assert f"resumed from {ckpt / layout.step_dir_name(STEPS)} (step {STEPS}" in result.stdout


def test_the_previous_format_resumes_with_its_rng(saved, tmp_path):
    """A step dir as format 1 wrote it: manifest `clusterops-checkpoint/1`, RNG in a torch.save'd .pt."""
    import json
    import random

    from clusterops.train import checkpoint as ckpt_mod

    ckpt, step_dir = _copy(saved, tmp_path)
    (step_dir / "rng-rank0.safetensors").unlink()
    torch.manual_seed(5)
    random.seed(5)
    old = {"torch": torch.get_rng_state(), "python": random.getstate()}
    torch.save(old, step_dir / "rng-rank0.pt")
    _recommit(step_dir)
    manifest = json.loads(layout.manifest_path(step_dir).read_text())
    manifest["format"] = "clusterops-checkpoint/1"
    layout.manifest_path(step_dir).write_text(json.dumps(manifest))
    assert layout.read_manifest(step_dir).format == "clusterops-checkpoint/1"
    rng = ckpt_mod.read_rng(step_dir, 0)
    assert torch.equal(rng["torch"], old["torch"]) and rng["python"] == old["python"]
    result = _resume(ckpt, tmp_path, tmp_path / "never")
    assert result.returncode == 0, result.stderr
    assert f"(step {STEPS}" in result.stdout


def test_rng_state_round_trips_through_safetensors(saved):
    import random

    from clusterops.train import checkpoint as ckpt_mod

    state = ckpt_mod.read_rng(saved / layout.step_dir_name(STEPS), 0)
    ckpt_mod._set_rng_state(state, saved)
    a = (torch.rand(3), random.random())
    ckpt_mod._set_rng_state(ckpt_mod.read_rng(saved / layout.step_dir_name(STEPS), 0), saved)
    assert torch.equal(a[0], torch.rand(3)) and a[1] == random.random()


def _metadata(step_dir: Path):
    from clusterops.checkpoint import dcp_load

    return dcp_load.read_metadata(step_dir / ".metadata")


def _replace_byte_item(step_dir: Path, fqn: str, payload: bytes) -> str:
    """Rewrite the .distcp file holding `fqn` with `payload` in its place, and .metadata to match."""
    meta = _metadata(step_dir)
    target = next(idx for idx in meta.storage_data if idx.fqn == fqn)
    rel = meta.storage_data[target].relative_path
    old = (step_dir / rel).read_bytes()
    items = sorted(
        ((idx, info) for idx, info in meta.storage_data.items() if info.relative_path == rel),
        key=lambda kv: kv[1].offset,
    )
    out = bytearray()
    for idx, info in items:
        chunk = payload if idx == target else old[info.offset : info.offset + info.length]
        info.offset, info.length = len(out), len(chunk)
        out += chunk
    (step_dir / rel).write_bytes(bytes(out))
    (step_dir / ".metadata").write_bytes(pickle.dumps(meta))
    return fqn


def test_export_hf_reads_through_the_same_allow_list(saved, tmp_path):
    ckpt, step_dir = _copy(saved, tmp_path)
    marker = tmp_path / "pwned"
    (step_dir / ".metadata").write_bytes(pickle.dumps(_Plant(marker)))
    _recommit(step_dir)
    out = tmp_path / "OUT"
    r = run_cli("train", "export-hf", str(step_dir), str(out), env=_env(tmp_path), timeout=300)
    assert not marker.exists(), f"the planted pickle ran: {marker} was created"
    _assert_refused(r, ".metadata")
    assert not out.exists() or list(out.iterdir()) == []


def test_a_checkpoint_in_a_newer_format_is_refused_not_skipped(saved, tmp_path):
    """Skipping it would resume from an older step (or from scratch) and write over a newer run's work."""
    import json

    ckpt, step_dir = _copy(saved, tmp_path)
    manifest = json.loads(layout.manifest_path(step_dir).read_text())
    manifest["format"] = "clusterops-checkpoint/3"
    layout.manifest_path(step_dir).write_text(json.dumps(manifest))
    _assert_refused(_resume(ckpt, tmp_path, tmp_path / "never"), "newer than this clusterops")
