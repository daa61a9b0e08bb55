"""Every Slurm version's JSON into clusterops' typed records: the one place that knows Slurm versions.

The format is read from the output's own `meta`, never guessed from its shape:
- Slurm 22.05 (openapi/v0.0.38): `meta.plugin.type` and `meta.Slurm.version`; node `state` is a lower-case
  string beside `state_flags`, numbers are plain, `job_state` is a string.
- Slurm 23.02 and later (data_parser/v0.0.39 .. v0.0.42): `meta.plugin.data_parser` and `meta.slurm`
  (`meta.Slurm` in 23.02); states are lists (`["IDLE", "DRAIN"]`), most numbers are objects
  `{"set": true, "infinite": false, "number": 1}`, `hold` is a boolean, `exit_code` an object, and
  `sinfo --json` (23.11+) prints aggregated records (one per partition and state) under `sinfo`.
A data_parser newer than the newest known one is read with the newest reader; a required field it lacks
is then an error that says the version is newer than the known ones.

Whatever cannot be read is a SlurmError naming the command, the Slurm release, the format and the field,
e.g. "squeue --json (Slurm 24.11.5, data_parser/v0.0.42): jobs[3].node_count: expected a number, got list".
Fields we do not use are ignored.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from clusterops.errors import ClusteropsError
from clusterops.slurm import hostlist
from clusterops.slurm.records import Job, Node, Reservation


class SlurmError(ClusteropsError):
    """Slurm refused an operation or answered with something we cannot read."""


class SlurmUnavailable(SlurmError):
    """The controller did not answer within the timeout, or is down."""


LEGACY = "openapi/v0.0.38"
KNOWN_DATA_PARSERS = ((0, 0, 39), (0, 0, 40), (0, 0, 41), (0, 0, 42))
NEWEST = "data_parser/v" + ".".join(map(str, KNOWN_DATA_PARSERS[-1]))

_NODE_BASE = ("IDLE", "ALLOCATED", "MIXED", "DOWN", "ERROR", "FUTURE", "UNKNOWN")
_JOB_BASE = (
    "PENDING",
    "RUNNING",
    "SUSPENDED",
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
)
# Slurm's job_state_string(): a job flag, in this order, wins over the base state. 22.05 printed its
# job_state that way, so a job list keeps the same meaning on every version.
_JOB_FLAG_FIRST = (
    "COMPLETING",
    "STAGE_OUT",
    "CONFIGURING",
    "RESIZING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SPECIAL_EXIT",
    "STOPPED",
    "REVOKED",
    "RESV_DEL_HOLD",
    "SIGNALING",
)


@dataclass(frozen=True)
class Format:
    """Which Slurm printed a payload, and in which JSON format."""

    source: str  # the command, e.g. "squeue --json"
    parser: str  # "openapi/v0.0.38" or "data_parser/v0.0.42"
    release: str  # "24.11.5", "?" when meta does not say
    legacy: bool  # the 22.05 openapi/v0.0.38 shape
    newer: bool = False  # a data_parser newer than the newest we know, read with the newest reader
    version: tuple[int, ...] = ()  # the data_parser's version, () for openapi/v0.0.38

    def label(self) -> str:
        extra = f", newer than the newest known {NEWEST}" if self.newer else ""
        return f"{self.source} (Slurm {self.release}, {self.parser}{extra})"

    def error(self, path: str, message: str) -> SlurmError:
        return SlurmError(f"{self.label()}: {path}: {message}")


def kind(value: Any) -> str:
    """A JSON type's name, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def load(payload: Any, source: str) -> dict[str, Any]:
    """A payload as a JSON object: parsed text, or an object already parsed."""
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("utf-8", "replace")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError) as e:
            raise SlurmError(f"{source}: printed something that is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise SlurmError(f"{source}: expected a JSON object, got {kind(payload)}")
    return payload


def raise_errors(data: dict[str, Any], source: str) -> None:
    """Slurm's own `errors` list, as one line."""
    errors = data.get("errors")
    if errors is None or errors == []:
        return
    if not isinstance(errors, list):
        raise SlurmError(f"{source}: errors: expected a list, got {kind(errors)}")
    first = errors[0]
    text: Any = first
    if isinstance(first, dict):
        text = first.get("description") or first.get("error") or first
    raise SlurmError(f"{source} reported: {text}")


def identify(data: dict[str, Any], source: str) -> Format:
    """The format and Slurm release from the payload's `meta`."""
    meta = data.get("meta")
    if not isinstance(meta, dict):
        raise SlurmError(f"{source}: meta: expected an object naming the format, got {kind(meta)}")
    plugin = meta.get("plugin")
    if not isinstance(plugin, dict):
        raise SlurmError(f"{source}: meta.plugin: expected an object, got {kind(plugin)}")
    release = _release(meta.get("slurm", meta.get("Slurm")))
    parser = plugin.get("data_parser")
    if parser is not None and not isinstance(parser, str):
        raise SlurmError(
            f"{source} (Slurm {release}): meta.plugin.data_parser: expected a string, got {kind(parser)}"
        )
    if parser:
        m = re.fullmatch(r"data_parser/v(\d+)\.(\d+)\.(\d+)", parser)
        if not m:
            raise SlurmError(
                f"{source} (Slurm {release}): meta.plugin.data_parser {parser!r}: not a data_parser version"
            )
        version = tuple(int(g) for g in m.groups())
        if version < KNOWN_DATA_PARSERS[0]:
            raise SlurmError(f"{source} (Slurm {release}): {parser} is older than any known format")
        return Format(
            source, parser, release, legacy=False, newer=version > KNOWN_DATA_PARSERS[-1], version=version
        )
    ptype = plugin.get("type")
    if ptype == LEGACY:
        return Format(source, LEGACY, release, legacy=True)
    raise SlurmError(
        f"{source} (Slurm {release}): unknown JSON format: meta.plugin names neither a data_parser "
        f"nor {LEGACY} (type {ptype!r})"
    )


def _release(slurm: Any) -> str:
    if not isinstance(slurm, dict):
        return "?"
    release = slurm.get("release")
    if isinstance(release, str) and release:
        return release
    version = slurm.get("version")
    if isinstance(version, dict):
        parts = [version.get(k) for k in ("major", "minor", "micro")]
        if all(isinstance(p, (int, str)) and not isinstance(p, bool) for p in parts):
            return ".".join(str(p) for p in parts)
    return "?"


class _Reader:
    """Typed access to one payload; every fault names its path and the payload's format."""

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt

    def bad(self, path: str, expected: str, value: Any) -> SlurmError:
        return self.fmt.error(path, f"expected {expected}, got {kind(value)}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.bad(path, "an object", value)
        return value

    def items(self, data: dict[str, Any], key: str) -> list[Any]:
        value = data.get(key)
        if value is None:
            raise self.fmt.error(key, "missing")
        if not isinstance(value, list):
            raise self.bad(key, "a list", value)
        return value

    def raw(self, d: dict[str, Any], key: str, path: str, required: bool) -> Any:
        value = d.get(key)
        if value is None and required:
            raise self.fmt.error(f"{path}.{key}", "missing")
        return value

    def string(self, d: dict[str, Any], key: str, path: str, required: bool = False) -> str:
        value = self.raw(d, key, path, required)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.bad(f"{path}.{key}", "a string", value)
        if required and not value:
            raise self.fmt.error(f"{path}.{key}", "empty")
        return value

    def number(self, d: dict[str, Any], key: str, path: str, required: bool = False) -> int | None:
        """A plain number, or (data_parser) {set, infinite, number}; None when unset or infinite."""
        value = self.raw(d, key, path, required)
        return None if value is None else self.num(value, f"{path}.{key}")

    def num(self, value: Any, path: str) -> int | None:
        if isinstance(value, dict) and not self.fmt.legacy:
            is_set, infinite = value.get("set"), value.get("infinite", False)
            for k, v in (("set", is_set), ("infinite", infinite)):
                if not isinstance(v, bool):
                    raise self.bad(f"{path}.{k}", "a boolean", v)
            if infinite or not is_set:
                return None
            value, path = value.get("number"), f"{path}.number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(path, "a number", value)
        if isinstance(value, float):
            if not value.is_integer():
                raise self.fmt.error(path, f"expected a whole number, got {value!r}")
            value = int(value)
        return value

    def strings(self, d: dict[str, Any], key: str, path: str) -> list[str]:
        """A list of strings, or one comma-separated string ("(null)" and "" are empty)."""
        value = d.get(key)
        if value is None or value in ("", "(null)"):
            return []
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise self.bad(f"{path}.{key}", "a list or a string", value)
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.bad(f"{path}.{key}[{i}]", "a string", v)
        return list(value)

    def states(self, d: dict[str, Any], key: str, path: str) -> list[str]:
        """A state list; required, upper case. data_parser/v0.0.39 (23.02) still gave `job_state` as one
        string; lists came with v0.0.40 (23.11)."""
        value = self.raw(d, key, path, True)
        if isinstance(value, str) and self.fmt.version == (0, 0, 39):
            parts = [p for p in value.split("+") if p]
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if not isinstance(v, str):
                    raise self.bad(f"{path}.{key}[{i}]", "a string", v)
            parts = [p for p in value if p]
        else:
            raise self.bad(f"{path}.{key}", "a list of states", value)
        if not parts:
            raise self.fmt.error(f"{path}.{key}", "empty")
        return [p.upper() for p in parts]

    def hosts(self, d: dict[str, Any], key: str, path: str) -> list[str]:
        text = self.string(d, key, path)
        if not text or text == "(null)":
            return []
        try:
            return hostlist.expand(text)
        except Exception as e:  # the host-list parser's own fault, whatever its type
            raise self.fmt.error(f"{path}.{key}", f"cannot read host list {text!r}: {e}") from None

    def text(self, d: dict[str, Any], key: str, path: str) -> str:
        """A string, or an object carrying it in `description` (sinfo's aggregated `reason`)."""
        value = d.get(key)
        if isinstance(value, dict) and not self.fmt.legacy:
            return self.string(value, "description", f"{path}.{key}")
        return self.string(d, key, path)

    def epoch(self, d: dict[str, Any], key: str, path: str) -> str:
        """A time as scontrol prints it (local, ISO without zone); "Unlimited" when infinite."""
        value = self.raw(d, key, path, False)
        if value is None:
            return ""
        if isinstance(value, dict) and value.get("infinite") is True:
            return "Unlimited"
        seconds = self.num(value, f"{path}.{key}")
        if seconds is None:
            return ""
        try:
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))
        except (OverflowError, OSError, ValueError):
            raise self.fmt.error(f"{path}.{key}", f"not a time: {seconds}") from None


