"""A real NVML recording: `clusterops health record` on a lent H200 (bench/gpu.sh, 2026-11-28), replayed.

The other node fixtures are built from real layouts; this one is what NVML itself answered on a real GPU,
so it pins our reading of NVML's actual shapes (NOT_SUPPORTED fields, the remapped-rows tuple, fabric info
on a GPU outside an NVSwitch system)."""

import json
from pathlib import Path

from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests" / "fixtures" / "recorded" / "h200-lent.json"
LENT = REPO / "bench" / "lent-gpu.toml"


def _check(fixture: Path, profile: str | Path):
    args = ["--only", "gpu", "--profile", str(profile), "--fixture", str(fixture)]
    r = run_cli("health", "check", "--json", *args)
    report = json.loads(r.stdout)
    (gpu,) = report["checks"]
    assert r.returncode == report["verdict"], r.stderr
    return gpu


def test_recorded_h200_is_healthy_against_a_one_gpu_profile():
    gpu = _check(RECORDED, LENT)
    assert gpu["status"] == "ok", gpu
    assert "NVIDIA H200" in json.dumps(gpu["data"]), gpu["data"]


def test_recorded_h200_fails_the_p5_profile_on_the_gpu_count():
    gpu = _check(RECORDED, "p5.48xlarge")
    assert gpu["status"] == "critical"
    assert any("8" in f["message"] or "count" in f["item"] for f in gpu["findings"]), gpu["findings"]


def test_recorded_h200_with_a_pending_row_remap_is_critical(tmp_path):
    data = json.loads(RECORDED.read_text())
    data["nvml"]["devices"]["0"]["nvmlDeviceGetRemappedRows"] = [0, 1, 1, 0]
    bad = tmp_path / "h200-remap-pending.json"
    bad.write_text(json.dumps(data))
    gpu = _check(bad, LENT)
    assert gpu["status"] == "critical"
    assert [f["item"] for f in gpu["findings"]] == ["row_remap"], gpu["findings"]
