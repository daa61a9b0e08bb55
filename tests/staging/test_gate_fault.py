"""Whose fault a refused job is: a dataset the cluster does not know, or a bad comment, is the job's (the
prolog cancels the job and exits 0: the node is not drained); a known dataset not READY here is the node's."""

from __future__ import annotations

from clusterops import config as config_mod
from clusterops.staging import gate


def cfg_at(tmp_path, datasets=()) -> config_mod.Config:
    cfg = config_mod.Config()
    cfg.paths.local_root = str(tmp_path / "nvme")
    cfg.staging.datasets = list(datasets)
    return cfg


def env(comment: str) -> dict[str, str]:
    return {"SLURM_JOB_ID": "4242", "SLURMD_NODENAME": "node1", "SLURM_JOB_COMMENT": comment}


def test_a_dataset_nobody_knows_is_the_job_s_fault(tmp_path):
    v = gate.evaluate_job(cfg_at(tmp_path, ["fineweb=/fsx/fineweb/manifest.json"]), env("datasets=nosuch"))
    assert v.outcome == "bad_job", v
    assert "names unknown dataset(s) nosuch" in v.detail and "job 4242 on node1" in v.detail


def test_a_known_dataset_not_ready_here_is_the_node_s_fault(tmp_path):
    v = gate.evaluate_job(cfg_at(tmp_path, ["fineweb=/fsx/fineweb/manifest.json"]), env("datasets=fineweb"))
    assert v.outcome == "not_ready" and "fineweb (not staged here)" in v.detail


def test_a_dataset_staged_here_before_is_known_without_a_config_list(tmp_path):
    cfg = cfg_at(tmp_path)
    (tmp_path / "nvme" / "datasets" / ".code.clusterops").mkdir(parents=True)
    v = gate.evaluate_job(cfg, env("datasets=code"))
    assert v.outcome == "not_ready", v


def test_a_bad_comment_is_the_job_s_fault(tmp_path):
    for comment in ("datasets=../etc", "datasets=a,,b", "datasets=a datasets=b", "datasets=$(reboot)"):
        assert gate.evaluate_job(cfg_at(tmp_path), env(comment)).outcome == "bad_job", comment
