"""What a pre-training run is: model, batch, schedule, DeiT augmentation, DeepSpeed, Ray resources.

Plain dataclass (no Ray, torch or timm at import): it is the `pretrain` field of `Experiment` and is
overridden with `--set pretrain.<field>=<value>`. `deepspeed_config()` turns it into the plain dict
that `deepspeed.initialize` takes, so what runs is always what the config (and `fdsl show`) says.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from fdsl.platform.workers_config import WorkersConfig

PRECISIONS = ("bf16", "fp16", "fp32")


@dataclasses.dataclass
class PretrainConfig(WorkersConfig):
    """Supervised pre-training of a timm model on a formula data set (Ray Train + DeepSpeed)."""

    # -- model ------------------------------------------------------------------------------------
    model: str = "vit_tiny_patch16_224"
    """timm architecture name (see `timm.list_models("vit_*")`); created from scratch."""
    img_size: int = 224
    """Side of the square training crop fed to the model, in pixels."""
    patch_size: int = 16
    """ViT patch side in pixels (img_size must be a multiple of it)."""
    drop_path_rate: float = 0.1
    """Stochastic depth rate of the model (DeiT: 0.1)."""
    norm_mean: float | None = None
    """Input normalisation mean, the same on the 3 channels, in [0, 1]; None: the model's timm default."""
    norm_std: float | None = None
    """Input normalisation std, the same on the 3 channels; None: the model's timm default."""

    # -- batch and schedule -----------------------------------------------------------------------
    global_batch_size: int = 256
    """Images per optimizer step over all workers = micro batch x num_workers x grad_accum_steps."""
    grad_accum_steps: int = 1
    """Micro batches accumulated per optimizer step on each worker."""
    epochs: float = 300.0
    """Length of the run in passes over the data set (images seen / data set size)."""
    max_steps: int = 0
    """If > 0: the run is this many optimizer steps instead of `epochs`."""
    optimizer: str = "adamw"
    """timm optimizer name (`timm.optim.create_optimizer_v2`); no weight decay on biases and norms."""
    lr: float = 1e-3
    """Peak learning rate after warm-up."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine schedule."""
    warmup_lr: float = 1e-6
    """Learning rate at step 0, raised linearly to `lr` during warm-up."""
    warmup_epochs: float = 5.0
    """Length of the linear warm-up in epochs (converted to optimizer steps)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    clip_grad: float = 0.0
    """Clip the global gradient norm to this value (DeepSpeed gradient_clipping); 0 disables."""

    # -- DeepSpeed --------------------------------------------------------------------------------
    zero_stage: int = 1
    """DeepSpeed ZeRO stage: 0 (plain data parallel), 1 (optimizer), 2 (+gradients), 3 (+parameters)."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Training precision; fp16 (with dynamic loss scaling) needs GPUs, bf16 and fp32 run on CPU too."""

    # -- DeiT augmentation (timm components) ------------------------------------------------------
    randaugment: str = "rand-m9-mstd0.5-inc1"
    """timm RandAugment spec (DeiT: rand-m9-mstd0.5-inc1); empty disables it."""
    crop_scale_min: float = 0.08
    """Smallest area fraction of RandomResizedCrop (the largest is 1)."""
    hflip: float = 0.0
    """Horizontal flip probability (0: flips are already instances of the formula data sets)."""
    mixup: float = 0.8
    """Mixup alpha; 0 disables Mixup."""
    cutmix: float = 1.0
    """CutMix alpha; 0 disables CutMix."""
    mixup_prob: float = 1.0
    """Probability of applying Mixup or CutMix to a batch."""
    mixup_switch_prob: float = 0.5
    """Probability of CutMix instead of Mixup when both are enabled."""
    label_smoothing: float = 0.1
    """Label smoothing of the (mixed) targets."""
    random_erasing: float = 0.25
    """Random erasing probability per image (timm RandomErasing, mode "pixel"); 0 disables it."""
    repeated_aug: int = 3
    """Repeated augmentation: each image appears this many times (differently augmented) per pass."""

    # -- data ingest ------------------------------------------------------------------------------
    shuffle: Literal["global", "local"] = "global"
    """"global": a full Ray Data random_shuffle per pass; "local": random block order + a buffer."""
    shuffle_buffer: int = 4096
    """Rows per worker in the local shuffle buffer (shuffle "local")."""
    preserve_order: bool = True
    """Keep Ray Data's row order into the workers: with the seeded shuffle and augmentation, a
    one-worker run is then bitwise reproducible; false lets blocks arrive as they finish."""
    min_pass_images: int = 2048
    """A smaller data set is repeated (each copy augmented anew) and permuted in one block to make a
    Ray Data pass of at least this many images: a pass costs seconds to start."""
    augment_batch_size: int = 256
    """Images per augmentation task call."""
    prefetch_batches: int = 4
    """Micro batches each worker prefetches from Ray Data while it computes."""

    # -- Ray Train ---------------------------------------------------------------------------------
    checkpoint_every: int = 1000
    """Save a checkpoint (DeepSpeed model, optimizer, scheduler, step, RNG) every N optimizer steps."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    max_failures: int = 3
    """Worker-group restarts from the last checkpoint before the run fails (Ray FailureConfig)."""
    report_every: int = 100
    """Report metrics to Ray (and Tune) every N steps, besides checkpoints; metrics.jsonl gets every
    step. Ray Train collects reports every ~2 s: a report sooner than that waits for it."""
    seed: int = 0
    """Seed of model initialisation, Mixup/CutMix and random erasing."""

    def validate(self) -> None:
        super().validate()
        if not self.model or not self.model.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"model: got {self.model!r}, expected a timm model name such as "
                             "'vit_base_patch16_224'")
        self._check_range("img_size", 8, 4096)
        self._check_range("patch_size", 1, self.img_size)
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size: got {self.img_size}, expected a multiple of patch_size "
                             f"({self.patch_size})")
        self._check_range("drop_path_rate", 0.0, 1.0)
        if (self.norm_mean is None) != (self.norm_std is None):
            raise ValueError(f"norm_std: got {self.norm_std!r} with norm_mean {self.norm_mean!r}, expected "
                             "both set or both None")
        if self.norm_mean is not None:
            self._check_range("norm_mean", 0.0, 1.0)
            self._check_range("norm_std", 1e-3, 1.0)
        self._check_range("grad_accum_steps", 1, 100_000)
        self._check_range("global_batch_size", 1, 10_000_000)
        per_step = self.num_workers * self.grad_accum_steps
        if self.global_batch_size % per_step:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected a multiple of "
                             f"num_workers x grad_accum_steps = {per_step}")
        self._check_range("epochs", 0.0, 1e6)
        self._check_range("max_steps", 0, 10**9)
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError(f"epochs: got {self.epochs}, expected > 0 (or set max_steps)")
        self._check_range("lr", 0.0, 10.0)
        self._check_range("min_lr", 0.0, self.lr)
        self._check_range("warmup_lr", 0.0, 10.0)
        self._check_range("warmup_epochs", 0.0, 1e6)
        self._check_range("weight_decay", 0.0, 10.0)
        self._check_range("clip_grad", 0.0, 1e6)
        self._check_range("zero_stage", 0, 3)
        self._check_choice("precision", PRECISIONS)
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision: got 'fp16', expected 'bf16' or 'fp32' on CPU "
                             "(DeepSpeed's fp16 needs GPUs: set use_gpu=true)")
        if self.randaugment and not self.randaugment.startswith("rand-"):
            raise ValueError(f"randaugment: got {self.randaugment!r}, expected a timm RandAugment spec "
                             "like 'rand-m9-mstd0.5-inc1' or '' to disable")
        self._check_range("crop_scale_min", 0.01, 1.0)
        self._check_range("hflip", 0.0, 1.0)
        self._check_range("mixup", 0.0, 100.0)
        self._check_range("cutmix", 0.0, 100.0)
        self._check_range("mixup_prob", 0.0, 1.0)
        self._check_range("mixup_switch_prob", 0.0, 1.0)
        self._check_range("label_smoothing", 0.0, 0.99)
        self._check_range("random_erasing", 0.0, 1.0)
        self._check_range("repeated_aug", 1, 64)
        if self.mixes and self.micro_batch_size % 2:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected an even micro "
                             f"batch for Mixup/CutMix (micro batch is {self.micro_batch_size})")
        self._check_choice("shuffle", ["global", "local"])
        self._check_range("shuffle_buffer", 0, 10**8)
        self._check_range("min_pass_images", 1, 10**9)
        self._check_range("augment_batch_size", 1, 100_000)
        self._check_range("prefetch_batches", 0, 1024)
        self._check_range("checkpoint_every", 1, 10**9)
        self._check_range("keep_checkpoints", 1, 1000)
        self._check_range("max_failures", 0, 1000)
        self._check_range("report_every", 1, 10**9)
        self._check_range("seed", 0, 2**31 - 1)

    # -- derived quantities -------------------------------------------------------------------------
    @property
    def micro_batch_size(self) -> int:
        """Images per forward/backward on one worker."""
        return self.global_batch_size // (self.num_workers * self.grad_accum_steps)

    @property
    def mixes(self) -> bool:
        """Whether Mixup or CutMix is on."""
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)

    def pass_copies(self, num_images: int) -> int:
        """Copies of a data set of `num_images` in one Ray Data pass (see `min_pass_images`)."""
        return max(1, -(-self.min_pass_images // max(1, num_images)))

    def schedule(self, num_images: int) -> dict[str, int]:
        """Optimizer steps of the run for a data set of `num_images`: total, warm-up, per epoch."""
        steps_per_epoch = max(1, num_images // self.global_batch_size)
        total = self.max_steps or max(1, math.ceil(self.epochs * num_images / self.global_batch_size))
        warmup = min(total - 1, round(self.warmup_epochs * steps_per_epoch))
        return {"total_steps": total, "warmup_steps": max(0, warmup), "steps_per_epoch": steps_per_epoch}


def deepspeed_config(cfg: PretrainConfig) -> dict:
    """The `deepspeed.initialize(config=...)` dict of a pre-training config (optimizer and LR schedule
    stay timm's, passed to DeepSpeed as objects)."""
    return {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.clip_grad,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": cfg.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
