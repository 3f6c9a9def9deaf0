"""Append-only logs with a torn line (a crash, a kill or a full disk mid-append) never fail a run."""

from __future__ import annotations

import json
import logging

from fdsl.platform.train.run import MetricsLog, read_metrics
from fdsl.platform.tune.cache import count_pretrainings
from fdsl.schema import read_jsonl


def test_a_torn_line_is_skipped_with_a_warning(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')  # torn mid-append
    with caplog.at_level(logging.WARNING, logger="fdsl"):
        assert read_metrics(tmp_path) == rows
    assert "metrics.jsonl: line 4 is not a JSON object" in caplog.text
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    (tmp_path / "pretrainings.jsonl").write_text('{"fingerprint": "a"}\n[1, 2]\n{"fingerprint": "b"}\n{"fi')
    assert count_pretrainings(tmp_path) == 2  # the list and the torn line are no entries


def test_a_restarted_worker_group_keeps_the_log_up_to_its_checkpoint_despite_a_torn_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    metrics = MetricsLog(str(tmp_path), rank=0, from_step=3)  # resumed from the checkpoint at step 3
    metrics.metrics({"step": 4})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
