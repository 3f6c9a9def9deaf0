"""What a sweep is: a search space over experiment fields, its search and its scheduler.

A space maps a dotted experiment field (`data.num_classes`, `pretrain.lr`, `finetune.lr`, ...) to
one declarative spec, turned into Ray Tune objects only when the sweep runs:

    {"grid": [4, 8]}           every value (grid search; with random search: a choice)
    {"choice": ["a", "b"]}     one of the values
    {"uniform": [lo, hi]}      float in [lo, hi]
    {"loguniform": [lo, hi]}   float in [lo, hi], uniform in log space
    {"randint": [lo, hi]}      integer in [lo, hi) (Ray Tune's convention)

`validate()` checks the sweep's own fields; `check_space(base)` checks every parameter against the
base experiment before any trial starts: an unknown field, an empty range, or a value the generator
or trainer rejects fails there, naming the parameter. Nothing in this module imports Ray.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Literal

from fdsl.config import Config, apply_overrides, leaf_paths

PRETRAIN_SEED, FINETUNE_SEED = "pretrain.seed", "finetune.seed"
WEIGHTS_AXIS = "weights"
"""A space key that is no experiment field: the weights a fine-tuning sweep's trials fine-tune (one
axis of weight sources: run folders, an SSL run, `scratch`, `timm:<name>`)."""
SEED_FIELD = "{seed}"
"""In a fine-tuning sweep's weights, stands for the pre-training seed: `runs/dino-s{seed}` with
pretrain_seeds=3 names three runs of one weight source, and its effect's interval is over them."""
DESIGN_SEEDS = (PRETRAIN_SEED, "data.seed", FINETUNE_SEED)
"""Seeds a seed design sets (data.seed follows pretrain.seed: a pre-training run is a data draw too)."""
TRIAL_METRICS = ("finetune_top1", "finetune_top5", "finetune_loss", "train_loss")
"""What every trial reports to Tune after each fine-tuning evaluation: the metrics a sweep can rank by."""
SPEC_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclasses.dataclass
class SweepConfig(Config):
    """A Ray Tune sweep: trials = (generate or reuse data set) -> pre-train -> fine-tune, or with
    `weights` fine-tune only. A `*.seed` parameter repeats each setting with paired seeds: the report
    then ranks settings by their mean and std over the seeds."""

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
    trial_resource: str = ""
    """Custom Ray resource each trial holds one unit of (e.g. "train_gpu": trials run on the training
    pool's nodes, as many at once as it has units); empty: any node."""
    max_failures: int = 0
    """Times Tune restarts a trial that failed (its process or node died, or it raised) before
    marking it failed; a restarted trial runs from its beginning."""
    weights: str = ""
    """'' : every trial generates (or reuses) its data set and pre-trains. Else every trial only
    fine-tunes these weights (a `fdsl pretrain` / `fdsl ssl` run folder, `scratch` or `timm:<name>`),
    and the space holds finetune.* fields only: a fine-tuning sweep."""
    pretrain_seeds: int = 0
    """Seed design: each setting is pre-trained this many times, run s with data.seed = pretrain.seed
    = s (a new data draw and training run); the effect's interval is over these runs. 0: no design."""
    finetune_seeds: int = 0
    """Seed design: each pre-training run is fine-tuned with finetune.seed 0..N-1, and a scratch arm
    (weights=scratch) runs once per fine-tuning seed: effects are paired by it. 0: no design."""
    hypotheses: list[dict] = dataclasses.field(default_factory=list)
    """Claims the report gives a verdict on: {"claim": text, "source": paper, "better": {param: value},
    "worse": {param: value}} (better beats worse), or without "worse": better beats scratch."""

    def validate(self) -> None:
        super().validate()
        self._check_choice("metric", TRIAL_METRICS)
        self._check_choice("mode", ["max", "min"])
        self._check_choice("search", ["grid", "random", "optuna"])
        self._check_choice("scheduler", ["fifo", "asha"])
        self._check_range("num_samples", 1, 100_000)
        self._check_range("max_concurrent_trials", 1, 10_000)
        self._check_range("grace_period", 1, 10_000)
        self._check_range("seed", 0, 2**31 - 1)
        self._check_resource_name("trial_resource")
        self._check_range("max_failures", 0, 1000)
        self._check_range("pretrain_seeds", 0, 1000)
        self._check_range("finetune_seeds", 0, 1000)
        if not self.space:
            raise ValueError("space: got an empty search space, expected at least one parameter")
        if self.designed:
            taken = [p for p in self.space if p in DESIGN_SEEDS]
            if taken:
                raise ValueError(f"space.{taken[0]}: the seed design (pretrain_seeds, finetune_seeds) "
                                 "sets the seeds; remove it from the space")
            if self.search != "grid":
                raise ValueError(f"search: got {self.search!r} with a seed design, expected 'grid' (every "
                                 "setting runs with every seed)")
            untemplated = [w for w in self.weight_sources() if SEED_FIELD not in w]
            if self.finetunes_only and self.pretrain_seeds and untemplated:
                raise ValueError(f"pretrain_seeds: got {self.pretrain_seeds} with weights "
                                 f"{untemplated[0]!r}, expected 0 (a fine-tuning sweep pre-trains nothing), "
                                 f"or weights that name each pre-training seed's run with {SEED_FIELD} "
                                 f"(e.g. runs/dino-s{SEED_FIELD})")
        for i, claim in enumerate(self.hypotheses):
            self._check_hypothesis(i, claim)

    @property
    def finetunes_only(self) -> bool:
        """Whether trials only fine-tune (fixed `weights`, or a `weights` axis in the space)."""
        return bool(self.weights) or WEIGHTS_AXIS in self.space

    def weight_sources(self) -> list[str]:
        """The weights a fine-tuning sweep's trials fine-tune: `weights`, or the values of its axis."""
        if self.weights:
            return [self.weights]
        spec = self.space.get(WEIGHTS_AXIS)
        return list(next(iter(spec.values()))) if isinstance(spec, dict) and spec else []

    @property
    def designed(self) -> bool:
        """Whether the sweep has a seed design (and so a scratch arm and effects over scratch)."""
        return bool(self.pretrain_seeds or self.finetune_seeds)

    def design_space(self) -> dict[str, dict[str, list]]:
        """The space with the design's seed axes added (what Tune searches)."""
        space = dict(self.space)
        if self.pretrain_seeds:  # a fine-tuning sweep's: which run each {seed} weights names
            space[PRETRAIN_SEED] = {"grid": list(range(self.pretrain_seeds))}
        if self.finetune_seeds:
            space[FINETUNE_SEED] = {"grid": list(range(self.finetune_seeds))}
        return space

    def _check_hypothesis(self, i: int, claim) -> None:
        where = f"hypotheses[{i}]"
        if not isinstance(claim, dict) or not isinstance(claim.get("claim"), str) or not claim["claim"]:
            raise ValueError(f"{where}: got {claim!r}, expected {{'claim': text, 'better': {{param: value}}, "
                             "'worse': {param: value} (optional), 'source': text (optional)}")
        unknown = set(claim) - {"claim", "better", "worse", "source"}
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}, expected claim, better, worse, "
                             "source")
        if not self.designed:
            raise ValueError(f"{where}: a hypothesis needs a seed design (set finetune_seeds and/or "
                             "pretrain_seeds): its verdict rests on paired seeds")
        for side in ("better", "worse"):
            if side not in claim:
                if side == "better":
                    raise ValueError(f"{where}.better: missing, expected {{param: value}} of a swept setting")
                continue
            picked = claim[side]
            if not isinstance(picked, dict) or not picked:
                raise ValueError(f"{where}.{side}: got {picked!r}, expected {{param: value}} of a swept "
                                 "setting")
            for param, value in picked.items():
                spec = self.space.get(param)
                if spec is None:
                    raise ValueError(f"{where}.{side}: {param!r} is not swept, expected one of "
                                     f"{sorted(self.space)}")
                kind, values = next(iter(spec.items()))
                if kind in ("grid", "choice") and value not in values:
                    raise ValueError(f"{where}.{side}: {param}={value!r} is not in the space's {values}")

    def check_space(self, base) -> None:
        """Every parameter of the space against `base`, the experiment the trials start from (the
        `base` preset with `overrides`): ValueError naming the parameter and what is wrong."""
        known = leaf_paths(base)
        for param, spec in self.space.items():
            if param == WEIGHTS_AXIS:
                _check_weights_axis(spec, self)
                continue
            _check_param(param, spec, known, self)
            for value in spec_values(spec):
                try:
                    apply_overrides(copy.deepcopy(base), [f"{param}={value}"])
                except ValueError as err:
                    raise ValueError(f"space.{param}: value {value!r} is rejected: {err}") from None


