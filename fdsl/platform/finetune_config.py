"""What a fine-tuning run is: target set, low-data subset, recipe, augmentation, Ray/DeepSpeed resources.

Plain dataclass (no Ray, torch or timm at import): the `finetune` field of `Experiment`, overridden
with `--set finetune.<field>=<value>`. The architecture of a `scratch` run comes from the
experiment's `pretrain` section unless `model` is set, so a scratch arm and a pre-trained arm of the
same preset train the same network.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from fdsl.platform.workers_config import WorkersConfig

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("bf16", "fp16", "fp32")


@dataclasses.dataclass
class FinetuneConfig(WorkersConfig):
    """Supervised fine-tuning of pre-trained (or scratch) weights on a target set (Ray Train)."""

    # -- target data -----------------------------------------------------------------------------------
    dataset: str = "digits"
    """Target set spec: digits, idx:PATH, cifar10:PATH, cifar100:PATH, imagefolder:PATH, parquet:PATH."""
    train_fraction: float = 1.0
    """Share of each class of the training split kept (low-data studies); 1 keeps all."""
    samples_per_class: int = 0
    """If > 0: keep this many training images per class instead of `train_fraction`."""

    # -- model -----------------------------------------------------------------------------------------
    model: str = ""
    """timm architecture of a `scratch` run; empty: the experiment's `pretrain.model`."""
    img_size: int = 0
    """Input side in pixels; 0: the weights' img_size (scratch: `pretrain.img_size`); another size
    resamples the weights' position embedding (timm)."""
    patch_size: int = 0
    """ViT patch side of a `scratch` run; 0: `pretrain.patch_size` (weights bring their own)."""
    drop_path_rate: float = 0.1
    """Stochastic depth rate while fine-tuning (0 in linear-probe mode)."""
    linear_probe: bool = False
    """Train the classifier head only, the backbone frozen (a cheap signal for sweeps)."""

    # -- schedule --------------------------------------------------------------------------------------
    epochs: int = 100
    """Passes over the (subsampled) training split."""
    global_batch_size: int = 128
    """Images per optimizer step over all workers (micro batch x num_workers)."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """sgd (with momentum; the FDSL papers' small-set recipe) or adamw (DeiT / Gani et al.)."""
    lr: float = 0.01
    """Peak learning rate after warm-up."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine schedule."""
    warmup_epochs: float = 5.0
    """Linear warm-up length in epochs."""
    warmup_lr: float = 1e-6
    """Learning rate at step 0."""
    weight_decay: float = 1e-4
    """Weight decay (not applied to biases and norms)."""
    momentum: float = 0.9
    """SGD momentum (ignored by adamw)."""
    clip_grad: float = 0.0
    """Clip the global gradient norm to this value; 0 disables."""
    label_smoothing: float = 0.1
    """Label smoothing of the targets."""

    # -- augmentation (timm components, in Ray Data tasks) ---------------------------------------------
    randaugment: str = ""
    """timm RandAugment spec (e.g. rand-m9-mstd0.5-inc1); empty disables it."""
    crop_scale_min: float = 0.35
    """Smallest area fraction of RandomResizedCrop (1 disables cropping)."""
    hflip: float = 0.0
    """Horizontal flip probability (0 for digits and text-like sets)."""
    mixup: float = 0.0
    """Mixup alpha; 0 disables it."""
    cutmix: float = 0.0
    """CutMix alpha; 0 disables it."""
    random_erasing: float = 0.0
    """Random erasing probability per image; 0 disables it."""

    # -- Ray Train / DeepSpeed -------------------------------------------------------------------------
    use_deepspeed: bool = False
    """Wrap the model in DeepSpeed (ZeRO, bf16) instead of torch DDP."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-2 (use_deepspeed only)."""
    precision: Literal["bf16", "fp16", "fp32"] = "fp32"
    """Training precision; fp16 needs GPUs and DeepSpeed; bf16 also runs on CPU (autocast w/o DeepSpeed)."""
    augment_batch_size: int = 256
    """Images per augmentation task call."""
    prefetch_batches: int = 4
    """Micro batches each worker prefetches from Ray Data while it computes."""
    loader_probe_images: int = 1024
    """Images the driver pulls through the augmentation pipeline alone to measure loader images/s; 0 skips."""
    eval_every: int = 1
    """Evaluate (and report to Ray/Tune) every N epochs; the last epoch always is."""
    max_failures: int = 1
    """Worker-group restarts before the run fails (a restart fine-tunes again from the beginning)."""
    seed: int = 0
    """Seed of the low-data subset, the head's initialisation, the data order and augmentation."""

    def validate(self) -> None:
        super().validate()
        if not self.dataset:
            raise ValueError("dataset: got '', expected a target spec such as 'digits' or 'idx:PATH'")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction: got {self.train_fraction}, expected a value in (0, 1]")
        self._check_range("samples_per_class", 0, 10**9)
        if self.model and not self.model.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"model: got {self.model!r}, expected a timm model name or '' (pretrain.model)")
        if self.img_size:
            self._check_range("img_size", 8, 4096)
        self._check_range("patch_size", 0, 4096)
        if self.img_size and self.patch_size and self.img_size % self.patch_size:
            raise ValueError(f"img_size: got {self.img_size}, expected a multiple of patch_size "
                             f"({self.patch_size})")
        self._check_range("drop_path_rate", 0.0, 1.0)
        self._check_range("epochs", 1, 10**6)
        self._check_range("global_batch_size", 1, 10_000_000)
        if self.global_batch_size % self.num_workers:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected a multiple of "
                             f"num_workers ({self.num_workers})")
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_range("lr", 0.0, 10.0)
        self._check_range("min_lr", 0.0, self.lr)
        self._check_range("warmup_epochs", 0.0, 1e6)
        self._check_range("warmup_lr", 0.0, 10.0)
        self._check_range("weight_decay", 0.0, 10.0)
        self._check_range("momentum", 0.0, 0.9999)
        self._check_range("clip_grad", 0.0, 1e6)
        self._check_range("label_smoothing", 0.0, 0.99)
        if self.randaugment and not self.randaugment.startswith("rand-"):
            raise ValueError(f"randaugment: got {self.randaugment!r}, expected a timm RandAugment spec "
                             "like 'rand-m9-mstd0.5-inc1' or '' to disable")
        self._check_range("crop_scale_min", 0.01, 1.0)
        self._check_range("hflip", 0.0, 1.0)
        self._check_range("mixup", 0.0, 100.0)
        self._check_range("cutmix", 0.0, 100.0)
        self._check_range("random_erasing", 0.0, 1.0)
        if self.mixes and self.micro_batch_size % 2:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected an even micro "
                             f"batch for Mixup/CutMix (micro batch is {self.micro_batch_size})")
        self._check_range("zero_stage", 0, 2)  # the export reads full parameters (ZeRO-3 would need a gather)
        self._check_choice("precision", PRECISIONS)
        if self.precision == "fp16" and not (self.use_gpu and self.use_deepspeed):
            raise ValueError("precision: got 'fp16', expected 'bf16' or 'fp32' (fp16 needs use_gpu=true "
                             "and use_deepspeed=true)")
        if self.zero_stage and not self.use_deepspeed:
            raise ValueError(f"zero_stage: got {self.zero_stage}, expected 0 without use_deepspeed=true")
        self._check_range("augment_batch_size", 1, 100_000)
        self._check_range("prefetch_batches", 0, 1024)
        self._check_range("loader_probe_images", 0, 10**8)
        self._check_range("eval_every", 1, 10**6)
        self._check_range("max_failures", 0, 1000)
        self._check_range("seed", 0, 2**31 - 1)

    # -- derived quantities ----------------------------------------------------------------------------
    @property
    def micro_batch_size(self) -> int:
        """Images per forward/backward on one worker."""
        return self.global_batch_size // self.num_workers

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def schedule(self, num_images: int) -> dict[str, int]:
        """Optimizer steps for a training split of `num_images`: per epoch (at least 1), total, warm-up."""
        steps_per_epoch = max(1, round(num_images / self.global_batch_size))
        total = self.epochs * steps_per_epoch
        warmup = min(total - 1, math.ceil(self.warmup_epochs * steps_per_epoch))
        return {"steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup_steps": max(0, warmup)}


def finetune_deepspeed_config(cfg: FinetuneConfig) -> dict:
    """The `deepspeed.initialize(config=...)` dict of a fine-tuning config (timm optimizer/scheduler)."""
    return {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.clip_grad,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
