"""Named sweeps: functions that return a `SweepConfig` (a search space over experiment fields).

    fdsl sweep debug-variety --out runs/sweeps/debug

A sweep is a search space over dotted experiment fields (`data.num_classes`, `finetune.lr`, ...);
its format is `fdsl.platform.tune.sweep_config`'s. `get_sweep` checks every parameter
against the base preset before any trial starts (`check_sweep`). Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Iterable

from fdsl.config import Registry, apply_overrides
from fdsl.platform.tune.sweep_config import SweepConfig
from fdsl.presets import get_preset

SWEEPS = Registry("sweep", "see `fdsl sweeps`")
"""Named sweep functions; `@sweep(name)` registers one."""


sweep = SWEEPS.register


def sweep_names() -> list[str]:
    return SWEEPS.names()


def sweep_summary(name: str) -> str:
    return (SWEEPS.get(name).__doc__ or "").strip().splitlines()[0]


def get_sweep(name: str, overrides: Iterable[str] = ()) -> SweepConfig:
    """The validated sweep `name`, with `key=value` overrides of its scalar fields."""
    sweep = apply_overrides(SWEEPS.get(name)(), overrides)
    check_sweep(sweep)
    return sweep


def check_sweep(sweep: SweepConfig):
    """Validate `sweep` and its space against its base preset; returns the base experiment (the
    preset with the sweep's fixed overrides) that every trial starts from."""
    sweep.validate()
    base = get_preset(sweep.base, sweep.overrides)
    sweep.check_space(base)
    return base


# --- the shipped sweeps -----------------------------------------------------------------------------
_DEBUG_TRIAL = ["pretrain.max_steps=8", "pretrain.checkpoint_every=1000", "pretrain.augment_cpus=0.5",
                "pretrain.num_workers=0", "pretrain.use_deepspeed=false", "pretrain.zero_stage=0",
                "finetune.num_workers=0", "finetune.cpus_per_worker=0.9", "finetune.epochs=3",
                "finetune.samples_per_class=10", "data.num_instances=8"]
"""Shrinks a debug-finetune trial to well under a minute here: both trainers in Ray Train's local
mode (the loop in the trial itself, which then reserves finetune.cpus_per_worker, 0.9 of the 2 CPUs),
which leaves a whole CPU for any 1-CPU Ray Data task."""


@sweep("debug-variety")
def debug_variety() -> SweepConfig:
    """4 trials on 2 CPUs: FractalDB class count x fine-tune lr (2 data sets, each generated once), ASHA."""
    return SweepConfig(base="debug-finetune", overrides=list(_DEBUG_TRIAL),
                       space={"data.num_classes": {"grid": [4, 8]}, "finetune.lr": {"grid": [0.001, 0.003]}},
                       search="grid", scheduler="asha", grace_period=2)


@sweep("fractaldb-variety")
def fractaldb_variety() -> SweepConfig:
    """FractalDB variety (Kataoka et al.): classes, instances, filling rate, maps, parameter range; TPE."""
    return SweepConfig(
        base="vit-tiny-fractaldb-1k",
        space={"data.num_classes": {"choice": [100, 300, 1000]},
               "data.num_instances": {"choice": [100, 300, 1000]},
               "data.fill_rate": {"uniform": [0.05, 0.25]},
               "data.num_maps_max": {"randint": [3, 9]},
               "data.param_range": {"uniform": [0.6, 1.0]},
               "data.sampling": {"choice": ["search", "sigma"]}},
        search="optuna", scheduler="asha", num_samples=32, grace_period=5)


@sweep("visualatom-variety")
def visualatom_variety() -> SweepConfig:
    """VisualAtom variety (Takashima et al.): wave frequencies, vertices, orbits, radius; TPE."""
    return SweepConfig(
        base="vit-tiny-visualatom-1k",
        space={"data.wave1_max": {"randint": [4, 21]}, "data.wave2_max": {"randint": [4, 21]},
               "data.vertex_max": {"choice": [400, 700, 1000]},
               "data.num_lines_max": {"choice": [50, 100, 200]},
               "data.perlin_max": {"uniform": [1.0, 4.0]},
               "data.radius_max": {"choice": [30, 60]}},
        search="optuna", scheduler="asha", num_samples=32, grace_period=5)


@sweep("finetune-grid")
def finetune_grid() -> SweepConfig:
    """Fine-tuning settings on one data set: lr x weight decay x share of the target data (grid)."""
    return SweepConfig(
        base="vit-tiny-fractaldb-1k",
        space={"finetune.lr": {"grid": [0.003, 0.01, 0.03]},
               "finetune.weight_decay": {"grid": [1e-4, 5e-4]},
               "finetune.train_fraction": {"grid": [0.1, 1.0]}},
        search="grid", scheduler="fifo")


@sweep("quickstart")
def quickstart() -> SweepConfig:
    """The quickstart's fine-tuning sweep: laptop-visualatom, lr 5e-4 or 2e-3 x paired seeds 0 and 1.

    `make quickstart` sets `weights` to the run it has just pre-trained (by hand:
    `fdsl sweep quickstart --out D --set weights=RUN`); with no weights every trial pre-trains.
    """
    return SweepConfig(base="laptop-visualatom", space={"finetune.lr": {"grid": [5e-4, 2e-3]},
                                                        "finetune.seed": {"grid": [0, 1]}},
                       search="grid", scheduler="fifo")
