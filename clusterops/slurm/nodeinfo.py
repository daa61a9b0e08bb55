"""clusterops' one per-node record, kept in the node's Slurm `Extra` field.

Slurm carries a node's `Extra` string through slurmctld to every reader (`sinfo --json`, `scontrol show
node`), so a fact written on a node reaches the head node with no shared filesystem and no RPC of ours.
`scontrol update NodeName=X Extra=...` replaces the whole field, so every clusterops fact about a node
lives in ONE namespaced JSON object, next to whatever other tools keep there:

    {"clusterops":{"v":1,"warmth":{"state":"warm",...},"drain":{...}},"rack":"r12"}

- `v` is the format version. A record with a newer `v` than this code knows is read-only here: it is
  reported, never interpreted, never written over.
- Other top-level keys (another tool's, an admin's) are kept as they are on every write. An `Extra` that
  is not a JSON object (an admin's free text) is kept verbatim: writing over it is refused unless forced.
- The old form `clusterops-warmth {json}` (one warmth, the whole field) is read as the warmth key and
  migrated to the record on the next write.

Each key has exactly one writer; no other code writes it:

    key        writer                                                        status
    warmth     the warm job on that spare (`clusterops spare warm-here`)      in use
    drain      the node's own health hook, recording the drains it made      reserved
    heartbeat  the training rank(s) on that node (train/)                     reserved
    peer       the peer-staging server on that node (staging/)                reserved

Clearing a key is its writer's act too, with one exception agreed with the writer: `spare remove`
clears `warmth` on a node it takes out of the spare pool (its warm job is cancelled first).

Limits, and why the protocol looks as it does. Slurm has no compare-and-swap on `Extra`: a write is
read-modify-write (one node query, merge only our key, one `scontrol update`). Two writers of different
keys on one node can race: both read, both write, the later write carries the earlier writer's key at its
old value. So every write is checked: after the write, wait SETTLE_S and read again; when our key does
not hold our value (or a key we saw vanished), read, merge and write again, up to `attempts` times with
jitter. A writer starts its write no later than MAX_READ_AGE_S after its read started (else it reads
again), and a write lands within WRITE_LATENCY_S; SETTLE_S covers both, so a racing writer's stale write
has landed before our check reads, and the loser of a race sees it and writes again. The rule holds only
when every writer follows this protocol and slurmctld answers in time: a write that took longer than
WRITE_LATENCY_S (slurmctld stalled) or a writer outside clusterops (`scontrol update Extra=` by hand,
an old clusterops writing the old form) can still overwrite another key; that key's writer restores it
on its next write. Keep writers that need their value to persist writing it again on their own schedule.

Size: Slurm 22.05 and 24.11 stored and returned an `Extra` of 131,000 bytes unchanged; the limit is the
kernel's 128 KiB for one command-line argument of `scontrol`. Every `sinfo`/`squeue` answer carries
every node's `Extra`, so clusterops' part is kept under MAX_RECORD_BYTES (1 KiB) and a write that would
make the whole field exceed MAX_EXTRA_BYTES is refused. Values are JSON only: no NaN or infinity.
Slurm 23.02+ can filter jobs on JSON keys in `Extra` (SchedulerParameters=extra_constraints). Measured on
24.11 with it on: the record is accepted, and a job's `--extra rack=r12` still runs on a node whose Extra
holds the record beside `"rack":"r12"` (Slurm then refuses any non-JSON Extra itself).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterops.errors import UsageError
from clusterops.slurm.command import SlurmError

NAMESPACE = "clusterops"
FORMAT_VERSION = 1
LEGACY_WARMTH_TAG = "clusterops-warmth"

# key -> its one writer (the table in the module docstring); any other key is refused on write.
KEYS: dict[str, str] = {
    "warmth": "the warm job on that spare (clusterops spare warm-here)",
    "drain": "the node's own health hook (reserved)",
    "heartbeat": "the training ranks on that node (reserved)",
    "peer": "the peer-staging server on that node (reserved)",
}

MAX_RECORD_BYTES = 1024  # our namespaced object, compact JSON
MAX_EXTRA_BYTES = 64 * 1024  # the whole field we would write: half the 128 KiB argv limit of scontrol
MAX_READ_AGE_S = 1.0  # write only on a read that started at most this long ago
WRITE_LATENCY_S = 0.5  # a write lands within this after it starts (slurmctld answering normally)
SETTLE_S = MAX_READ_AGE_S + WRITE_LATENCY_S  # wait before checking a write (see the docstring)
ATTEMPTS = 5

_DELETE = object()  # `clear`: remove the key


class NodeClient(Protocol):
    """What this module needs of SlurmClient: one node's Extra, and setting it."""

    def node(self, name: str) -> Any: ...

    def set_extra(self, node: str, value: str) -> None: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    # Python's json accepts NaN/Infinity; Slurm's readers and other tools' may not, so neither do we.
    return json.loads(text, parse_constant=_reject_constant)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False, ensure_ascii=True)