def _check_weights_axis(spec: Any, sweep: SweepConfig) -> None:
    if sweep.weights:
        raise ValueError(f"space.weights: a weights axis with weights={sweep.weights!r}, expected one of "
                         "the two: set weights='' to sweep weight sources")
    if not (isinstance(spec, dict) and list(spec) in (["grid"], ["choice"]) and spec[next(iter(spec))]
            and all(isinstance(w, str) and w for w in spec[next(iter(spec))])):
        raise ValueError(f"space.weights: got {spec!r}, expected {{'grid': [weights, ...]}} of run folders, "
                         "'scratch' or 'timm:<name>'")


def _check_param(param: str, spec: Any, known: dict, sweep: SweepConfig) -> None:
    if sweep.finetunes_only and not param.startswith("finetune."):
        raise ValueError(f"space.{param}: a sweep with weights={sweep.weights!r} only fine-tunes, expected "
                         "finetune.* parameters (or weights='' to generate and pre-train in every trial)")
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
    """Trials a grid sweep runs (product of grid sizes x num_samples, seed design included)."""
    size = sweep.num_samples
    for spec in sweep.design_space().values():
        kind, values = next(iter(spec.items()))
        if kind == "grid":
            size *= len(values)
    return size


def seeded_weights(weights: str, params: dict[str, Any]) -> str:
    """`weights` with {seed} replaced by the trial's pre-training seed (unchanged without one)."""
    return weights.replace(SEED_FIELD, str(params[PRETRAIN_SEED])) if SEED_FIELD in weights else weights


def trial_overrides(params: dict[str, Any], designed: bool = False) -> list[str]:
    """`key=value` strings of one trial's sampled parameters, in a stable order; in a seed design
    (`designed`) the pre-training seed also seeds the data draw."""
    if designed and PRETRAIN_SEED in params:
        params = {**params, "data.seed": params[PRETRAIN_SEED]}
    return [f"{k}={v}" for k, v in sorted(params.items()) if k != WEIGHTS_AXIS]


# --- the registry ---------------------------------------------------------------------------------
