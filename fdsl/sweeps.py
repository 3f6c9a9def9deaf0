"""Named sweeps: functions that return a `SweepConfig` (a search space over experiment fields).

    fdsl sweep debug-variety --out runs/sweeps/debug

A space maps a dotted experiment field (`data.num_classes`, `pretrain.lr`, `finetune.lr`, ...) to
one declarative spec, turned into Ray Tune objects only when the sweep runs:

    {"grid": [4, 8]}           every value (grid search; with random search: a choice)
    {"choice": ["a", "b"]}     one of the values
    {"uniform": [lo, hi]}      float in [lo, hi]
    {"loguniform": [lo, hi]}   float in [lo, hi], uniform in log space
    {"randint": [lo, hi]}      integer in [lo, hi) (Ray Tune's convention)

`validate()` checks every parameter against the base preset before any trial starts: an unknown
field, an empty range, or a value the generator or trainer rejects fails here, naming the parameter.
Nothing in this module imports Ray.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

from fdsl.config import Config, apply_overrides, leaf_paths
from fdsl.presets import get_preset

SPEC_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
_SWEEPS: dict[str, Callable[[], SweepConfig]] = {}


@dataclasses.dataclass
class SweepConfig(Config):
    """A Ray Tune sweep: trials = (generate or reuse data set) -> pre-train -> fine-tune."""

    base: str = "debug-vit"
    """Preset every trial starts from; the space overrides its fields."""
    space: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)
    """{dotted experiment field: {kind: values}}, kinds: grid, choice, uniform, loguniform, randint."""
    overrides: list[str] = dataclasses.field(default_factory=list)
    """Fixed `key=value` overrides applied to the base preset before the space."""
    metric: str = "finetune_top1"
    """Metric Tune optimises (reported by every trial)."""
    mode: Literal["max", "min"] = "max"
    """Whether the metric is maximised or minimised."""
    search: Literal["grid", "random", "optuna"] = "grid"
    """Search algorithm: grid (all grid values), random sampling, or Optuna's TPE."""
    scheduler: Literal["fifo", "asha"] = "fifo"
    """Trial scheduler: run every trial to the end (fifo) or stop weak ones early (ASHA)."""
    num_samples: int = 1
    """Trials to sample (random/optuna); with grid search, repeats of the whole grid."""
    max_concurrent_trials: int = 1
    """Trials running at once (each trial's Train workers must fit in the cluster's CPUs/GPUs)."""
    grace_period: int = 1
    """ASHA: fine-tuning epochs every trial runs before it can be stopped."""
    seed: int = 0
    """Seed of the search algorithm (Optuna/random)."""

    def validate(self) -> None:
        super().validate()
        self._check_choice("mode", ["max", "min"])
        self._check_choice("search", ["grid", "random", "optuna"])
        self._check_choice("scheduler", ["fifo", "asha"])
        self._check_range("num_samples", 1, 100_000)
        self._check_range("max_concurrent_trials", 1, 10_000)
        self._check_range("grace_period", 1, 10_000)
        if not self.space:
            raise ValueError("space: got an empty search space, expected at least one parameter")
        base = get_preset(self.base, self.overrides)
        known = leaf_paths(base)
        for param, spec in self.space.items():
            _check_param(param, spec, known, self)
            for value in spec_values(spec):
                try:
                    apply_overrides(get_preset(self.base, self.overrides), [f"{param}={value}"])
                except ValueError as err:
                    raise ValueError(f"space.{param}: value {value!r} is rejected: {err}") from None


def _check_param(param: str, spec: Any, known: dict, sweep: SweepConfig) -> None:
    if param not in known:
        fields = sorted(p for p in known if p.split(".")[0] in ("data", "pretrain", "finetune"))
        raise ValueError(f"space.{param}: unknown parameter, expected a field of preset "
                         f"{sweep.base!r} such as {fields[:6]}")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPEC_KINDS:
        raise ValueError(f"space.{param}: got {spec!r}, expected one of {{kind: values}} with kind in "
                         f"{list(SPEC_KINDS)}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"space.{param}: empty {kind}, expected at least one value")
    if kind in ("uniform", "loguniform", "randint"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
            raise ValueError(f"space.{param}: {kind} got {values!r}, expected [low, high]")
        lo, hi = values
        if not lo < hi or (kind == "loguniform" and lo <= 0):
            raise ValueError(f"space.{param}: empty range {kind}[{lo}, {hi}], expected low < high"
                             + (" and low > 0" if kind == "loguniform" else ""))
    if sweep.search == "grid" and kind != "grid":
        raise ValueError(f"space.{param}: {kind} needs search=random or optuna (grid search takes grid)")
    if sweep.search == "optuna" and kind == "grid":
        raise ValueError(f"space.{param}: Optuna cannot search a grid; use choice")


def spec_values(spec: dict[str, list]) -> list:
    """Values that stand for a spec in validation: all listed ones, or a range's ends."""
    kind, values = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        return list(values)
    lo, hi = values
    if kind == "randint":
        return [int(lo), int(hi) - 1]
    return [lo, hi] if kind == "uniform" else [lo, math.exp((math.log(lo) + math.log(hi)) / 2), hi]


def grid_size(sweep: SweepConfig) -> int:
    """Trials a grid sweep runs (product of grid sizes x num_samples)."""
    size = sweep.num_samples
    for spec in sweep.space.values():
        kind, values = next(iter(spec.items()))
        if kind == "grid":
            size *= len(values)
    return size


def trial_overrides(params: dict[str, Any]) -> list[str]:
    """`key=value` strings of one trial's sampled parameters, in a stable order."""
    return [f"{k}={v}" for k, v in sorted(params.items())]


# --- the registry ---------------------------------------------------------------------------------
def sweep(name: str):
    """Decorator: register a sweep function under `name`."""

    def wrap(fn: Callable[[], SweepConfig]) -> Callable[[], SweepConfig]:
        assert name not in _SWEEPS, f"sweep {name} registered twice"
        _SWEEPS[name] = fn
        return fn

    return wrap


def sweep_names() -> list[str]:
    return sorted(_SWEEPS)


def sweep_summary(name: str) -> str:
    return (_SWEEPS[name].__doc__ or "").strip().splitlines()[0]


def get_sweep(name: str, overrides: Iterable[str] = ()) -> SweepConfig:
    """The validated sweep `name`, with `key=value` overrides of its scalar fields."""
    if name not in _SWEEPS:
        raise ValueError(f"sweep: got {name!r}, expected one of {sweep_names()} (see `fdsl sweeps`)")
    return apply_overrides(_SWEEPS[name](), overrides)


# --- the shipped sweeps -----------------------------------------------------------------------------
_DEBUG_TRIAL = ["pretrain.max_steps=16", "pretrain.checkpoint_every=1000", "pretrain.augment_cpus=0.5",
                "pretrain.cpus_per_worker=0.45", "finetune.cpus_per_worker=0.45", "finetune.epochs=3",
                "finetune.samples_per_class=30", "data.num_instances=8"]
"""Shrinks a debug-finetune trial to about a minute here. On 2 CPUs the trial holds 0.1 and its two
Train workers 0.45 each, which leaves a whole CPU for any 1-CPU Ray Data task (with 0.5-CPU workers
such a task would wait forever)."""


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
    """2 trials for `make quickstart`: debug FractalDB with 4 or 8 classes, tiny ViT, digits."""
    return SweepConfig(base="debug-finetune", overrides=list(_DEBUG_TRIAL),
                       space={"data.num_classes": {"grid": [4, 8]}}, search="grid", scheduler="fifo")