def _split_node_state(states: list[str]) -> tuple[str, list[str]]:
    base = next((s for s in states if s in _NODE_BASE), states[0])
    rest = list(states)
    rest.remove(base)
    return base.lower(), rest


def _split_job_state(states: list[str]) -> tuple[str, list[str]]:
    main = next((s for s in _JOB_FLAG_FIRST if s in states), None)
    main = main or next((s for s in states if s in _JOB_BASE), states[0])
    rest = list(states)
    rest.remove(main)
    return main, rest


def _open(payload: Any, source: str, default: str) -> tuple[dict[str, Any], _Reader]:
    data = load(payload, source or default)
    source = source or _source(data, default)
    raise_errors(data, source)
    return data, _Reader(identify(data, source))


def _source(payload: Any, default: str) -> str:
    """The command that printed a payload, from meta.command when it says (data_parser)."""
    meta = payload.get("meta") if isinstance(payload, dict) else None
    cmd = meta.get("command") if isinstance(meta, dict) else None
    if isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd):
        return f"scontrol --json {' '.join(cmd)}" if cmd[0] == "show" else f"{cmd[0]} --json"
    return default


# nodes


def parse_nodes(payload: Any, source: str = "") -> list[Node]:
    """Nodes from `sinfo --json` (any version) or `scontrol --json show nodes` (23.02+)."""
    data, r = _open(payload, source, "sinfo --json")
    if not r.fmt.legacy and "sinfo" in data:
        return _sinfo_records(r, data)
    return [_node(r, r.obj(n, f"nodes[{i}]"), f"nodes[{i}]") for i, n in enumerate(r.items(data, "nodes"))]


