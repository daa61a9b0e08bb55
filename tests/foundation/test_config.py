import pytest

from clusterops import config
from clusterops.errors import ConfigError


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_layers_file_then_env_override(tmp_path):
    base = write(tmp_path, '[s3]\nbucket = "from-env-file"\nmax_attempts = 3\n', "base.toml")
    top = write(tmp_path, '[s3]\nbucket = "from-flag"\n[health]\ndisabled = ["xid"]\n', "top.toml")
    env = {
        "CLUSTEROPS_CONFIG": str(base),
        "CLUSTEROPS_S3__MAX_ATTEMPTS": "5",
        "CLUSTEROPS_SLURM__TIMEOUT_S": "2.5",
    }
    cfg = config.load(top, env=env)
    assert cfg.s3.bucket == "from-flag"
    assert cfg.s3.max_attempts == 5
    assert cfg.slurm.timeout_s == 2.5
    assert cfg.health.disabled == ["xid"]
    assert cfg.sources[-2:] == [str(base), str(top)]


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "[s3]\nbukcet = 'x'\n")
    with pytest.raises(ConfigError) as e:
        config.load(p, env={})
    assert str(p) in str(e.value) and "s3.bukcet" in str(e.value)


def test_unknown_section_and_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'nope'"):
        config.load(write(tmp_path, "[nope]\na = 1\n"), env={})
    with pytest.raises(ConfigError, match=r"s3.max_attempts' must be an integer"):
        config.load(write(tmp_path, "[s3]\nmax_attempts = 'many'\n"), env={})
    with pytest.raises(ConfigError, match="CLUSTEROPS_SLURM__TIMEOUT_S"):
        config.load(None, env={"CLUSTEROPS_SLURM__TIMEOUT_S": "soon"})


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[s3\n"), env={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "absent.toml", env={})


def test_secrets_redacted_and_toml_round_trip(tmp_path):
    cfg = config.Config()
    cfg.s3.secret_access_key = "hunter2"
    cfg.paths.local_root = "/nvme/{node}"
    assert cfg.to_dict()["s3"]["secret_access_key"] == config.REDACTED
    p = write(tmp_path, config.dumps_toml(cfg))
    again = config.load(p, env={})
    assert again.s3.secret_access_key == "hunter2"
    assert again.to_dict() == cfg.to_dict()
    assert str(config.node_path(again.paths.local_root, "node7")) == "/nvme/node7"


def test_node_name_prefers_slurm(monkeypatch):
    monkeypatch.setenv("SLURMD_NODENAME", "gpu-017")
    assert config.node_name() == "gpu-017"