@dataclass
class NodeInfo:
    """A node's Extra, read: our keys, other tools' keys, and what could not be read."""

    raw: str = ""
    version: int | None = None  # `v` of our record; None when the field holds none
    entries: dict[str, Any] = field(default_factory=dict)  # our keys -> their values
    others: dict[str, Any] = field(default_factory=dict)  # other top-level keys, kept as they are
    foreign_text: str | None = None  # an Extra that is not a JSON object: not ours, kept verbatim
    legacy: bool = False  # read from the old `clusterops-warmth {json}` form
    newer: bool = False  # written by a newer format than this code knows: read-only
    problem: str = ""  # why (part of) it could not be read; "" when all is well

    def get(self, key: str, default: Any = None) -> Any:
        return self.entries.get(key, default)

    def refusal(self, force: bool = False) -> str:
        """Why writing our record over this field is refused ("" when it may be written)."""
        if self.newer:
            return self.problem
        if self.foreign_text is not None and not force:
            shown = self.foreign_text if len(self.foreign_text) <= 60 else self.foreign_text[:57] + "..."
            return (
                f"Extra holds {shown!r}, which is not clusterops' record (nor a JSON object): "
                "not overwriting it (clear it with `scontrol update NodeName=... Extra=`, or force)"
            )
        if self.problem and self.version is None and not self.legacy and not force:
            return f"{self.problem}: not overwriting it (force to replace)"
        return ""

    def merged(self, key: str, value: Any) -> dict[str, Any]:
        """The whole field as a JSON object with our `key` set to `value` (or removed: _DELETE)."""
        ours = {k: v for k, v in self.entries.items() if k != key}
        if value is not _DELETE:
            ours[key] = value
        body: dict[str, Any] = dict(self.others)
        if ours:
            body[NAMESPACE] = {"v": FORMAT_VERSION, **ours}
        else:
            body.pop(NAMESPACE, None)
        return body

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for status output."""
        return {
            "version": self.version,
            "entries": self.entries,
            "others": sorted(self.others),
            "foreign_text": self.foreign_text,
            "legacy": self.legacy,
            "newer": self.newer,
            "problem": self.problem,
        }


def read(extra: str | None) -> NodeInfo:
    """Parse a node's Extra. Never raises: what it cannot read is reported in `problem`."""
    raw = extra or ""
    text = raw.strip()
    if not text:
        return NodeInfo(raw=raw)
    if text.startswith(LEGACY_WARMTH_TAG + " ") or text == LEGACY_WARMTH_TAG:
        try:
            warmth = _loads(text[len(LEGACY_WARMTH_TAG) :].strip())
        except ValueError as e:
            return NodeInfo(raw=raw, legacy=True, problem=f"old-form warmth record unreadable: {e}")
        return NodeInfo(raw=raw, legacy=True, entries={"warmth": warmth})
    try:
        body = _loads(text)
    except ValueError:
        return NodeInfo(raw=raw, foreign_text=raw, problem="Extra is not JSON (not clusterops' record)")
    except RecursionError:
        return NodeInfo(raw=raw, foreign_text=raw, problem="Extra is JSON nested too deep to read")
    if not isinstance(body, dict):
        return NodeInfo(
            raw=raw, foreign_text=raw, problem=f"Extra is a JSON {type(body).__name__}, not an object"
        )
    others = {k: v for k, v in body.items() if k != NAMESPACE}
    if NAMESPACE not in body:
        return NodeInfo(raw=raw, others=others)
    ours = body[NAMESPACE]
    if not isinstance(ours, dict):
        return NodeInfo(
            raw=raw, others=others, problem=f"Extra's {NAMESPACE!r} is a {type(ours).__name__}, not an object"
        )
    v = ours.get("v")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        return NodeInfo(raw=raw, others=others, problem=f"Extra's {NAMESPACE!r} record has no valid format v")
    if v > FORMAT_VERSION:
        return NodeInfo(
            raw=raw,
            version=v,
            others=others,
            newer=True,
            problem=(
                f"the node record is format v{v}, newer than this clusterops knows (v{FORMAT_VERSION}): "
                "read-only here; upgrade clusterops on this host"
            ),
        )
    entries = {k: val for k, val in ours.items() if k != "v"}
    return NodeInfo(raw=raw, version=v, entries=entries, others=others)