def _node(r: _Reader, n: dict[str, Any], path: str) -> Node:
    if r.fmt.legacy:
        state = r.string(n, "state", path, required=True).lower()
        flags = [f.upper() for f in r.strings(n, "state_flags", path)]
    else:
        state, flags = _split_node_state(r.states(n, "state", path))
    return Node(
        name=r.string(n, "name", path, required=True),
        state=state,
        flags=flags,
        reason=r.text(n, "reason", path),
        partitions=r.strings(n, "partitions", path),
        features=r.strings(n, "active_features", path) or r.strings(n, "features", path),
        address=r.string(n, "address", path),
        cpus=r.number(n, "cpus", path) or 0,
        extra=r.string(n, "extra", path),
        reason_time=r.number(n, "reason_changed_at", path) or None,
    )


def _sinfo_records(r: _Reader, data: dict[str, Any]) -> list[Node]:
    """sinfo's aggregated records: every node named in a record shares its fields; a node in several
    partitions appears in several records."""
    out: dict[str, Node] = {}
    for i, item in enumerate(r.items(data, "sinfo")):
        path = f"sinfo[{i}]"
        rec = r.obj(item, path)
        node_part = r.obj(rec.get("node"), f"{path}.node")
        state, flags = _split_node_state(r.states(node_part, "state", f"{path}.node"))
        nodes = r.obj(rec.get("nodes"), f"{path}.nodes")
        r.raw(nodes, "nodes", f"{path}.nodes", required=True)
        names = r.strings(nodes, "nodes", f"{path}.nodes")
        addresses = r.strings(nodes, "addresses", f"{path}.nodes")
        part = r.obj(rec.get("partition") or {}, f"{path}.partition")
        partition = r.string(part, "name", f"{path}.partition")
        features = r.obj(rec.get("features") or {}, f"{path}.features")
        cpus = r.obj(rec.get("cpus") or {}, f"{path}.cpus")
        for k, name in enumerate(names):
            expanded = _expand_name(r, name, f"{path}.nodes.nodes[{k}]")
            for name in expanded:
                node = out.get(name)
                if node is None:
                    node = out[name] = Node(
                        name=name,
                        state=state,
                        flags=list(flags),
                        reason=r.text(rec, "reason", path),
                        features=r.strings(features, "active", f"{path}.features")
                        or r.strings(features, "total", f"{path}.features"),
                        address=addresses[k] if len(addresses) == len(names) and len(expanded) == 1 else "",
                        cpus=r.number(cpus, "maximum", f"{path}.cpus") or 0,
                        extra=r.string(rec, "extra", path),
                    )
                if partition and partition not in node.partitions:
                    node.partitions.append(partition)
    return list(out.values())


