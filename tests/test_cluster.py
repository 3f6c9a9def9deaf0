"""The multi-node drills on a local autoscaling Ray cluster (`make test-cluster`; not in `make test`).

Runs `benchmarks/cluster_drill.py` as a person would: its own cluster (deploy/local, Ray's fake
multi-node provider), every step submitted through the Jobs API, nodes SIGKILLed mid-work, and only
its own cluster stopped. Each drill's figures are checked here, not only its own verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
from conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _rays() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")}


@pytest.mark.timeout(2700)
def test_cluster_drills(tmp_path):
    before = _rays()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cluster_drill.py"), "--dir",
                           str(tmp_path / "drill")], cwd=ROOT, capture_output=True, text=True, timeout=2600)
    print(done.stdout[-6000:])
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-4000:]
    result = json.loads(lines[-1])
    ref = result["reference"]["content_sha256"]
    errors = {name: drill["error"] for name, drill in result.items()
              if isinstance(drill, dict) and "error" in drill}
    assert not errors, errors

    synth = result["synth"]  # the synth pool grew, the training pool did not; same bytes as one node
    assert synth["nodes_rendering"] >= 2 and synth["synth_nodes_max"] >= 2, synth
    assert synth["train_nodes_max"] == 0 and synth["content_sha256"] == ref, synth

    kill = result["synth_kill"]  # a node lost mid-synthesis: finished anyway, nothing half-written
    assert kill["status"] == "SUCCEEDED" and kill["same_hash"], kill
    assert kill["temporary_files_left"] == [] and kill["verify_exit"] == 0 and kill["killed_mid_run"], kill

    pre = result["pretrain"]  # a node lost mid-training: restarted on a new node from the checkpoint
    assert pre["status"] == "SUCCEEDED" and pre["resumed_from_steps"], pre
    assert all(10 <= s <= pre["killed_at_step"] for s in pre["resumed_from_steps"]), pre
    assert pre["final_step"] == 60 and pre["weights_load_in_timm"] and pre["train_nodes_seen"] >= 3, pre

    base = result["vit_base"]  # ViT-Base, 86M parameters, ZeRO-2 and ZeRO-3 over 2 workers
    for stage in ("zero2", "zero3"):
        assert base[stage]["parameters_m"] > 80 and base[stage]["max_abs_logit_diff"] <= 1e-5, base

    sweep = result["sweep"]  # a node lost, then the driver: every trial once, all done
    assert sweep["finished_before_resume"] >= 1 and sweep["train_nodes_max"] >= 2, sweep
    assert sweep["completions"] == sweep["distinct_completions"] == sweep["done"] == 4, sweep

    assert result["idle"]["seconds_to_head_only"] < 180 and result["idle"]["ray_data_coordinator_on_head"]
    assert result["ok"] and done.returncode == 0, done.stderr[-4000:]
    assert not (_rays() - before), "the drill left Ray processes running"
    assert before <= _rays(), "the drill stopped a Ray it did not start"
