"""`bench node` on a sandbox node: every CPU/storage figure judged, GPU figures unavailable, not zero."""

from __future__ import annotations

import json

import pytest

from clusterops.perf.node import Expectation, judge
from clusterops.verdict import Status
from tests.conftest import run_cli

pytestmark = pytest.mark.sandbox


def test_bench_node_json_on_a_sandbox_node(sandbox):
    sb, env = sandbox
    r = run_cli(
        "bench",
        "node",
        "--json",
        "--seconds",
        "1",
        "--size-mib",
        "32",
        env={**env, "CLUSTEROPS_NODE": "node1"},
        timeout=300,
    )
    report = json.loads(r.stdout)
    assert r.returncode == report["verdict"]
    figures = {f["name"]: f for f in report["figures"]}
    for f in figures.values():
        assert {"name", "measured", "expected", "ratio", "verdict"} <= set(f)
    for name in ("gpu_bf16_matmul_tflops", "gpu_hbm_copy_gbps", "h2d_copy_gbps", "nccl_allreduce_busbw_gbps"):
        assert figures[name]["measured"] is None and not figures[name]["available"]
        assert "unavailable" in figures[name]["detail"]
    for name in (
        "cpu_fp32_matmul_gflops",
        "host_memcpy_gbps",
        "nvme_seq_read_gibps",
        "nvme_randread_4k_kiops",
        "gloo_allreduce_busbw_gbps",
    ):
        f = figures[name]
        assert f["measured"] > 0 and f["expected"] > 0
        assert f["ratio"] == pytest.approx(f["measured"] / f["expected"], rel=1e-2)
        assert f["verdict"] in (0, 1, 2)
    # fio ran against node1's own local root, and cleaned up after itself.
    assert not any(p.name.startswith(".bench-") for p in (sb.layout.node("node1") / "nvme").iterdir())


def test_judge_thresholds():
    e = Expectation(100.0, "x", warn_below=0.9, fail_below=0.75)
    assert judge("f", 95, e).verdict == Status.OK
    assert judge("f", 80, e).verdict == Status.WARNING
    assert judge("f", 50, e).verdict == Status.CRITICAL
    missing = judge("f", None, e, "unavailable: no GPU")
    assert missing.measured is None and missing.verdict == Status.UNKNOWN and missing.expected == 100.0


def test_bench_nccl_runs_an_allreduce_across_two_nodes_as_a_slurm_job(sandbox):
    sb, env = sandbox
    r = run_cli("bench", "nccl", "--nodes", "2", "--size-mib", "8", "--json", env=env, timeout=300)
    report = json.loads(r.stdout)
    assert len(set(report["nodes"])) == 2
    assert report["busbw_gbps"] > 0 and "gloo all-reduce 8 MiB across 2 ranks" in report["detail"]
    assert report["figure"]["expected"] == 0.02 and r.returncode == report["verdict"]
