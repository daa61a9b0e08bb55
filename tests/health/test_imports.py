"""The hook path and an in-process `health check` import neither torch nor boto3 (nor typer, for hooks; nor
ctypes, which fsutil loads only when a bulk copy first syncs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
HEALTHY = REPO / "tests" / "fixtures" / "nodes" / "healthy_p5.json"

PROBE = """
import json, sys
sys.argv = {argv!r}
from clusterops.cli import main
code = None
try:
    main()
except SystemExit as e:
    code = e.code
heavy = ("torch", "boto3", "botocore", "typer", "numpy", "ctypes")
print(json.dumps({{"code": code, "mods": sorted(m for m in heavy if m in sys.modules)}}), file=sys.stderr)
"""


def probe(argv: list[str], env: dict[str, str]) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    return json.loads(r.stderr.strip().splitlines()[-1])


def config(tmp_path) -> dict[str, str]:
    conf = tmp_path / "c.toml"
    conf.write_text(f"""[paths]
state_dir = "{tmp_path}/state"
log_dir = "{tmp_path}/log"
textfile_dir = "{tmp_path}/textfile"
[health]
profile = "p5.48xlarge"
fixture = "{HEALTHY}"
""")
    return {"PATH": "/usr/bin:/bin", "CLUSTEROPS_CONFIG": str(conf), "SLURMD_NODENAME": "node9"}


def test_console_script_health_check_in_process_imports_neither_torch_nor_boto3(tmp_path):
    out = probe(
        ["clusterops", "health", "check", "--json", "--profile", "p5.48xlarge", "--fixture", str(HEALTHY)],
        config(tmp_path),
    )
    assert out["code"] == 0
    assert "torch" not in out["mods"] and "boto3" not in out["mods"] and "botocore" not in out["mods"]


def test_hook_path_imports_neither_torch_nor_boto3_nor_typer(tmp_path):
    for hook in ("healthcheck", "epilog"):
        out = probe(["clusterops", "hook", hook], config(tmp_path))
        assert out["code"] == 0, out
        assert out["mods"] == [], out
    assert (tmp_path / "textfile" / "clusterops_health.prom").read_text().count(
        "clusterops_health_verdict"
    ) >= 1
    events = [json.loads(x) for x in (tmp_path / "log" / "health.ndjson").read_text().splitlines()]
    assert {e["hook"] for e in events if e["event"] == "health_run"} == {"healthcheck", "epilog"}
