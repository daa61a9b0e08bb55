"""The landing check, exactly: `clusterops health check --json --profile p5.48xlarge --fixture F` for every
shipped fixture; verdict by name (healthy* 0, warn* 1, others 2), exit code equal to the verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
FIXTURES = sorted((REPO / "tests" / "fixtures" / "nodes").glob("*.json"))
CLI = str(Path(sys.executable).parent / "clusterops")


def expected(path: Path) -> int:
    return 0 if path.name.startswith("healthy") else 1 if path.name.startswith("warn") else 2


def test_there_is_a_fixture_for_each_failure():
    names = {p.stem for p in FIXTURES}
    assert "healthy_p5" in names and len(names) >= 30
    assert sum(n.startswith("warn") for n in names) >= 4


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_health_check_fixture(fixture: Path, tmp_path):
    env = {**os.environ, "CLUSTEROPS_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    if fixture.stem == "nvml_hang":
        env["CLUSTEROPS_HEALTH__CHECK_TIMEOUT_S"] = "2"  # the default 20 s, shortened for the suite
    r = subprocess.run(
        [CLI, "health", "check", "--json", "--profile", "p5.48xlarge", "--fixture", str(fixture)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    report = json.loads(r.stdout)
    assert r.returncode == report["verdict"] == expected(fixture), (r.stderr, report)
    assert [c["name"] for c in report["checks"]] == ["gpu", "xid", "efa", "storage", "system"]
    for c in report["checks"]:
        assert set(c) >= {"name", "verdict", "detail", "seconds"} and 0 <= c["verdict"] <= 3
        assert isinstance(c["seconds"], float) and c["detail"]
    bad = [c for c in report["checks"] if c["verdict"]]
    assert len(bad) == (1 if expected(fixture) else 0), bad  # each fixture fails exactly one check
    if fixture.stem == "nvml_hang":
        assert bad[0]["name"] == "gpu" and "hung" in bad[0]["detail"]
        assert "nvmlDeviceGetRemappedRows" in bad[0]["detail"]
