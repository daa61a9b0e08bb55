"""`ckpt status`: which local steps are committed, uploaded and verified in S3; how old the newest upload
is and how far it lags the newest local checkpoint. The same figures go to a Prometheus textfile,
because an alert on lag is how an operator learns the sync is broken."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterops.checkpoint import layout
from clusterops.checkpoint.remote import Remote
from clusterops.telemetry import Metric
from clusterops.verdict import Status


@dataclass
class LocalStep:
    step: int
    path: str
    committed: bool
    complete: bool = False
    bytes: int = 0
    committed_at: float = 0.0  # unix time the manifest was written
    uploaded: bool = False  # S3 holds a manifest for this step that lists this directory's files
    verified: bool = False  # and every one of them is in S3 with the manifest's size and CRC32C


@dataclass
class CkptStatus:
    local_root: str
    remote: str
    local: list[LocalStep] = field(default_factory=list)
    remote_steps: list[int] = field(default_factory=list)
    remote_latest: int | None = None
    newest_upload_age_s: float | None = None
    upload_lag_s: float = 0.0
    status: str = "ok"
    exit_code: int = 0
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(local_root: str | Path, remote: Remote, warn_s: float, crit_s: float) -> CkptStatus:
    now = time.time()
    st = CkptStatus(str(local_root), str(remote))
    st.remote_steps = remote.steps()
    latest = remote.latest()
    if latest is not None:
        st.remote_latest = latest.step
        st.newest_upload_age_s = round(now - latest.last_modified, 3)
    remote_cache: dict[int, layout.Manifest | None] = {}
    for s in layout.list_steps(local_root):
        entry = LocalStep(s.step, str(s.path), s.committed)
        if s.committed:
            m = layout.read_manifest(s.path)
            entry.complete = m.complete
            entry.bytes = m.total_bytes
            entry.committed_at = layout.manifest_path(s.path).stat().st_mtime
            if s.step in st.remote_steps:
                rm = remote_cache.setdefault(s.step, remote.manifest(s.step))
                if rm is not None:
                    theirs = rm.by_path()
                    entry.uploaded = all(theirs.get(f.path) == f for f in m.files)
                    entry.verified = entry.uploaded and not remote.unverified(s.step, m.files)
        st.local.append(entry)

    committed = [e for e in st.local if e.committed]
    if committed:
        newest = committed[-1]
        if not newest.uploaded:
            st.upload_lag_s = round(max(0.0, now - newest.committed_at), 3)
            st.messages.append(f"step {newest.step}: committed locally, not yet complete in S3")
    level = Status.OK
    if st.upload_lag_s >= crit_s:
        level = Status.CRITICAL
    elif st.upload_lag_s >= warn_s:
        level = Status.WARNING
    if level is not Status.OK:
        st.messages.append(f"newest local checkpoint not in S3 for {st.upload_lag_s:.0f}s")
    st.status, st.exit_code = level.label, int(level)
    return st


def metrics(st: CkptStatus) -> list[Metric]:
    labels = {"remote": st.remote}
    out = [
        Metric(
            "clusterops_ckpt_upload_lag_seconds",
            "Seconds the newest committed local checkpoint has waited to be complete in S3 (0 when it is).",
        ).add(st.upload_lag_s, **labels),
        Metric("clusterops_ckpt_status", "0 ok, 1 warning, 2 critical (Nagios codes).").add(
            st.exit_code, **labels
        ),
    ]
    if st.newest_upload_age_s is not None:
        out.append(
            Metric(
                "clusterops_ckpt_newest_upload_age_seconds", "Seconds since S3's latest pointer last moved."
            ).add(st.newest_upload_age_s, **labels)
        )
    if st.remote_latest is not None:
        out.append(
            Metric("clusterops_ckpt_remote_latest_step", "Step the latest pointer names.").add(
                st.remote_latest, **labels
            )
        )
    committed = [e for e in st.local if e.committed]
    if committed:
        out.append(
            Metric("clusterops_ckpt_local_newest_step", "Newest committed local step.").add(
                committed[-1].step, **labels
            )
        )
    return out
