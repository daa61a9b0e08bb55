"""Config values that would turn a root hook against the cluster are refused at load, naming the key."""

from __future__ import annotations

import os
import threading

import pytest

from clusterops import config
from clusterops.errors import ConfigError
from tests.conftest import run_cli


def load_toml(tmp_path, text: str) -> config.Config:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p, env={})


def refused(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_toml(tmp_path, text)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "c.toml") in msg
    return msg


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1.0", "0", "0.0", "1e10"])
def test_timeouts_and_intervals_must_be_finite_and_positive(tmp_path, value):
    for key in ("health.check_timeout_s", "health.budget_s", "staging.poll_s", "spare.poll_s"):
        section, name = key.split(".")
        msg = refused(tmp_path, f"[{section}]\n{name} = {value}\n")
        assert f"'{key}'" in msg


def test_non_finite_number_from_the_environment(tmp_path):
    for value in ("nan", "inf", "-5", "1e999"):
        with pytest.raises(ConfigError, match=r"CLUSTEROPS_SLURM__TIMEOUT_S.*slurm.timeout_s"):
            config.load(None, env={"CLUSTEROPS_SLURM__TIMEOUT_S": value})


@pytest.mark.parametrize("value", ['""', '" "', '"*"', '"\\n"'])
def test_empty_or_blank_drain_prefix_is_refused(tmp_path, value):
    msg = refused(tmp_path, f"[health]\ndrain_prefix = {value}\n")
    assert "'health.drain_prefix'" in msg


def test_empty_drain_prefix_from_the_environment():
    with pytest.raises(ConfigError, match="health.drain_prefix' must not be empty"):
        config.load(None, env={"CLUSTEROPS_HEALTH__DRAIN_PREFIX": ""})


def test_empty_checkpoint_prefix_is_refused(tmp_path):
    # An empty prefix would put checkpoints (and `ckpt prune --remote`) at the bucket's root.
    assert "'checkpoint.s3_prefix'" in refused(tmp_path, '[checkpoint]\ns3_prefix = ""\n')
    assert "'checkpoint.s3_prefix'" in refused(tmp_path, '[checkpoint]\ns3_prefix = "../other"\n')


@pytest.mark.parametrize(
    "text, key",
    [
        ('[slurm]\nbackend = "rest"\n', "slurm.backend"),
        ('[health]\nisolation = "thread"\n', "health.isolation"),
        ('[health]\nisolation = ""\n', "health.isolation"),
    ],
)
def test_unknown_enum_values_are_refused(tmp_path, text, key):
    msg = refused(tmp_path, text)
    assert f"'{key}'" in msg and "must be one of" in msg


@pytest.mark.parametrize(
    "text, key",
    [
        ("[s3]\nmax_attempts = 0\n", "s3.max_attempts"),
        ("[s3]\nmax_attempts = 100000\n", "s3.max_attempts"),
        ("[s3]\nmultipart_chunk_mb = 1\n", "s3.multipart_chunk_mb"),
        ("[s3]\nmax_concurrency = -4\n", "s3.max_concurrency"),
        ("[s3]\nbandwidth_mbps = -1.0\n", "s3.bandwidth_mbps"),
        ("[staging]\nmax_workers = 0\n", "staging.max_workers"),
        ("[staging]\nbuffer_mb = 0\n", "staging.buffer_mb"),
        ("[checkpoint]\nkeep_local = 0\n", "checkpoint.keep_local"),
        ("[checkpoint]\nkeep_remote = -1\n", "checkpoint.keep_remote"),
        ("[spare]\nmin_spares = 99999999999999999999\n", "spare.min_spares"),
    ],
)
def test_numbers_out_of_range_are_refused(tmp_path, text, key):
    assert f"'{key}'" in refused(tmp_path, text)


@pytest.mark.parametrize(
    "text, key",
    [
        ('[paths]\nstate_dir = "relative/state"\n', "paths.state_dir"),
        ('[paths]\nlocal_root = "/scratch/../etc"\n', "paths.local_root"),
        ('[paths]\nlog_dir = ""\n', "paths.log_dir"),
        ('[health]\ntextfile_name = "../../etc/cron.d/x"\n', "health.textfile_name"),
        ('[health]\ndisabled = ["gpu", "x y"]\n', "health.disabled"),
        ('[cluster]\nname = "a\\u0000b"\n', "cluster.name"),
        ('[spare]\nreservation = ""\n', "spare.reservation"),
        ('[spare]\nremote = "http://bucket/x"\n', "spare.remote"),
        ('[s3]\nendpoint_url = "file:///etc"\n', "s3.endpoint_url"),
        ('[s3]\nbucket = "a/b"\n', "s3.bucket"),
    ],
)
def test_patterns_are_enforced(tmp_path, text, key):
    assert f"'{key}'" in refused(tmp_path, text)


