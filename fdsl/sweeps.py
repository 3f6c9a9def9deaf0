"""Named sweeps: functions that return a `SweepConfig` (a search space over experiment fields).

    fdsl sweep debug-variety --out runs/sweeps/debug

A sweep is a search space over dotted experiment fields (`data.num_classes`, `finetune.lr`, ...);
its format is `fdsl.platform.tune.sweep_config`'s. `get_sweep` checks every parameter
against the base preset before any trial starts (`check_sweep`). Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

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


SWEEP_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def is_sweep_file(name: str) -> bool:
    """Whether `fdsl sweep NAME` names a sweep file rather than a registered sweep."""
    return name.endswith(SWEEP_FILE_SUFFIXES)


def sweep_label(name: str) -> str:
    """The name a sweep folder records: a registered sweep's, or a sweep file's stem."""
    return Path(name).stem if is_sweep_file(name) else name


def load_sweep_file(path: str) -> SweepConfig:
    """A sweep from a YAML or JSON file holding SweepConfig's fields (base, space, seeds, hypotheses,
    search, ...), read with yaml.safe_load and checked like a shipped sweep."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such sweep file (a .yaml/.yml/.json file of SweepConfig fields)")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not YAML/JSON ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: got {type(data).__name__}, expected a mapping of sweep fields "
                         "(base, space, pretrain_seeds, finetune_seeds, hypotheses, ...)")
    try:
        return SweepConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def get_sweep(name: str, overrides: Iterable[str] = ()) -> SweepConfig:
    """The validated sweep `name` (a registered sweep, or a .yaml/.json sweep file), with `key=value`
    overrides of its scalar fields."""
    sweep = load_sweep_file(name) if is_sweep_file(name) else SWEEPS.get(name)()
    sweep = apply_overrides(sweep, overrides)
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


# --- laptop replications of published ablations (docs/replications.md) -------------------------------
# Each is one command on a 2-core machine (<= 30 minutes): 3 settings, each pre-trained 3 times
# (data.seed = pretrain.seed = 0, 1, 2: the interval is over these runs, t with 2 degrees of
# freedom), every run fine-tuned with 3 seeds on digits and on Fashion-MNIST (10 labelled images a
# class), a scratch arm per target and seed, and the effect over scratch. 1,500 pre-training steps
# (half the laptop presets' 3,000, to fit the time; fixed before any replication ran). The spread
# that sized it: benchmarks/fdsl_effect.py's per-seed effects, 3-6 points of std over fine-tuning
# seeds. The swept parameter means what it means in the paper.
_TARGETS = {"finetune.dataset": {"grid": ["digits", "idx:/usr/share/datasets/fashion-mnist"]}}
_REPLICATION = dict(overrides=["pretrain.max_steps=1500"], pretrain_seeds=3, finetune_seeds=3,
                    search="grid", scheduler="fifo")


@sweep("replicate-onepfrac-delta")
def replicate_onepfrac_delta() -> SweepConfig:
    """1p-frac's Delta (Nakamura et al. ECCV'24): 0.01 / 0.05 / 0.1, the multiplicative perturbation."""
    paper = ("1p-frac, Nakamura et al. ECCV'24: ViT-Tiny on CIFAR-100 84.2 % at 0.1, 83.0 % at 0.05, "
             "19.9 % at 0.01")
    return SweepConfig(
        base="laptop-onepfrac", space={"data.delta": {"grid": [0.01, 0.05, 0.1]}, **_TARGETS},
        hypotheses=[
            {"claim": "Delta 0.1 pre-trains better than Delta 0.01 (0.01 collapses)", "source": paper,
             "better": {"data.delta": 0.1}, "worse": {"data.delta": 0.01}},
            {"claim": "Delta 0.1 pre-trains better than Delta 0.05", "source": paper,
             "better": {"data.delta": 0.1}, "worse": {"data.delta": 0.05}},
            {"claim": "Delta 0.1 beats scratch", "source": paper, "better": {"data.delta": 0.1}}],
        **_REPLICATION)


@sweep("replicate-fractaldb-categories")
def replicate_fractaldb_categories() -> SweepConfig:
    """FractalDB's number of categories (Kataoka et al. ACCV'20): 8 / 32 / 128 classes of 64 instances."""
    paper = "FractalDB, Kataoka et al. ACCV'20: fine-tuning accuracy rises with the number of categories"
    return SweepConfig(
        base="laptop-fractaldb", space={"data.num_classes": {"grid": [8, 32, 128]}, **_TARGETS},
        hypotheses=[
            {"claim": "128 categories pre-train better than 8", "source": paper,
             "better": {"data.num_classes": 128}, "worse": {"data.num_classes": 8}},
            {"claim": "32 categories pre-train better than 8", "source": paper,
             "better": {"data.num_classes": 32}, "worse": {"data.num_classes": 8}}],
        **_REPLICATION)


@sweep("replicate-rcdb-difficulty")
def replicate_rcdb_difficulty() -> SweepConfig:
    """RCDB task difficulty (Kataoka et al. CVPR'22): at most 10 / 50 / 200 polygons per image."""
    paper = ("RCDB, Kataoka et al. CVPR'22: increasing the difficulty of the pre-training task generally "
             "leads to better fine-tuning accuracy")
    return SweepConfig(
        base="laptop-rcdb", space={"data.num_lines_max": {"grid": [10, 50, 200]}, **_TARGETS},
        hypotheses=[
            {"claim": "up to 200 polygons pre-train better than up to 10", "source": paper,
             "better": {"data.num_lines_max": 200}, "worse": {"data.num_lines_max": 10}}],
        # the design's, plus val top-1 at epochs 50 and 100 instead of every 10: the verdicts read the
        # last epoch's, and 10,000 Fashion-MNIST val images every 10 epochs took ~40 % of a fine-tuning
        # run (31.5 minutes measured with them, over the 30-minute budget)
        **{**_REPLICATION, "overrides": [*_REPLICATION["overrides"], "finetune.eval_every=50"]})


@sweep("quickstart")
def quickstart() -> SweepConfig:
    """The quickstart's fine-tuning sweep: laptop-visualatom, lr 5e-4 or 2e-3 x paired seeds 0 and 1.

    `make quickstart` sets `weights` to the run it has just pre-trained (by hand:
    `fdsl sweep quickstart --out D --set weights=RUN`); with no weights every trial pre-trains.
    """
    return SweepConfig(base="laptop-visualatom", space={"finetune.lr": {"grid": [5e-4, 2e-3]},
                                                        "finetune.seed": {"grid": [0, 1]}},
                       search="grid", scheduler="fifo")
