"""A spare's warmth: data staged, newest checkpoint pulled, health verdict. The warm job on the spare
writes it into the node's Slurm `Extra` field, so it reaches the head node through slurmctld itself:
no shared filesystem, no RPC of our own."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

TAG = "clusterops-warmth"


@dataclass
class Warmth:
    state: str = "cold"  # cold | warming | warm | failed
    datasets_ready: bool = False
    datasets: list[str] = field(default_factory=list)
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

    def encode(self) -> str:
        body = {k: v for k, v in asdict(self).items() if v not in (None, "", [])}
        return f"{TAG} {json.dumps(body, separators=(',', ':'), sort_keys=True)}"

    @classmethod
    def decode(cls, extra: str) -> Warmth:
        """The warmth in a node's Extra field; `cold` when there is none or it is not ours."""
        if not extra.startswith(TAG + " "):
            return cls()
        try:
            raw = json.loads(extra[len(TAG) + 1 :])
        except json.JSONDecodeError:
            return cls(detail="unreadable warmth record")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)

    def age(self, now: float | None = None) -> float | None:
        return None if not self.updated else (now or time.time()) - self.updated
