"""What a trainer's driver hands its workers: one typed, frozen object per run.

The driver checks everything first (`prepare_run`, `prepare_finetune`, `prepare_ssl`) and returns
a plan; `run.fit` gives it to Ray Train as it is (`train_loop_config={"plan": plan}`: Ray pickles
the dataclasses) and every worker reads typed fields. The experiment's sections travel as the
objects `--set` built: no dict round trip, no second validation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fdsl.platform.train.config import FinetuneConfig, PretrainConfig, SSLConfig

PLAN = "plan"
"""The key of the plan in Ray Train's `train_loop_config`."""


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the driver's memory check needs: the model's shape and the side of each view a step sees."""

    shape: dict[str, int]
    views: tuple[int, ...]
    stream_rows: int = 0
    """Rows of the run's seeded training stream (`streams.id_rows`: ids on the driver and in the
    object store); 0 for a set read anew each pass."""


@dataclasses.dataclass(frozen=True)
class Weights:
    """Fine-tuning's `--weights`, checked on the driver (`weights.resolve_weights`)."""

    kind: Literal["run", "scratch", "timm"]
    source: str
    """What the user passed."""
    architecture: str
    img_size: int
    patch_size: int | None
    file: str | None = None
    num_classes: int | None = None
    """Classes of the weights' head (None for scratch and timm)."""
    weights_img_size: int | None = None
    """The input size a run's weights were trained at (timm resamples the position embedding)."""
    mean: list[float] | None = None
    """Input normalisation the weights were trained with; None: the model's timm default."""
    std: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PretrainPlan:
    cfg: PretrainConfig
    num_classes: int
    num_images: int
    run_dir: str | None
    """No metrics files and no export when None (tests)."""
    memory: Memory


@dataclasses.dataclass(frozen=True)
class FinetunePlan:
    cfg: FinetuneConfig
    weights: Weights
    num_classes: int
    num_train: int
    run_dir: str | None
    memory: Memory
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Merged into metrics.json by rank 0 (target, weights, head, baselines, loader probe)."""


@dataclasses.dataclass(frozen=True)
class SSLModel:
    """The backbone DINO trains and the crops it sees."""

    architecture: str
    img_size: int
    patch_size: int
    local_size: int
    mean: list[float]
    std: list[float]


@dataclasses.dataclass(frozen=True)
class SSLPlan:
    cfg: SSLConfig
    model: SSLModel
    num_train: int
    run_dir: str | None
    memory: Memory
