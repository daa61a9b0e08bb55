"""Property tests over the config parser: whatever a file or the environment holds, loading gives a
typed Config whose every value passes the rules, or our own one-line ConfigError; never another
exception, never a hang, and never a secret in the message."""

from __future__ import annotations

import datetime
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterops import config
from clusterops.errors import ConfigError
from tests.conftest import time_limit

CASE_LIMIT_S = 5  # per generated case: a hang is a failure, not a stuck suite
DEFAULTS = config.Config().to_dict(redact=False)
KEYS = [(s, k) for s, values in DEFAULTS.items() for k in values]
SECRET_MARK = "s3cr3tMARK"
SECRET_KEYS = {("s3", "access_key_id"), ("s3", "secret_access_key")}


scalars = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "auto", "fork", "inline", "command", "/abs/path", "rel/path", "../x", "a\x00b"]
    ),
    st.dates(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner, max_size=3),
    ),
    max_leaves=8,
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string, or a bad escape (a lone surrogate): also a fair input
    if isinstance(v, datetime.datetime | datetime.date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise AssertionError(v)


def assert_valid(cfg: config.Config) -> None:
    """A loaded config holds only values the rules allow (defaults included)."""
    for section, items in cfg.to_dict(redact=False).items():
        for key, value in items.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, float):
                    assert math.isfinite(item), (section, key, item)
            rule = config.RULES.get(f"{section}.{key}")
            if rule and rule.required:
                assert value != "", (section, key)
            if rule and rule.choices:
                assert value in rule.choices, (section, key, value)


def load_or_our_error(tmp_path, text: str, secret: str | None = None) -> None:
    p = tmp_path / "fuzz.toml"
    p.write_text(text, errors="surrogatepass")
    with time_limit(CASE_LIMIT_S):
        try:
            cfg = config.load(p, env={})
        except ConfigError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(str(p)), msg
            if secret:
                assert secret not in msg, msg
            return
    assert_valid(cfg)


FUZZ = settings(
    max_examples=150,
    deadline=CASE_LIMIT_S * 1000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_for_any_key(tmp_path, key, value):
    section, name = key
    load_or_our_error(tmp_path, f"[{section}]\n{name} = {toml_value(value)}\n")


@FUZZ
@given(key=st.sampled_from(sorted(SECRET_KEYS)), value=values)
def test_a_secret_is_never_in_the_error(tmp_path, key, value):
    # Wrap the marker in whatever shape the value took: a list, a number's neighbour, a table.
    wrapped = [SECRET_MARK, value] if not isinstance(value, str) else SECRET_MARK + value
    section, name = key
    load_or_our_error(tmp_path, f"[{section}]\n{name} = {toml_value(wrapped)}\n", secret=SECRET_MARK)


@FUZZ
@given(
    sections=st.dictionaries(
        st.one_of(st.sampled_from(list(DEFAULTS)), st.text(min_size=1, max_size=8)),
        st.dictionaries(
            st.one_of(st.sampled_from([k for _, k in KEYS]), st.from_regex(r"[a-z_]{1,10}", fullmatch=True)),
            values,
            max_size=4,
        ),
        max_size=3,
    )
)
def test_any_mix_of_sections_and_keys(tmp_path, sections):
    lines = []
    for section, items in sections.items():
        lines.append(f"[{json.dumps(section)}]")
        lines.extend(f"{key} = {toml_value(v)}" for key, v in items.items())
    load_or_our_error(tmp_path, "\n".join(lines) + "\n")


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_as_a_config_file(tmp_path, data):
    p = tmp_path / "fuzz.toml"
    p.write_bytes(b"[health]\n" + data)
    with time_limit(CASE_LIMIT_S):
        try:
            cfg = config.load(p, env={})
        except ConfigError as e:
            assert "\n" not in str(e)
            return
    assert_valid(cfg)


@FUZZ
@given(key=st.sampled_from(KEYS), value=st.text(max_size=60))
def test_any_environment_value(key, value):
    section, name = key
    var = f"CLUSTEROPS_{section.upper()}__{name.upper()}"
    with time_limit(CASE_LIMIT_S):
        try:
            cfg = config.load("/dev/null", env={var: value})
        except ConfigError as e:
            msg = str(e)
            assert "\n" not in msg and var in msg
            if key in SECRET_KEYS and value.strip():
                assert value not in msg.split(":", 1)[1]
            return
    assert_valid(cfg)
