"""Health records: a finding (one fact about one part), a check's result, and a whole run's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterops.verdict import Status

MAX_DETAIL = 200


@dataclass
class Finding:
    """One thing a check found: `GPU 3`, `row remap pending: reset the GPU`, CRITICAL."""

    verdict: Status
    item: str  # which sub-check: row_remap, ecc, count, ...
    subject: str  # what it is about: "GPU 3", "rdmap79s0", "/scratch", "" for the node
    message: str

    def text(self) -> str:
        return f"{self.subject}: {self.message}" if self.subject else self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": int(self.verdict),
            "item": self.item,
            "subject": self.subject,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(Status(d["verdict"]), d["item"], d["subject"], d["message"])


@dataclass
class Outcome:
    """What a check function returns; the runner adds the name and the time."""

    findings: list[Finding] = field(default_factory=list)
    summary: str = ""  # one line when all is well: "8/8 GPUs, driver 550.90.07"
    data: dict[str, Any] = field(default_factory=dict)  # inventory and figures for --json
    state: dict[str, Any] | None = None  # this check's state for the next run; None keeps the old
    metrics: list[tuple[str, dict[str, str], float]] = field(default_factory=list)  # (name, labels, value)

    def add(self, verdict: Status, item: str, subject: str, message: str) -> None:
        self.findings.append(Finding(verdict, item, subject, message))


@dataclass
class CheckResult:
    name: str
    verdict: Status
    detail: str
    seconds: float
    findings: list[Finding] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": int(self.verdict),
            "status": self.verdict.label,
            "detail": self.detail,
            "seconds": round(self.seconds, 4),
            "findings": [f.to_dict() for f in self.findings],
            "data": self.data,
        }

    @classmethod
    def from_outcome(cls, name: str, outcome: Outcome, seconds: float) -> CheckResult:
        verdict = Status.worst(f.verdict for f in outcome.findings)
        return cls(
            name,
            verdict,
            summarize(verdict, outcome),
            seconds,
            outcome.findings,
            outcome.data,
            outcome.metrics,
        )


def summarize(verdict: Status, outcome: Outcome) -> str:
    """The detail line: the findings at the worst level (what an operator acts on), else the summary."""
    if verdict == Status.OK:
        return outcome.summary or "ok"
    worst = [f for f in outcome.findings if f.verdict == verdict]
    text = "; ".join(f.text() for f in worst[:3])
    if len(worst) > 3:
        text += f" (+{len(worst) - 3} more)"
    return clip(text)


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Report:
    node: str
    hook: str  # check | prolog | epilog | healthcheck | undrain | record
    profile: str
    source: str  # "live" or "fixture:PATH"
    started: float
    seconds: float
    checks: list[CheckResult]
    disabled: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Status:
        return Status.worst(c.verdict for c in self.checks)

    def critical(self) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict == Status.CRITICAL]

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "hook": self.hook,
            "profile": self.profile,
            "source": self.source,
            "started": round(self.started, 3),
            "seconds": round(self.seconds, 4),
            "verdict": int(self.verdict),
            "status": self.verdict.label,
            "checks": [c.to_dict() for c in self.checks],
            "disabled": self.disabled,
        }
