"""Sweeps: bad spaces fail before any trial; a real ASHA sweep on local Ray, killed and resumed."""

from __future__ import annotations

import pytest

from fdsl.platform.sweep import count_generations
from fdsl.sweeps import SweepConfig, get_sweep, sweep_names


def test_shipped_sweeps_validate():
    assert {"debug-variety", "fractaldb-variety", "visualatom-variety", "finetune-grid"} <= set(sweep_names())
    for name in sweep_names():
        get_sweep(name).validate()


@pytest.mark.parametrize("space,search,message", [
    ({"data.no_such_field": {"grid": [1]}}, "grid", r"space\.data\.no_such_field: unknown parameter"),
    ({"finetune.lr": {"grid": []}}, "grid", r"space\.finetune\.lr: empty grid"),
    ({"finetune.lr": {"loguniform": [0.1, 0.01]}}, "random", r"space\.finetune\.lr: empty range"),
    ({"data.num_classes": {"grid": [4, 0]}}, "grid",
     r"space\.data\.num_classes: value 0 is rejected: data\.num_classes: got 0"),
    ({"data.fill_rate": {"grid": [0.95]}}, "grid", r"space\.data\.fill_rate: value 0\.95 is rejected"),
    ({"finetune.lr": {"uniform": [0.001, 0.01]}}, "grid", r"needs search=random or optuna"),
])
def test_bad_spaces_fail_before_any_trial(space, search, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(base="debug-finetune", space=space, search=search).validate()


def test_bad_sweep_at_the_cli_exits_2(tmp_path):
    from conftest import run_fdsl

    res = run_fdsl("sweep", "no-such-sweep", "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "sweep: got 'no-such-sweep'" in res.stderr
    res = run_fdsl("sweep", "debug-variety", "--out", str(tmp_path / "s"), "--set", "num_samples=0")
    assert res.returncode == 2 and "num_samples: got 0" in res.stderr
    assert not (tmp_path / "s").exists()  # nothing started


def test_dataset_cache_hit_is_counted_once(tmp_path):
    """Two experiments with the same data parameters share one generation; the hit is verified."""
    import ray

    from fdsl.platform.sweep import ensure_dataset
    from fdsl.presets import get_preset

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        a = get_preset("debug-finetune", ["data.num_classes=4", "data.num_instances=4", "finetune.lr=0.001"])
        b = get_preset("debug-finetune", ["data.num_classes=4", "data.num_instances=4", "finetune.lr=0.01"])
        first, hit_a = ensure_dataset(a, tmp_path)
        second, hit_b = ensure_dataset(b, tmp_path)
        assert (hit_a, hit_b) == (False, True) and first == second
        assert count_generations(tmp_path) == 1
        shard = sorted(first.glob("shard-*.parquet"))[0]
        shard.write_bytes(shard.read_bytes()[:-10])  # a corrupt cache entry is repaired, not trusted
        third, hit_c = ensure_dataset(a, tmp_path)
        assert third == first and hit_c is False and count_generations(tmp_path) == 2
    finally:
        ray.shutdown()
