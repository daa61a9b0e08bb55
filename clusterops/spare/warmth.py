"""A spare's warmth: data staged, newest checkpoint pulled, health verdict. The warm job on the spare
writes it as the `warmth` key of the node's record in its Slurm `Extra` field (clusterops.slurm.nodeinfo),
so it reaches the head node through slurmctld itself: no shared filesystem, no RPC of our own."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clusterops.slurm import nodeinfo

KEY = "warmth"
STATES = ("cold", "warming", "warm", "failed")
# The warmth's share of the node record (nodeinfo.MAX_RECORD_BYTES in all): a long dataset list is cut.
BUDGET_BYTES = 700


@dataclass
class Warmth:
    state: str = "cold"  # cold | warming | warm | failed
    datasets_ready: bool = False
    datasets: list[str] = field(default_factory=list)
    datasets_total: int | None = None  # set when `datasets` was cut to fit the node record
    ckpt_step: int | None = None
    health: int | None = None  # Nagios verdict of the last health check
    health_ts: float | None = None
    warm_since: float | None = None
    updated: float = 0.0
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.health is not None and self.health in (0, 1)

    @property
    def score(self) -> tuple[int, int, int]:
        """Higher is warmer: warm first, then data ready, then the newest checkpoint."""
        return (
            self.state == "warm",
            self.datasets_ready,
            self.ckpt_step if self.ckpt_step is not None else -1,
        )

    def to_record(self) -> dict[str, Any]:
        """The value of the node record's `warmth` key: compact, within BUDGET_BYTES."""
        body = {k: v for k, v in asdict(self).items() if v not in (None, "", [])}
        detail = self.detail[:200]
        while len(json.dumps(detail)) > 202:  # escaped non-ASCII grows up to 6x: keep to ~200 bytes
            detail = detail[: len(detail) // 2]
        body.pop("detail", None)
        if detail:
            body["detail"] = detail
        if len(json.dumps(body, separators=(",", ":"))) > BUDGET_BYTES and self.datasets:
            names = list(self.datasets)
            body["datasets_total"] = self.datasets_total or len(names)
            while names and len(json.dumps(body | {"datasets": names}, separators=(",", ":"))) > BUDGET_BYTES:
                names.pop()
            body["datasets"] = names
            if not names:
                del body["datasets"]
        return body

    def encode(self) -> str:
        """A whole Extra holding only this warmth. Publishers use nodeinfo.update (it keeps other keys)."""
        return nodeinfo.record_with(KEY, self.to_record())

    @staticmethod
    def clear(client: nodeinfo.NodeClient, node: str) -> None:
        """Remove the warmth from NODE's record, keeping its other keys (`spare remove`, after it has
        cancelled the node's warm job: the one exception to the warm job being the key's only writer)."""
        nodeinfo.clear(client, node, KEY)

    @classmethod
    def from_record(cls, raw: Any) -> Warmth:
        """The warmth from the record's value; fields of the wrong type are dropped and named in detail."""
        if not isinstance(raw, dict):
            return cls(detail="unreadable warmth record")
        kept: dict[str, Any] = {}
        bad: list[str] = []
        for name, ok in _FIELD_TYPES.items():
            if name not in raw:
                continue
            if ok(raw[name]):
                kept[name] = list(raw[name]) if name == "datasets" else raw[name]
            else:
                bad.append(name)
        w = cls(**kept)
        if bad:
            w.detail = (w.detail + "; " if w.detail else "") + f"unreadable warmth fields: {', '.join(bad)}"
        return w

    @classmethod
    def decode(cls, extra: str) -> Warmth:
        """The warmth in a node's Extra field; `cold` when there is none. Never raises: what it cannot
        read (another tool's text, a newer record format) is said in `detail`."""
        info = nodeinfo.read(extra)
        if KEY in info.entries:
            return cls.from_record(info.entries[KEY])
        if info.foreign_text is not None:
            return cls(detail="node Extra holds text that is not clusterops' record: no warmth there")
        return cls(detail=info.problem)  # "" when the field is simply empty or holds no warmth

    def age(self, now: float | None = None) -> float | None:
        return None if not self.updated else (now or time.time()) - self.updated


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt_int(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool))


_FIELD_TYPES = {
    "state": lambda v: v in STATES,
    "datasets_ready": lambda v: isinstance(v, bool),
    "datasets": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "datasets_total": _opt_int,
    "ckpt_step": _opt_int,
    "health": _opt_int,
    "health_ts": lambda v: v is None or _num(v),
    "warm_since": lambda v: v is None or _num(v),
    "updated": _num,
    "detail": lambda v: isinstance(v, str),
}