def test_lag_critical_must_not_be_below_warning(tmp_path):
    msg = refused(tmp_path, "[checkpoint]\nlag_warning_s = 7200.0\nlag_critical_s = 3600.0\n")
    assert "checkpoint.lag_critical_s" in msg


def test_good_values_still_load(tmp_path):
    cfg = load_toml(
        tmp_path,
        '[health]\ncheck_timeout_s = 0.5\ndrain_prefix = "co:"\nisolation = "inline"\n'
        '[slurm]\nbackend = "command"\n[checkpoint]\ns3_prefix = "runs/smol-3b"\nkeep_local = 2\n'
        '[s3]\nbucket = "my-bucket.eu"\nendpoint_url = "http://127.0.0.1:9000"\n'
        '[paths]\nstate_dir = "/var/tmp/nodes/{node}/state"\n',
    )
    assert cfg.health.check_timeout_s == 0.5 and cfg.health.drain_prefix == "co:"
    assert cfg.checkpoint.s3_prefix == "runs/smol-3b" and cfg.slurm.backend == "command"


def test_every_default_and_the_sandbox_config_pass_the_rules(tmp_path):
    from clusterops.sandbox import files

    p = tmp_path / "defaults.toml"
    p.write_text(config.dumps_toml(config.Config()))
    assert config.load(p, env={}).to_dict() == config.Config().to_dict()
    sandbox_cfg = files.clusterops_conf(files.Layout(tmp_path / "sb"), "http://127.0.0.1:5000")
    p.write_text(config.dumps_toml(sandbox_cfg))
    assert config.load(p, env={}).to_dict(redact=False) == sandbox_cfg.to_dict(redact=False)


def test_every_rule_names_a_real_key():
    keys = {f"{s}.{k}" for s, values in config.Config().to_dict().items() for k in values}
    assert set(config.RULES) <= keys


# --- secrets are never printed, not even in an error about them


def test_mistyped_secret_value_is_redacted(tmp_path):
    msg = refused(tmp_path, '[s3]\nsecret_access_key = ["hunter2-AKIA"]\n')
    assert "s3.secret_access_key" in msg and "hunter2" not in msg and config.REDACTED in msg
    msg = refused(tmp_path, '[s3]\naccess_key_id = "AKIA\\u0007hunter2"\n')
    assert "s3.access_key_id" in msg and "hunter2" not in msg


def test_mistyped_secret_key_name_does_not_print_its_value(tmp_path):
    msg = refused(tmp_path, '[s3]\nsecret_acess_key = "hunter2"\n')
    assert "secret_acess_key" in msg and "hunter2" not in msg
    with pytest.raises(ConfigError) as e:
        config.load(None, env={"CLUSTEROPS_S3__SECRET_ACCESS_KEY": "hunter2\x01"})
    assert "hunter2" not in str(e.value)


def test_secret_in_the_cli_error_is_redacted(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[s3]\nsecret_access_key = 123456789\n")
    r = run_cli("--config", str(conf), "config", "check")
    assert r.returncode == 2 and "s3.secret_access_key" in r.stderr
    assert "123456789" not in r.stderr + r.stdout


# --- the file itself


def test_file_that_is_not_text_or_not_a_file(tmp_path):
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b'[s3]\nbucket = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(bad, env={})
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path, env={})
    with pytest.raises(ConfigError, match="nested too deeply|not valid TOML"):
        load_toml(tmp_path, "a = " + "[" * 50000 + "]" * 50000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path, "[s3]\nmax_attempts = " + "9" * 5000 + "\n")


def test_a_fifo_as_config_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load():
        try:
            config.load(fifo, env={})
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader so the thread ends, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("config.load blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError)
    assert "not a regular file" in str(outcome[0])


# --- the contract checked after landing, through the real CLI


@pytest.mark.parametrize(
    "text, key",
    [
        ("[health]\ncheck_timeout_s = nan\n", "health.check_timeout_s"),
        ('[health]\ndrain_prefix = ""\n', "health.drain_prefix"),
        ("[health]\nbudget_s = -1\n", "health.budget_s"),
        ('[slurm]\nbackend = "nope"\n', "slurm.backend"),
    ],
)
def test_config_check_exits_2_naming_the_key(tmp_path, text, key):
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    r = run_cli("--config", str(conf), "config", "check")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and str(conf) in lines[0]


def test_dev_null_means_defaults_and_an_endless_device_is_refused():
    assert config.load("/dev/null", env={}).sources == ["/dev/null"]
    with pytest.raises(ConfigError, match="larger than"):
        config.load("/dev/zero", env={})
