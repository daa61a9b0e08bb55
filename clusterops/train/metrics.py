"""What the loop reports: throughput, MFU, memory; the throughput watchdog and loss-spike detector, whose
events go to the NDJSON event log and a Prometheus textfile (clusterops.telemetry)."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterops import telemetry

# Dense BF16 peak per device, TFLOP/s (datasheet, SXM). MFU is reported only for known devices.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device_name: str, configured: float = 0.0) -> float:
    if configured > 0:
        return configured
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return 0.0


class ThroughputWatchdog:
    """Raises once per episode when tokens/s stays below `fraction` of the rolling median for `patience`
    consecutive steps (SmolLM3 saw 14k fall to 6-8k tokens/s/GPU when storage tiering evicted shards)."""

    def __init__(self, fraction: float, patience: int, window: int, warmup_steps: int) -> None:
        self.fraction, self.patience, self.warmup = fraction, patience, warmup_steps
        self.history: deque[float] = deque(maxlen=window)
        self.low = 0
        self.seen = 0

    @property
    def baseline(self) -> float | None:
        return (
            statistics.median(self.history) if len(self.history) >= min(5, self.history.maxlen or 5) else None
        )

    def update(self, tokens_per_s: float) -> dict[str, Any] | None:
        self.seen += 1
        if self.seen <= self.warmup:
            return None
        base = self.baseline
        if base is not None and tokens_per_s < self.fraction * base:
            self.low += 1  # slow samples stay out of the baseline, so a long drop does not become normal
            if self.low == self.patience:
                return {
                    "tokens_per_s": round(tokens_per_s, 1),
                    "baseline": round(base, 1),
                    "fraction": self.fraction,
                    "steps_below": self.low,
                }
            return None
        self.low = 0
        self.history.append(tokens_per_s)
        return None


class LossSpikeDetector:
    """A loss above `factor` times its running mean (EMA of the non-spike losses) is a spike."""

    def __init__(self, factor: float, warmup_steps: int = 20, beta: float = 0.95) -> None:
        self.factor, self.warmup, self.beta = factor, warmup_steps, beta
        self.mean: float | None = None
        self.seen = 0
        self.count = 0

    def update(self, loss: float) -> dict[str, Any] | None:
        self.seen += 1
        if self.mean is not None and self.seen > self.warmup and loss > self.factor * self.mean:
            self.count += 1
            return {"loss": round(loss, 4), "running_mean": round(self.mean, 4), "factor": self.factor}
        self.mean = loss if self.mean is None else self.beta * self.mean + (1 - self.beta) * loss
        return None


@dataclass
class Reporter:
    """Writes events and the textfile (rank 0 only); a missing destination simply writes nothing."""

    events_file: str = ""
    textfile_dir: str = ""
    job: str = ""

    def event(self, kind: str, **fields: Any) -> None:
        if self.events_file:
            telemetry.log_event(self.events_file, kind, job=self.job, **fields)

    def gauges(
        self, step: int, loss: float, tokens_per_s: float, mfu: float, drop: bool, spikes: int
    ) -> None:
        if not self.textfile_dir:
            return
        labels = {"job": self.job} if self.job else {}
        metrics = [
            telemetry.Metric("clusterops_train_step", "Training step reached.").add(step, **labels),
            telemetry.Metric("clusterops_train_loss", "Training loss (last step).").add(loss, **labels),
            telemetry.Metric(
                "clusterops_train_tokens_per_second_per_device", "Training throughput per device."
            ).add(tokens_per_s, **labels),
            telemetry.Metric("clusterops_train_mfu", "Model FLOPs utilisation (0-1).").add(mfu, **labels),
            telemetry.Metric(
                "clusterops_train_throughput_drop", "1 while the throughput watchdog sees a drop."
            ).add(1 if drop else 0, **labels),
            telemetry.Metric(
                "clusterops_train_loss_spikes_total", "Loss spikes seen by this run.", kind="counter"
            ).add(spikes, **labels),
        ]
        Path(self.textfile_dir).mkdir(parents=True, exist_ok=True)
        telemetry.write_textfile(self.textfile_dir, "clusterops_train", metrics)
