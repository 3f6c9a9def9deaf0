"""What a training run is: the three trainers' configs, built from the shared sections of
`fdsl.platform.train.sections` (plain dataclasses: no Ray, torch or timm at import):

    WorkersSection    Ray Train workers, augmentation tasks, restarts, seed        (all three)
    ScheduleSection   batch, length, optimiser numbers, warm-up + cosine, steps    (all three)
    LRSection         `lr`, the peak rate the optimizer applies                   (pretrain, finetune)
    BackboneSection   timm architecture, input and patch size, drop path          (all three)
    AugmentSection    DeiT augmentation: crop, flip, RandAugment, Mixup, erasing  (pretrain, finetune)
    PrecisionSection  precision and DeepSpeed ZeRO stage; `deepspeed_config()`    (pretrain, finetune)

`PretrainConfig`, `FinetuneConfig` and `SSLConfig` are the `pretrain`, `finetune` and `ssl` fields of
`Experiment`, overridden with `--set <section>.<field>=<value>`; a trainer redeclares a shared field
only to change its default.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from fdsl.config import Config, with_defaults
from fdsl.platform.train.sections import (
    OPTIMIZERS,
    AugmentSection,
    BackboneSection,
    LRSection,
    PrecisionSection,
    ScheduleSection,
    WorkersSection,
)

EXPERIMENT_FILE = "experiment.json"
"""The full experiment config of a run, in its run folder (what `--resume` continues)."""


# --- the three trainers' configs ------------------------------------------------------------------
@dataclasses.dataclass
@with_defaults(max_failures=3)
class PretrainConfig(PrecisionSection, AugmentSection, BackboneSection, LRSection, ScheduleSection,
                     WorkersSection):
    """Supervised pre-training of a timm model on a formula data set (Ray Train + DeepSpeed)."""

    norm_mean: float | None = None
    """Input normalisation mean, the same on the 3 channels, in [0, 1]; None: the model's timm default."""
    norm_std: float | None = None
    """Input normalisation std, the same on the 3 channels; None: the model's timm default."""
    grad_accum_steps: int = 1
    """Micro batches accumulated per optimizer step on each worker."""
    optimizer: str = "adamw"
    """timm optimizer name (`timm.optim.create_optimizer_v2`); no weight decay on biases and norms."""

    # -- data ingest
    shuffle: Literal["global", "local"] = "global"
    """"global": a full Ray Data random_shuffle per pass; "local": random block order + a buffer."""
    shuffle_buffer: int = 4096
    """Rows per worker in the local shuffle buffer (shuffle "local")."""
    preserve_order: bool = True
    """Keep Ray Data's row order into the workers: with the seeded shuffle and augmentation, a
    one-worker run is then bitwise reproducible; false lets blocks arrive as they finish."""
    min_pass_images: int = 2048
    """A data set smaller than this is held in the object store and streamed by seeded draws (one
    Ray Data pass for the whole run); a larger one is read and shuffled anew every pass."""

    # -- Ray Train
    checkpoint_every: int = 1000
    """Save a checkpoint (DeepSpeed model, optimizer, scheduler, step, RNG) every N optimizer steps."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    report_every: int = 100
    """Report metrics to Ray (and Tune) every N steps, besides checkpoints; metrics.jsonl gets every
    step. Ray Train collects reports every ~2 s: a report sooner than that waits for it."""

    def validate(self) -> None:
        super().validate()
        if (self.norm_mean is None) != (self.norm_std is None):
            raise ValueError(f"norm_std: got {self.norm_std!r} with norm_mean {self.norm_mean!r}, expected "
                             "both set or both None")
        if self.norm_mean is not None:
            self._check_range("norm_mean", 0.0, 1.0)
            self._check_range("norm_std", 1e-3, 1.0)
        self._check_range("grad_accum_steps", 1, 100_000)
        self._check_choice("shuffle", ["global", "local"])
        self._check_range("shuffle_buffer", 0, 10**8)
        self._check_range("min_pass_images", 1, 10**9)
        self._check_range("checkpoint_every", 1, 10**9)
        self._check_range("keep_checkpoints", 1, 1000)
        self._check_range("report_every", 1, 10**9)

    def pass_copies(self, num_images: int) -> int:
        """Copies of a data set of `num_images` in one Ray Data pass (see `min_pass_images`)."""
        return max(1, -(-self.min_pass_images // max(1, num_images)))


@dataclasses.dataclass
class TargetSection(Config):
    """The target set a fine-tuning or SSL run reads, and its low-data subset."""

    dataset: str = "digits"
    """Target set spec: digits, idx:PATH, cifar10:PATH, cifar100:PATH, imagefolder:PATH, parquet:PATH."""
    train_fraction: float = 1.0
    """Share of each class of the training split kept (low-data studies); 1 keeps all."""
    samples_per_class: int = 0
    """If > 0: keep this many training images per class instead of `train_fraction`."""

    def validate(self) -> None:
        super().validate()
        if not self.dataset:
            raise ValueError("dataset: got '', expected a target spec such as 'digits' or 'idx:PATH'")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction: got {self.train_fraction}, expected a value in (0, 1]")
        self._check_range("samples_per_class", 0, 10**9)


@dataclasses.dataclass
@with_defaults(model="", img_size=0, patch_size=0, epochs=100, global_batch_size=128, lr=0.01,
               weight_decay=1e-4, repeated_aug=1, randaugment="", crop_scale_min=0.35, mixup=0.0, cutmix=0.0,
               random_erasing=0.0, use_deepspeed=False, zero_stage=0, precision="fp32")
class FinetuneConfig(PrecisionSection, AugmentSection, BackboneSection, LRSection, ScheduleSection,
                     TargetSection, WorkersSection):
    """Supervised fine-tuning of pre-trained (or scratch) weights on a target set (Ray Train)."""

    linear_probe: bool = False
    """Train the classifier head only, the backbone frozen (a cheap signal for sweeps)."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """sgd (with momentum; the FDSL papers' small-set recipe) or adamw (DeiT / Gani et al.)."""
    momentum: float = 0.9
    """SGD momentum (ignored by adamw)."""
    nesterov: bool = False
    """SGD with Nesterov momentum (timm's "sgd", which the FDSL repositories' scripts use)."""
    loader_probe_images: int = 0
    """Images the driver pulls through the augmentation pipeline alone to measure loader images/s; 0 skips."""
    eval_every: int = 1
    """Evaluate (and report to Ray/Tune) every N epochs; the last epoch always is."""

    inherits_backbone = True
    max_zero_stage = 2  # the export reads full parameters (ZeRO-3 would need a gather)

    def validate(self) -> None:
        super().validate()
        self._check_range("epochs", 1, 10**6)
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_range("momentum", 0.0, 0.9999)
        self._check_range("loader_probe_images", 0, 10**8)
        self._check_range("eval_every", 1, 10**6)
        if self.augment_on != "cpu":  # its small sets augment in Ray Data tasks (streams.target_stream)
            raise ValueError(f"augment_on: got {self.augment_on!r}, expected 'cpu' for fine-tuning (the "
                             "device path is pre-training's)")


@dataclasses.dataclass
@with_defaults(model="", img_size=0, patch_size=0, epochs=200, min_lr=1e-6, warmup_lr=0.0, warmup_prefix=True,
               warmup_epochs=10.0, weight_decay=0.04, clip_grad=3.0, augment_batch_size=128,
               prefetch_batches=2)
class SSLConfig(BackboneSection, ScheduleSection, TargetSection, WorkersSection):
    """DINO self-distillation on the (unlabelled) training split of a target set (Ray Train). Its
    learning rate is `lr_base`, per 256 images, as DINO gives it; `ssl.lr` (its old name) is an alias."""

    RENAMED = {"lr": "lr_base"}

    lr_base: float = 5e-4
    """Peak learning rate per 256 images (DINO's convention, timm's `--lr-base`): the optimizer applies
    lr_base x global_batch_size / 256 at the end of warm-up."""

    # -- DINO head and loss
    out_dim: int = 1024
    """Prototypes of the projection head (Gani et al.: 1024; DINO: 65536)."""
    hidden_dim: int = 2048
    """Hidden width of the head's MLP."""
    bottleneck_dim: int = 256
    """Width before the weight-normalised last layer."""
    norm_last_layer: bool = True
    """Fix the norm of the last layer's weights (DINO's default; more stable)."""
    student_temp: float = 0.1
    """Student softmax temperature."""
    teacher_temp: float = 0.04
    """Teacher softmax temperature after warm-up (sharpening)."""
    warmup_teacher_temp: float = 0.04
    """Teacher temperature at epoch 0, raised linearly to teacher_temp."""
    warmup_teacher_temp_epochs: int = 0
    """Epochs of the teacher temperature warm-up."""
    center_momentum: float = 0.9
    """EMA momentum of the teacher-output centre (centering)."""
    centering: Literal["center", "sinkhorn"] = "center"
    """How the teacher's targets avoid collapse: "center" (DINO: subtract an EMA centre, then
    sharpen) or "sinkhorn" (DINOv2: Sinkhorn-Knopp, 3 iterations, spreads the batch evenly over the
    prototypes; robust to small batches and near-constant features at initialisation)."""
    momentum_teacher: float = 0.996
    """Teacher EMA momentum at step 0, raised to 1 on a cosine schedule."""
    koleo_weight: float = 0.0
    """Weight of DINOv2's KoLeo regulariser on the student's backbone features of the global crops
    (DINOv2: 0.1): it spreads a batch's features apart, against the collapse to one point; 0: off."""

    # -- multi-crop
    num_local_crops: int = 8
    """Small crops per image besides the 2 global ones (Gani et al.: 8)."""
    local_img_size: int = 0
    """Local crop side; 0: half of img_size (a multiple of patch_size)."""
    global_crop_scale_min: float = 0.4
    """Smallest area fraction of a global crop (the largest is 1)."""
    local_crop_scale_min: float = 0.05
    """Smallest area fraction of a local crop (DINO: 0.05; Gani et al. on CIFAR: 0.2)."""
    local_crop_scale_max: float = 0.4
    """Largest area fraction of a local crop."""
    hflip: float = 0.5
    """Horizontal flip probability of every crop."""
    color_jitter: float = 0.8
    """Probability of colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1)."""
    blur: float = 0.5
    """Gaussian blur probability (first global crop: 1, second: 0.1, locals: this)."""
    solarize: float = 0.2
    """Solarisation probability of the second global crop."""

    # -- schedule beyond ScheduleSection's
    weight_decay_end: float = 0.4
    """AdamW weight decay at the end (raised from weight_decay on a cosine schedule)."""
    freeze_last_layer_epochs: int = 1
    """Epochs during which the head's last layer gets no update (DINO)."""
    checkpoint_every: int = 10
    """Keep a checkpoint (student, teacher, centre, optimizer, schedule, RNG) every N epochs, the last
    two; `fdsl ssl --resume` continues from the newest."""

    inherits_backbone = True

    def peak_lr(self) -> float:
        return self.lr_base * self.global_batch_size / 256

    def validate(self) -> None:
        super().validate()
        self._check_range("lr_base", 0.0, 10.0)
        self._check_range("local_img_size", 0, 4096)
        self._check_range("out_dim", 2, 10**6)
        self._check_range("hidden_dim", 1, 10**5)
        self._check_range("bottleneck_dim", 1, 10**5)
        self._check_range("student_temp", 1e-4, 10.0)
        self._check_range("teacher_temp", 1e-4, 10.0)
        self._check_range("warmup_teacher_temp", 1e-4, 10.0)
        self._check_range("warmup_teacher_temp_epochs", 0, self.epochs)
        self._check_range("center_momentum", 0.0, 1.0)
        self._check_choice("centering", ["center", "sinkhorn"])
        self._check_range("momentum_teacher", 0.0, 1.0)
        self._check_range("num_local_crops", 0, 64)
        self._check_range("global_crop_scale_min", 0.01, 1.0)
        self._check_range("local_crop_scale_min", 0.01, 1.0)
        self._check_range("local_crop_scale_max", self.local_crop_scale_min, 1.0)
        for name in ("hflip", "color_jitter", "blur", "solarize"):
            self._check_range(name, 0.0, 1.0)
        self._check_range("epochs", 1, 10**6)
        self._check_range("global_batch_size", 2, 10_000_000)
        self._check_range("weight_decay_end", 0.0, 10.0)
        self._check_range("freeze_last_layer_epochs", 0, 10**6)
        self._check_range("koleo_weight", 0.0, 100.0)
        self._check_range("checkpoint_every", 1, 10**6)
