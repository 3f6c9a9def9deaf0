"""fdsl from Python (a notebook, a script): the CLI's commands as functions with typed results.

    import fdsl

    data = fdsl.generate("laptop-visualatom", "runs/nb/data")
    run = fdsl.pretrain("laptop-visualatom", data.path, "runs/nb/pretrain", ["pretrain.max_steps=300"])
    tuned = fdsl.finetune("laptop-visualatom", run.weights, "runs/nb/ft", dataset="digits")
    print(tuned.top1, tuned.baselines)

Every function takes a preset name or an `Experiment` (`fdsl.experiment(...)` builds one) and the
same `key=value` overrides as `--set`; a bad value raises ValueError naming the field. The first
call starts one local Ray (or joins `address`); later calls reuse it, so a notebook pays Ray's
start-up once (`fdsl.shutdown()` ends it). `import fdsl` itself imports neither Ray nor torch: the
functions load this module on first use.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import ray

from fdsl.config import apply_overrides
from fdsl.experiment import Experiment
from fdsl.platform import tracking as _tracking
from fdsl.platform.connect import connect
from fdsl.platform.data.synthesis import generate as _generate
from fdsl.platform.train.finetune import finetune as _finetune
from fdsl.platform.train.pretrain import pretrain as _pretrain
from fdsl.platform.train.ssl import ssl as _ssl
from fdsl.platform.tune.sweep import run_sweep
from fdsl.presets import get_preset
from fdsl.sweeps import check_sweep, get_sweep, sweep_label

__all__ = ["DataSet", "FineTuning", "Run", "SweepResult", "experiment", "finetune", "generate", "pretrain",
           "shutdown", "ssl", "sweep", "tracking"]

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A generated data set folder."""

    path: Path
    rows: int
    num_classes: int
    fingerprint: str
    """Equal for equal data sets, however they were rendered."""
    seconds: float


@dataclasses.dataclass(frozen=True)
class Run:
    """A pre-training or SSL run folder and its exported weights."""

    path: Path
    weights: Path
    steps: int
    loss: float | None
    """The last step's loss (pre-training), or the mean of the last tenth of the steps (SSL)."""
    seconds: float
    knn_top1: float | None = None
    """SSL only: the teacher's k-NN top-1 on the val split (`knn.json`)."""


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """A fine-tuning run folder and its figures (metrics.json has the rest)."""

    path: Path
    top1: float
    top5: float
    baselines: dict[str, float]
    """The raw-pixel baselines on the same labelled subset and val split (logistic regression, 1-NN)."""
    seconds: float


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A sweep folder: its report, and each setting's figures (with a seed design: the effect over
    scratch and its interval) and the verdicts of its hypotheses."""

    path: Path
    report: Path
    trials: int
    errors: int
    settings: list[dict]
    seconds: float


def experiment(preset: str | Experiment, overrides: Sequence[str] = ()) -> Experiment:
    """The validated experiment of a preset name (or a copy of an `Experiment`) with overrides."""
    if isinstance(preset, Experiment):
        return apply_overrides(copy.deepcopy(preset), overrides)
    return get_preset(preset, overrides)


def generate(preset: str | Experiment, out: PathLike, overrides: Sequence[str] = (), *,
             address: str | None = None) -> DataSet:
    """Render the preset's data set into `out` (resumed if partial, verified if complete)."""
    connect(address)
    result = _generate(experiment(preset, overrides), out, log=lambda *_: None)
    manifest = result.manifest
    return DataSet(Path(result.directory), int(manifest["num_rows"]), int(manifest["num_classes"]),
                   manifest["fingerprint"], result.seconds)


def pretrain(preset: str | Experiment, data: PathLike, out: PathLike, overrides: Sequence[str] = (), *,
             address: str | None = None) -> Run:
    """Pre-train on `data` (a generated folder, or "stream" to render on the fly) into `out`."""
    connect(address)
    summary = _pretrain(experiment(preset, overrides), str(data), out)
    return Run(Path(summary["run_dir"]), Path(summary["model"]), int(summary["steps"]), summary["loss"],
               summary["seconds"])


def ssl(preset: str | Experiment, out: PathLike, overrides: Sequence[str] = (), *, dataset: str | None = None,
        address: str | None = None) -> Run:
    """DINO on the training images of `dataset` (default: the preset's `ssl.dataset`) into `out`."""
    connect(address)
    summary = _ssl(experiment(preset, overrides), dataset, out)
    return Run(Path(summary["run_dir"]), Path(summary["model"]), int(summary["steps"]), summary["final_loss"],
               summary["seconds"], summary["knn_top1"])


def finetune(preset: str | Experiment, weights: PathLike | Run, out: PathLike, overrides: Sequence[str] = (),
             *, dataset: str | None = None, address: str | None = None) -> FineTuning:
    """Fine-tune `weights` (a `Run`, a run folder, "scratch" or "timm:NAME") on `dataset` (default:
    the preset's `finetune.dataset`) into `out`."""
    connect(address)
    source = str(weights.path if isinstance(weights, Run) else weights)
    summary = _finetune(experiment(preset, overrides), source, dataset, out)
    base = summary.get("baselines", {})
    baselines = {k: base[k] for k in ("logreg_top1", "knn1_top1") if k in base}
    return FineTuning(Path(summary["run_dir"]), summary["finetune_top1"], summary["finetune_top5"], baselines,
                      summary["wall_seconds"])


def sweep(name: str, out: PathLike, overrides: Sequence[str] = (), *, resume: bool = False,
          address: str | None = None) -> SweepResult:
    """Run a named sweep or a sweep file (`.yaml`/`.json`) into `out`, then write its report."""
    config = get_sweep(name, overrides)
    summary = run_sweep(config, sweep_label(name), out, check_sweep(config), resume=resume, address=address)
    return SweepResult(Path(summary["sweep_dir"]), Path(summary["report"]), summary["trials"],
                       summary["errors"], summary["settings"], summary["seconds"])


def tracking(uri: str | None = None, *, enabled: bool = True) -> None:
    """Where this process's runs are logged (MLflow, docs/tracking.md): `uri` (a server or
    sqlite:///PATH; None: MLFLOW_TRACKING_URI, else runs/mlflow.db in the working directory), or
    nowhere with `enabled=False`. Tracking is on by default."""
    _tracking.configure(uri, enabled=enabled)


def shutdown() -> None:
    """End the Ray this process started (the next call starts a new one)."""
    if ray.is_initialized():
        ray.shutdown()
