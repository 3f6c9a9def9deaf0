"""What a small-data self-supervised (DINO) pre-training run is (Gani et al. BMVC'22).

Plain dataclass (no Ray, torch or timm at import): the `ssl` field of `Experiment`, overridden with
`--set ssl.<field>=<value>`. The backbone comes from the experiment's `pretrain` section unless
`model` / `img_size` / `patch_size` are set, so SSL weights fine-tune like supervised ones.
"""

from __future__ import annotations

import dataclasses
import math

from fdsl.platform.workers_config import WorkersConfig


@dataclasses.dataclass
class SSLConfig(WorkersConfig):
    """DINO self-distillation on the (unlabelled) training split of a target set (Ray Train)."""

    # -- data ------------------------------------------------------------------------------------------
    dataset: str = "digits"
    """Target set spec (see `fdsl finetune --help`); only its training images are used, not labels."""
    train_fraction: float = 1.0
    """Share of each class of the training split kept."""
    samples_per_class: int = 0
    """If > 0: keep this many training images per class (the same seeded subset fine-tuning takes)."""

    # -- backbone --------------------------------------------------------------------------------------
    model: str = ""
    """timm architecture; empty: the experiment's `pretrain.model`."""
    img_size: int = 0
    """Global crop side; 0: `pretrain.img_size`."""
    patch_size: int = 0
    """ViT patch side; 0: `pretrain.patch_size`."""
    drop_path_rate: float = 0.1
    """Stochastic depth of the student."""

    # -- DINO head and loss ----------------------------------------------------------------------------
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
    momentum_teacher: float = 0.996
    """Teacher EMA momentum at step 0, raised to 1 on a cosine schedule."""

    # -- multi-crop ------------------------------------------------------------------------------------
    num_local_crops: int = 8
    """Small crops per image besides the 2 global ones (Gani et al.: 8)."""
    local_img_size: int = 0
    """Local crop side; 0: half of img_size (a multiple of patch_size)."""
    global_crop_scale_min: float = 0.4
    """Smallest area fraction of a global crop (the largest is 1)."""
    local_crop_scale_max: float = 0.4
    """Largest area fraction of a local crop (the smallest is 0.05)."""
    hflip: float = 0.5
    """Horizontal flip probability of every crop."""
    color_jitter: float = 0.8
    """Probability of colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1)."""
    blur: float = 0.5
    """Gaussian blur probability (first global crop: 1, second: 0.1, locals: this)."""
    solarize: float = 0.2
    """Solarisation probability of the second global crop."""

    # -- schedule --------------------------------------------------------------------------------------
    epochs: int = 200
    """Passes over the training split."""
    global_batch_size: int = 256
    """Images (each with 2 + num_local_crops views) per optimizer step over all workers."""
    lr: float = 5e-4
    """Peak AdamW learning rate per 256 images (scaled by global_batch_size / 256, as DINO does)."""
    min_lr: float = 1e-6
    """Learning rate at the end of the cosine schedule."""
    warmup_epochs: float = 10.0
    """Linear warm-up length in epochs."""
    weight_decay: float = 0.04
    """AdamW weight decay at the start, raised to weight_decay_end on a cosine schedule."""
    weight_decay_end: float = 0.4
    """AdamW weight decay at the end."""
    clip_grad: float = 3.0
    """Clip the global gradient norm; 0 disables."""
    freeze_last_layer_epochs: int = 1
    """Epochs during which the head's last layer gets no update (DINO)."""

    # -- Ray -------------------------------------------------------------------------------------------
    augment_batch_size: int = 128
    """Images per multi-crop task call."""
    prefetch_batches: int = 2
    """Micro batches each worker prefetches."""
    seed: int = 0
    """Seed of the subset, initialisation, data order and augmentation."""

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
        self._check_range("local_img_size", 0, 4096)
        self._check_range("drop_path_rate", 0.0, 1.0)
        self._check_range("out_dim", 2, 10**6)
        self._check_range("hidden_dim", 1, 10**5)
        self._check_range("bottleneck_dim", 1, 10**5)
        self._check_range("student_temp", 1e-4, 10.0)
        self._check_range("teacher_temp", 1e-4, 10.0)
        self._check_range("warmup_teacher_temp", 1e-4, 10.0)
        self._check_range("warmup_teacher_temp_epochs", 0, self.epochs)
        self._check_range("center_momentum", 0.0, 1.0)
        self._check_range("momentum_teacher", 0.0, 1.0)
        self._check_range("num_local_crops", 0, 64)
        self._check_range("global_crop_scale_min", 0.01, 1.0)
        self._check_range("local_crop_scale_max", 0.05, 1.0)
        for name in ("hflip", "color_jitter", "blur", "solarize"):
            self._check_range(name, 0.0, 1.0)
        self._check_range("epochs", 1, 10**6)
        self._check_range("global_batch_size", 2, 10_000_000)
        if self.global_batch_size % self.num_workers:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected a multiple of "
                             f"num_workers ({self.num_workers})")
        self._check_range("lr", 0.0, 10.0)
        self._check_range("min_lr", 0.0, 10.0)
        self._check_range("warmup_epochs", 0.0, 1e6)
        self._check_range("weight_decay", 0.0, 10.0)
        self._check_range("weight_decay_end", 0.0, 10.0)
        self._check_range("clip_grad", 0.0, 1e6)
        self._check_range("freeze_last_layer_epochs", 0, 10**6)
        self._check_range("augment_batch_size", 1, 100_000)
        self._check_range("prefetch_batches", 0, 1024)
        self._check_range("seed", 0, 2**31 - 1)

    @property
    def micro_batch_size(self) -> int:
        return self.global_batch_size // self.num_workers

    def schedule(self, num_images: int) -> dict[str, int]:
        """Optimizer steps for `num_images` training images: per epoch (at least 1), total, warm-up."""
        steps_per_epoch = max(1, round(num_images / self.global_batch_size))
        total = self.epochs * steps_per_epoch
        warmup = min(total - 1, math.ceil(self.warmup_epochs * steps_per_epoch))
        return {"steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup_steps": max(0, warmup)}
