"""The loop: resuming after a stop gives the same losses and data order; schedules; watchdog events."""

from __future__ import annotations

import pytest

from clusterops import telemetry
from clusterops.checkpoint import layout
from clusterops.train import loop
from clusterops.train.metrics import LossSpikeDetector, ThroughputWatchdog

from .conftest import tiny_config


def test_stop_at_k_and_resume_matches_an_uninterrupted_run(tmp_path, corpus):
    cfg = tiny_config(corpus, steps=10)
    straight = loop.run(cfg)
    first = loop.run(cfg, str(tmp_path), stop_after=4)
    assert first.stopped_by == "stop_after" and first.end_step == 4
    assert layout.is_committed(tmp_path / "step-4")
    second = loop.run(cfg, str(tmp_path))
    assert second.resumed_from == str(tmp_path / "step-4") and second.start_step == 4
    resumed = first.records + second.records
    assert [r.step for r in resumed] == list(range(1, 11))
    assert [r.samples for r in resumed] == [r.samples for r in straight.records]
    assert [r.loss for r in resumed] == pytest.approx([r.loss for r in straight.records], abs=1e-6)
    assert straight.losses[-1] < straight.losses[0]
    manifest = layout.read_manifest(tmp_path / "step-10")
    assert manifest.step == 10 and manifest.tokens_seen == 10 * 4 * 64


def test_schedules_warm_up_then_decay():
    from clusterops.train.config import from_dict

    wsd = from_dict(
        {
            "train": {"steps": 100},
            "optim": {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "decay_fraction": 0.2},
        }
    )
    lrs = [loop.lr_at(s, wsd) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert set(lrs[10:80]) == {1.0}  # stable phase
    assert lrs[99] == pytest.approx(0.1) and lrs[85] < 1.0
    wsd.optim.schedule = "cosine"
    cos = [loop.lr_at(s, wsd) for s in range(100)]
    assert cos[10] == pytest.approx(1.0) and cos[99] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(cos[10:], cos[11:], strict=False))


def test_throughput_watchdog_raises_once_per_sustained_drop():
    w = ThroughputWatchdog(fraction=0.6, patience=3, window=20, warmup_steps=2)
    events = [w.update(v) for v in [1.0, 1.0] + [14000.0] * 10 + [7000.0] * 5 + [14000.0] * 3]
    raised = [e for e in events if e]
    assert len(raised) == 1
    assert raised[0]["baseline"] == 14000.0 and raised[0]["tokens_per_s"] == 7000.0
    assert events.index(raised[0]) == 2 + 10 + 2  # the third slow step


def test_loss_spike_is_an_event():
    d = LossSpikeDetector(factor=1.5, warmup_steps=5)
    found = [d.update(x) for x in [3.0] * 10 + [6.0, 3.0]]
    assert [i for i, e in enumerate(found) if e] == [10]


def test_events_go_to_the_log_and_the_textfile(tmp_path, corpus):
    cfg = tiny_config(corpus, steps=2)
    cfg.watchdog.textfile_dir = str(tmp_path / "textfile")
    loop.run(cfg, str(tmp_path / "ckpt"))
    kinds = [e["event"] for e in telemetry.read_events(tmp_path / "ckpt" / "events.ndjson")]
    assert kinds == ["checkpoint"]
    prom = (tmp_path / "textfile" / "clusterops_train.prom").read_text()
    assert "clusterops_train_step 2" in prom and "clusterops_train_throughput_drop 0" in prom