def check_key(key: str) -> str:
    if key not in KEYS:
        raise UsageError(f"node record key {key!r}: unknown (known: {', '.join(sorted(KEYS))})")
    return key


def check_value(key: str, value: Any) -> Any:
    """The value as it will read back: JSON-only (no NaN/inf, string keys), within the size limit."""
    try:
        text = _dumps(value)
    except (TypeError, ValueError) as e:
        raise UsageError(f"node record {key!r}: value is not plain JSON ({e})") from None
    return json.loads(text)


def encode(body: dict[str, Any]) -> str:
    """The whole field, compact; refuses a record over MAX_RECORD_BYTES or a field over MAX_EXTRA_BYTES."""
    ours = body.get(NAMESPACE)
    if ours is not None:
        size = len(_dumps(ours))
        if size > MAX_RECORD_BYTES:
            raise UsageError(
                f"node record is {size} bytes, over the {MAX_RECORD_BYTES}-byte limit "
                "(every sinfo/squeue answer carries it for every node): keep values small"
            )
    text = _dumps(body) if body else ""
    if len(text) > MAX_EXTRA_BYTES:
        raise UsageError(f"node Extra would be {len(text)} bytes, over the {MAX_EXTRA_BYTES}-byte limit")
    return text


def record_with(key: str, value: Any, base: str = "") -> str:
    """The Extra string `base` with our `key` set (no Slurm involved; for building and tests)."""
    info = read(base)
    why = info.refusal()
    if why:
        raise SlurmError(why)
    return encode(info.merged(check_key(key), check_value(key, value)))


def update(
    client: NodeClient,
    node: str,
    key: str,
    value: Any,
    *,
    force: bool = False,
    attempts: int = ATTEMPTS,
    settle_s: float = SETTLE_S,
) -> NodeInfo:
    """Set our `key` on NODE's record, keeping every other key; returns the record as read back."""
    return _write(client, node, check_key(key), check_value(key, value), force, attempts, settle_s)


def clear(
    client: NodeClient,
    node: str,
    key: str,
    *,
    force: bool = False,
    attempts: int = ATTEMPTS,
    settle_s: float = SETTLE_S,
) -> NodeInfo:
    """Remove our `key` from NODE's record, keeping every other key; returns the record as read back."""
    return _write(client, node, check_key(key), _DELETE, force, attempts, settle_s)


def _holds(info: NodeInfo, key: str, value: Any) -> bool:
    if info.newer or info.legacy or info.foreign_text is not None:
        return False
    if value is _DELETE:
        return key not in info.entries
    return info.version == FORMAT_VERSION and key in info.entries and info.entries[key] == value


def _write(
    client: NodeClient, node: str, key: str, value: Any, force: bool, attempts: int, settle_s: float
) -> NodeInfo:
    what = f"node {node}: record key {key!r}"
    last = ""
    for attempt in range(max(1, attempts)):
        if attempt:
            # Two writers that collided retry at different moments.
            time.sleep(random.uniform(0.05, 0.25) * attempt)
        started = time.monotonic()
        current = read(client.node(node).extra)
        if value is _DELETE and current.foreign_text is not None and not force:
            return current  # an admin's text holds nothing of ours: nothing to clear, and not ours to blank
        why = current.refusal(force)
        if why:
            raise SlurmError(f"node {node}: {why}")
        if _holds(current, key, value):
            return current  # already so: no write, nothing to race
        seen = {k for k in current.entries if k != key} | set(current.others)
        text = encode(current.merged(key, value))
        if time.monotonic() - started > MAX_READ_AGE_S:
            last = "the read was too old to write on (slow answer)"
            continue
        client.set_extra(node, text)
        time.sleep(settle_s)
        after = read(client.node(node).extra)
        missing = sorted(seen - set(after.entries) - set(after.others))
        if _holds(after, key, value) and not missing:
            return after
        last = (
            f"another writer's keys {missing} vanished after our write"
            if missing and _holds(after, key, value)
            else f"read back {after.raw[:120]!r}"
        )
        force = False  # forced once over foreign text; a foreign text appearing again is someone's new act
    raise SlurmError(
        f"{what}: not confirmed after {max(1, attempts)} attempts ({last}); "
        "another writer is changing this node's Extra at the same time"
    )