def _expand_name(r: _Reader, name: str, path: str) -> list[str]:
    try:
        return hostlist.expand(name) if name else []
    except Exception as e:  # the host-list parser's own fault, whatever its type
        raise r.fmt.error(path, f"cannot read host list {name!r}: {e}") from None


# jobs


def parse_jobs(payload: Any, source: str = "") -> list[Job]:
    """Jobs from `squeue --json` (any version) or `scontrol --json show job` (23.02+)."""
    data, r = _open(payload, source, "squeue --json")
    return [_job(r, r.obj(item, f"jobs[{i}]"), f"jobs[{i}]") for i, item in enumerate(r.items(data, "jobs"))]


def _job(r: _Reader, j: dict[str, Any], path: str) -> Job:
    job_id = r.number(j, "job_id", path, required=True)
    if job_id is None:
        raise r.fmt.error(f"{path}.job_id", "not set")
    if r.fmt.legacy:
        state, flags = r.string(j, "job_state", path, required=True).upper(), []
    else:
        state, flags = _split_job_state(r.states(j, "job_state", path))
    reason = r.string(j, "state_reason", path)
    hold = j.get("hold")
    if hold is not None and not isinstance(hold, bool):
        raise r.bad(f"{path}.hold", "a boolean", hold)
    return Job(
        job_id=job_id,
        name=r.string(j, "name", path),
        state=state,
        nodes=r.hosts(j, "nodes", path),
        reason=reason,
        restart_count=r.number(j, "restart_cnt", path) or 0,
        partition=r.string(j, "partition", path),
        reservation=r.string(j, "resv_name", path),
        user=r.string(j, "user_name", path),
        exit_code=_exit_code(r, j, path),
        node_count=r.number(j, "node_count", path) or 0,
        flags=flags,
        # 22.05 has no `hold`: a held job waits with reason JobHeldUser or JobHeldAdmin there.
        held=hold if isinstance(hold, bool) else reason.startswith("JobHeld"),
    )


