"""Seed-designed sweeps at debug size: shared pre-training, the scratch arm, effects and verdicts."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import run_fdsl

from fdsl.platform.tune.cache import count_generations, count_pretrainings
from fdsl.platform.tune.report import collect_trials
from fdsl.sweeps import _DEBUG_TRIAL

STUDY = {
    "base": "debug-finetune",
    "overrides": _DEBUG_TRIAL,
    "space": {"data.num_classes": {"grid": [4, 8]}},
    "pretrain_seeds": 1,
    "finetune_seeds": 2,
    "hypotheses": [{"claim": "8 classes pre-train better than 4", "source": "a test",
                    "better": {"data.num_classes": 8}, "worse": {"data.num_classes": 4}},
                   {"claim": "8 classes beat scratch", "better": {"data.num_classes": 8}}],
}


def test_sweep_file_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: debug-finetune\nspace: {data.num_classes: {grid: [4]}}\nfinetune_seed: 2\n")
    res = run_fdsl("sweep", str(bad), "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "bad.yaml: finetune_seed: unknown field of SweepConfig" in res.stderr
    bad.write_text("- just\n- a list\n")
    res = run_fdsl("sweep", str(bad), "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "expected a mapping of sweep fields" in res.stderr
    res = run_fdsl("sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "no such sweep file" in res.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_seed_design_shares_pretraining_runs_the_scratch_arm_once_and_reports_verdicts(tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "study"
    res = run_fdsl("sweep", str(spec), "--out", str(out), timeout=1100)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = collect_trials(out)
    assert len(trials) == 4 and all(t["status"] == "done" for t in trials)
    # the fine-tuning-seed axis adds no pre-training run: one per setting
    assert count_pretrainings(out) == 2 and count_generations(out) == 2
    by_setting: dict = {}
    for t in trials:
        by_setting.setdefault(t["params"]["data.num_classes"], []).append(t["pretrain"])
    for runs in by_setting.values():
        assert len({r["fingerprint"] for r in runs}) == 1
        assert sorted(r["cache_hit"] for r in runs) == [False, True]
    # the scratch arm: once per fine-tuning seed, shared by both settings
    scratch = sorted((out / "scratch").glob("*/trial.json"))
    assert [json.loads(p.read_text())["params"] for p in scratch] in (
        [{"finetune.seed": 0}, {"finetune.seed": 1}], [{"finetune.seed": 1}, {"finetune.seed": 0}])
    report = json.loads((out / "effects.json").read_text())
    assert len(report["settings"]) == 2 and all(s["n"] == 2 for s in report["settings"])
    assert "Student's t" in report["method"]
    assert [v["verdict"] in ("held", "not held", "not resolved") for v in report["verdicts"]] == [True, True]
    assert (out / "plots" / "trend_data_num_classes.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert "id='effects'" in html and "id='verdicts'" in html and "8 classes pre-train better than 4" in html
    assert "2 pre-training runs" in res.stdout


@pytest.mark.slow
def test_a_damaged_cached_pretraining_is_redone(ray_local, tmp_path):
    from fdsl.platform.tune.cache import ensure_dataset, ensure_pretrained
    from fdsl.presets import get_preset

    experiment = get_preset("debug-finetune", [*_DEBUG_TRIAL, "data.num_classes=4"])
    data, _ = ensure_dataset(experiment, tmp_path)
    first, hit = ensure_pretrained(experiment, data, tmp_path)
    again, hit_again = ensure_pretrained(experiment, data, tmp_path)
    assert (hit, hit_again) == (False, True) and first == again and count_pretrainings(tmp_path) == 1
    weights = first / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # torn
    redone, hit_redone = ensure_pretrained(experiment, data, tmp_path)
    assert (redone, hit_redone) == (first, False) and count_pretrainings(tmp_path) == 2
    other, _ = ensure_pretrained(get_preset("debug-finetune", [*_DEBUG_TRIAL, "data.num_classes=4",
                                                               "pretrain.seed=1"]), data, tmp_path)
    assert other != first  # the pre-training seed is part of the key


VARIETY_AT_DEBUG_SIZE = [
    "pretrain.model=test_vit", "pretrain.img_size=16", "pretrain.patch_size=4", "pretrain.max_steps=2",
    "pretrain.global_batch_size=16", "pretrain.num_workers=0", "pretrain.use_gpu=false",
    "pretrain.use_deepspeed=false", "pretrain.zero_stage=0", "pretrain.precision=fp32",
    "pretrain.repeated_aug=1",
    "pretrain.randaugment=", "pretrain.augment_cpus=0.5", "pretrain.checkpoint_every=1000",
    "finetune.epochs=1", "finetune.samples_per_class=5", "finetune.global_batch_size=16",
    "finetune.num_workers=0", "finetune.use_gpu=false", "finetune.cpus_per_worker=0.9",
    "finetune.augment_cpus=0.5", "finetune.randaugment=", "finetune.mixup=0", "finetune.cutmix=0",
    "data.image_size=32",
]
DATA_AT_DEBUG_SIZE = {"fractaldb-variety": ["data.pad=1", "data.num_points=300", "data.search_points=2000",
                                            "data.search_size=64"],
                      "visualatom-variety": ["data.num_classes=4", "data.num_instances=4"]}
DEBUG_SPACES = {
    "fractaldb-variety": {"data.num_classes": [4, 6], "data.num_instances": [4, 8]},
    "visualatom-variety": {"data.vertex_max": [400, 700], "data.num_lines_max": [5, 10]},
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(DEBUG_SPACES))
def test_the_full_size_variety_sweeps_start(name, tmp_path):
    """Optuna (TPE) and ASHA on the full-size sweeps' own spaces, shrunk to debug sizes: one trial each."""
    from fdsl.platform.tune.sweep import run_sweep
    from fdsl.sweeps import check_sweep, get_sweep

    sweep = get_sweep(name)
    assert sweep.search == "optuna"
    sweep.overrides = VARIETY_AT_DEBUG_SIZE + DATA_AT_DEBUG_SIZE[name]
    sweep.num_samples, sweep.grace_period = 1, 1  # ASHA's grace period within the 1 debug epoch
    for param, values in DEBUG_SPACES[name].items():
        sweep.space[param] = {"choice": values}
    summary = run_sweep(sweep, name, tmp_path / name, check_sweep(sweep))
    assert summary["trials"] == 1 and summary["errors"] == 0, summary
    assert 0.0 <= summary["best_metric"] <= 1.0
