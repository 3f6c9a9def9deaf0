"""The effect statistics of seed-designed sweeps: intervals, pairing, verdicts, trend plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fdsl.platform.tune import effects
from fdsl.platform.tune.sweep_config import SweepConfig


def test_t_interval_matches_the_textbook_case():
    mean, low, high = effects.t_interval([1.0, 2.0, 3.0])  # mean 2, sem 1/sqrt(3), t(0.975, 2) = 4.303
    assert mean == 2.0 and low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert all(math.isnan(v) for v in effects.t_interval([5.0])[1:])


def records(effect_of: dict, pretrain_sd: float, runs: int = 3, finetune_seeds: int = 3):
    """Trials of settings data.delta in effect_of (`runs` pre-training runs each, each off by its own
    N(0, pretrain_sd)), plus the scratch arm."""
    rng = np.random.default_rng(0)
    scratch = [
        {"params": {"finetune.seed": f}, "metrics": {"finetune_top1": 0.6 + 0.01 * f}}
        for f in range(finetune_seeds)
    ]
    trials = []
    for delta, effect in effect_of.items():
        for p in range(runs):
            noise = rng.normal(0, pretrain_sd)
            for f in range(finetune_seeds):
                top1 = 0.6 + 0.01 * f + effect + noise + rng.normal(0, 0.002)
                trials.append(
                    {
                        "trial": f"t{delta}-{p}-{f}",
                        "status": "done",
                        "metrics": {"finetune_top1": top1},
                        "params": {"data.delta": delta, "pretrain.seed": p, "finetune.seed": f},
                    }
                )
    return trials, scratch


SWEPT = ["data.delta", "finetune.seed", "pretrain.seed"]


def test_effects_are_paired_by_finetune_seed_and_the_interval_is_over_pretraining_runs():
    trials, scratch = records({0.01: 0.0, 0.1: 0.15}, pretrain_sd=0.01)
    paired = effects.paired_effects(trials, scratch, SWEPT, "finetune_top1")
    strong = effects.summarise(paired[(("data.delta", 0.1),)])
    assert strong["effect"] == pytest.approx(0.15, abs=0.02)
    assert (strong["n_pretrain"], strong["n_finetune"], strong["n"]) == (3, 3, 9)
    assert strong["low"] < 0.15 < strong["high"] and strong["interval_over"] == "pre-training runs"
    assert strong["wins"] == 9


def test_verdicts_held_not_held_and_not_resolved():
    trials, scratch = records({0.01: 0.0, 0.05: 0.148, 0.1: 0.15}, pretrain_sd=0.02)
    paired = effects.paired_effects(trials, scratch, SWEPT, "finetune_top1")
    held = effects.verdict(
        {"claim": "0.1 beats 0.01", "better": {"data.delta": 0.1}, "worse": {"data.delta": 0.01}}, paired
    )
    assert held["verdict"] == "held" and held["difference"] == pytest.approx(0.15, abs=0.04)
    against = effects.verdict(
        {"claim": "0.01 beats 0.1", "better": {"data.delta": 0.01}, "worse": {"data.delta": 0.1}}, paired
    )
    assert against["verdict"] == "not held"
    close = effects.verdict(
        {"claim": "0.1 beats 0.05", "better": {"data.delta": 0.1}, "worse": {"data.delta": 0.05}}, paired
    )
    assert close["verdict"] == "not resolved" and close["low"] < 0 < close["high"]
    scratch_claim = effects.verdict({"claim": "0.1 beats scratch", "better": {"data.delta": 0.1}}, paired)
    assert scratch_claim["verdict"] == "held"
    missing = effects.verdict({"claim": "?", "better": {"data.delta": 0.2}}, paired)
    assert missing["verdict"] == "not resolved"


def test_trend_plot_per_data_parameter(tmp_path):
    trials, scratch = records({0.01: 0.0, 0.05: 0.1, 0.1: 0.15, 0.2: 0.12}, pretrain_sd=0.01, runs=2)
    paired = effects.paired_effects(trials, scratch, SWEPT, "finetune_top1")
    plots = effects.trend_plots(paired, ["data.delta"], tmp_path)
    assert list(plots) == ["data.delta"] and plots["data.delta"].read_bytes()[:4] == b"\x89PNG"
    assert effects.is_log_spaced([0.01, 0.05, 0.1, 0.2]) and not effects.is_log_spaced([4, 8])


def test_the_seed_design_is_validated():
    ok = SweepConfig(
        base="debug-finetune",
        space={"data.num_classes": {"grid": [4, 8]}},
        pretrain_seeds=2,
        finetune_seeds=3,
        hypotheses=[
            {"claim": "8 beat 4", "better": {"data.num_classes": 8}, "worse": {"data.num_classes": 4}}
        ],
    )
    ok.validate()
    assert ok.design_space()["pretrain.seed"] == {"grid": [0, 1]}
    assert ok.design_space()["finetune.seed"] == {"grid": [0, 1, 2]}
    bad = [
        (
            dict(space={"finetune.seed": {"grid": [0, 1]}}, finetune_seeds=2),
            r"^space.finetune.seed: the seed design",
        ),
        (
            dict(space={"data.num_classes": {"choice": [4, 8]}}, search="random", finetune_seeds=2),
            r"^search: got",
        ),
        (
            dict(space={"data.num_classes": {"grid": [4]}}, hypotheses=[{"claim": "x", "better": {}}]),
            r"^hypotheses\[0\]: a hypothesis needs a seed design",
        ),
        (
            dict(
                space={"data.num_classes": {"grid": [4]}},
                finetune_seeds=2,
                hypotheses=[{"claim": "x", "better": {"data.seed": 1}}],
            ),
            r"^hypotheses\[0\].better: 'data.seed'",
        ),
        (
            dict(
                space={"data.num_classes": {"grid": [4]}},
                finetune_seeds=2,
                hypotheses=[{"claim": "x", "better": {"data.num_classes": 5}}],
            ),
            r"is not in the space",
        ),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            SweepConfig(base="debug-finetune", **fields).validate()


def test_one_verdict_per_target_when_the_hypothesis_does_not_name_it():
    trials, scratch = records({0.01: 0.0, 0.1: 0.15}, pretrain_sd=0.01)
    fashion = [
        {
            **t,
            "params": {**t["params"], "finetune.dataset": "fashion"},
            "metrics": {
                "finetune_top1": t["metrics"]["finetune_top1"]
                - (0.15 if t["params"]["data.delta"] == 0.1 else 0.0)
            },
        }
        for t in trials
    ]
    digits = [{**t, "params": {**t["params"], "finetune.dataset": "digits"}} for t in trials]
    arms = [
        {**s, "params": {**s["params"], "finetune.dataset": d}}
        for s in scratch
        for d in ("digits", "fashion")
    ]
    paired = effects.paired_effects(digits + fashion, arms, [*SWEPT, "finetune.dataset"], "finetune_top1")
    out = effects.verdicts(
        {"claim": "0.1 beats 0.01", "better": {"data.delta": 0.1}, "worse": {"data.delta": 0.01}}, paired
    )
    assert [(v["context"], v["verdict"]) for v in out] == [
        ("finetune.dataset=digits", "held"),
        ("finetune.dataset=fashion", "not resolved"),
    ]


def test_a_weights_axis_compares_weight_sources():
    from fdsl.platform.tune.sweep_config import seeded_weights, trial_overrides
    from fdsl.sweeps import check_sweep

    ok = SweepConfig(
        base="laptop-dino",
        finetune_seeds=3,
        space={"weights": {"grid": ["scratch", "timm:test_vit"]}, "finetune.lr": {"grid": [1e-3]}},
        hypotheses=[
            {
                "claim": "timm beats scratch",
                "better": {"weights": "timm:test_vit"},
                "worse": {"weights": "scratch"},
            }
        ],
    )
    check_sweep(ok)
    assert ok.finetunes_only and "pretrain.seed" not in ok.design_space()
    assert trial_overrides({"weights": "scratch", "finetune.seed": 1}) == ["finetune.seed=1"]
    # pre-training seeds of a weight source: {seed} names each run, and the effect's interval is over them
    runs = SweepConfig(base="laptop-dino", pretrain_seeds=2, finetune_seeds=2,
                       space={"weights": {"grid": ["runs/dino-s{seed}", "runs/va-s{seed}"]}})
    runs.validate()
    assert runs.design_space()["pretrain.seed"] == {"grid": [0, 1]}
    assert seeded_weights("runs/dino-s{seed}", {"pretrain.seed": 1, "finetune.seed": 0}) == "runs/dino-s1"
    assert seeded_weights("scratch", {"finetune.seed": 0}) == "scratch"
    with pytest.raises(ValueError, match=r"^pretrain_seeds: got 2 with weights 'runs/dino', expected 0"):
        SweepConfig(base="laptop-dino", pretrain_seeds=2, finetune_seeds=2,
                    space={"weights": {"grid": ["runs/dino", "runs/va-s{seed}"]}}).validate()
    with pytest.raises(ValueError, match=r"^space.weights: a weights axis with weights='scratch'"):
        check_sweep(
            SweepConfig(base="laptop-dino", weights="scratch", space={"weights": {"grid": ["scratch"]}})
        )
    with pytest.raises(ValueError, match=r"^space.data.delta: a sweep with weights=''"):
        check_sweep(
            SweepConfig(
                base="laptop-onepfrac",
                space={"weights": {"grid": ["scratch"]}, "data.delta": {"grid": [0.1]}},
            )
        )