def _exit_code(r: _Reader, j: dict[str, Any], path: str) -> int | None:
    value = j.get("exit_code")
    if value is None:
        return None
    if isinstance(value, dict) and not r.fmt.legacy and "return_code" in value:
        return r.number(value, "return_code", f"{path}.exit_code")
    return r.num(value, f"{path}.exit_code")


# reservations


def parse_reservations(payload: Any, source: str = "") -> list[Reservation]:
    """Reservations from `scontrol --json show reservations` (23.02+), or the text of 22.05's
    `scontrol show reservation -o` (a string that is not a JSON object)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("utf-8", "replace")
    if isinstance(payload, str) and not payload.lstrip().startswith(("{", "[")):
        return parse_reservation_text(payload)
    data, r = _open(payload, source, "scontrol --json show reservations")
    out = []
    now = time.time()
    for i, item in enumerate(r.items(data, "reservations")):
        path = f"reservations[{i}]"
        res = r.obj(item, path)
        start = r.number(res, "start_time", path)
        end = r.number(res, "end_time", path)
        active = start is not None and start <= now and (end is None or now < end)
        out.append(
            Reservation(
                name=r.string(res, "name", path, required=True),
                nodes=r.hosts(res, "node_list", path),
                start=r.epoch(res, "start_time", path),
                end=r.epoch(res, "end_time", path),
                users=r.strings(res, "users", path),
                flags=r.strings(res, "flags", path),
                # scontrol derives State from the clock the same way.
                state="ACTIVE" if active else "INACTIVE",
            )
        )
    return out


def parse_kv_line(line: str) -> dict[str, str]:
    """One `scontrol show -o` record. Values may contain spaces only in the trailing free-text keys."""
    out: dict[str, str] = {}
    for m in re.finditer(r"(\S+?)=(.*?)(?=\s+\S+?=|$)", line.strip()):
        out[m.group(1)] = m.group(2).strip()
    return out


def parse_reservation_text(text: str) -> list[Reservation]:
    """22.05's `scontrol show reservation -o`: one Key=Value line per reservation."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("No reservations"):
            continue
        kv = parse_kv_line(line)
        if "ReservationName" not in kv:
            continue
        nodes = kv.get("Nodes", "")
        try:
            names = hostlist.expand(nodes) if nodes and nodes != "(null)" else []
        except Exception as e:  # the host-list parser's own fault, whatever its type
            name = kv["ReservationName"]
            raise SlurmError(f"scontrol show reservation -o: {name}: Nodes={nodes}: {e}") from None
        out.append(
            Reservation(
                name=kv["ReservationName"],
                nodes=names,
                start=kv.get("StartTime", ""),
                end=kv.get("EndTime", ""),
                users=_split_csv(kv.get("Users")),
                flags=_split_csv(kv.get("Flags")),
                state=kv.get("State", ""),
            )
        )
    return out


def _split_csv(value: str | None) -> list[str]:
    if not value or value == "(null)":
        return []
    return [v for v in value.split(",") if v]


def parse_version(text: str) -> tuple[int, int, int]:
    """`sinfo -V` / `scontrol -V`: "slurm 22.05.8", "slurm-wlm 24.11.5"."""
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text.strip().splitlines()[-1] if text.strip() else "")
    if not m:
        raise SlurmError(f"sinfo -V: cannot read a Slurm version from {text.strip()[:80]!r}")
    major, minor, micro = (int(g) for g in m.groups())
    return major, minor, micro
