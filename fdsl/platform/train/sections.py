"""The config sections the three trainers share (plain dataclasses: no Ray, torch or timm at import).

    WorkersSection    Ray Train workers, augmentation tasks, restarts, seed        (all three)
    ScheduleSection   batch, length, optimiser numbers, warm-up + cosine, steps    (all three)
    LRSection         `lr`, the peak rate the optimizer applies                   (pretrain, finetune)
    BackboneSection   timm architecture, input and patch size, drop path          (all three)
    AugmentSection    DeiT augmentation: crop, flip, RandAugment, Mixup, erasing  (pretrain, finetune)
    PrecisionSection  precision and DeepSpeed ZeRO stage; `deepspeed_config()`    (pretrain, finetune)

`fdsl.platform.train.config` composes them into the three trainers' configs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from fdsl.config import Config

PRECISIONS = ("bf16", "fp16", "fp32")
OPTIMIZERS = ("sgd", "adamw")

def _check_model_name(name: str, allow_empty: bool) -> None:
    if (not name and allow_empty) or (name and name.replace("_", "").replace(".", "").isalnum()):
        return
    hint = " or '' (pretrain.model)" if allow_empty else " such as 'vit_base_patch16_224'"
    raise ValueError(f"model: got {name!r}, expected a timm model name{hint}")


@dataclasses.dataclass
class WorkersSection(Config):
    """Ray Train workers and Ray Data augmentation tasks of one training run."""

    num_workers: int = 1
    """Ray Train workers (one per GPU with use_gpu). 0: Ray Train's local mode, the training loop runs
    in the calling process (no worker group to start: ~10 s less per run; no worker restarts, CPU only,
    no DeepSpeed; pre-training writes its checkpoints itself), while Ray Data tasks still augment its
    batches."""
    use_gpu: bool = False
    """One GPU per worker (NCCL); false: CPU workers (gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs each training worker reserves in Ray (leave some for the augmentation tasks)."""
    worker_resource: str = ""
    """Custom Ray resource each worker also needs, one unit (e.g. "train_gpu": only the training
    pool's nodes have it, so training scales that pool); empty: any node with the CPUs/GPU."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"
    """How Ray places the workers' bundles: PACK fills a node first; STRICT_SPREAD puts each worker
    on a different node (a node loss then costs one worker, and the drills test exactly that)."""
    threads_per_worker: int = 0
    """torch intra-op threads per worker; 0 keeps Ray's default (the worker's CPUs, at least 1)."""
    augment_cpus: float = 1.0
    """CPUs each Ray Data augmentation task reserves (decoding and augmentation run as Ray tasks)."""
    augment_batch_size: int = 256
    """Images per augmentation task call."""
    prefetch_batches: int = 4
    """Micro batches each worker prefetches from Ray Data while it computes."""
    max_failures: int = 1
    """Worker-group restarts before the run fails (Ray FailureConfig); pre-training restarts from its
    last checkpoint, fine-tuning and SSL from the beginning."""
    seed: int = 0
    """Seed of initialisation, data order and augmentation (and of a target set's subset)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("num_workers", 0, 100_000)
        if self.local_mode and self.use_gpu:
            raise ValueError("num_workers: got 0 (local mode, the calling process on its CPU) with "
                             "use_gpu=true; set num_workers >= 1 for GPU workers")
        self._check_range("cpus_per_worker", 0.01, 1024)
        self._check_resource_name("worker_resource")
        self._check_choice("placement_strategy", ("PACK", "SPREAD", "STRICT_SPREAD"))
        self._check_range("threads_per_worker", 0, 1024)
        self._check_range("augment_cpus", 0.01, 1024)
        self._check_range("augment_batch_size", 1, 100_000)
        self._check_range("prefetch_batches", 0, 1024)
        self._check_range("max_failures", 0, 1000)
        self._check_range("seed", 0, 2**31 - 1)

    @property
    def local_mode(self) -> bool:
        """Ray Train's local mode (num_workers=0): the loop runs in the calling process."""
        return self.num_workers == 0

    @property
    def world_size(self) -> int:
        """Training processes: the workers, or the calling process alone in local mode."""
        return max(1, self.num_workers)

    def cpus_needed(self) -> float:
        """CPUs the run reserves at once in Ray: its workers and one augmentation task (a local-mode
        loop runs in the calling process, outside Ray's accounting)."""
        return self.num_workers * self.cpus_per_worker + self.augment_cpus

    def scaling_config(self):
        """Ray Train's ScalingConfig of the run: num_workers, each with its CPUs (and one GPU)."""
        from ray.train import ScalingConfig

        resources = ({"CPU": self.cpus_per_worker} | ({"GPU": 1} if self.use_gpu else {})
                     | ({self.worker_resource: 1} if self.worker_resource else {}))
        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu,
                             resources_per_worker=resources, placement_strategy=self.placement_strategy)


@dataclasses.dataclass
class LRSection(Config):
    """The peak learning rate, as the optimizer applies it (pre-training and fine-tuning)."""

    lr: float = 1e-3
    """Peak learning rate after warm-up: the rate the optimizer applies, whatever the batch size."""

    def peak_lr(self) -> float:
        """The rate the optimizer applies at the end of warm-up."""
        return self.lr

    def validate(self) -> None:
        super().validate()
        self._check_range("lr", 0.0, 10.0)


@dataclasses.dataclass
class ScheduleSection(Config):
    """Batch, run length and optimiser numbers; warm-up then cosine, counted in optimizer steps."""

    global_batch_size: int = 256
    """Images per optimizer step over all workers (micro batch x num_workers x grad_accum_steps)."""
    epochs: float = 300.0
    """Length of the run in passes over the data set (images seen / data set size)."""
    max_steps: int = 0
    """If > 0: the run is this many optimizer steps instead of `epochs`."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine schedule."""
    warmup_lr: float = 1e-6
    """Learning rate at step 0, raised linearly to the peak rate during warm-up."""
    warmup_epochs: float = 5.0
    """Length of the linear warm-up in epochs (converted to optimizer steps)."""
    warmup_steps: int = 0
    """If > 0: the warm-up is this many optimizer steps instead of `warmup_epochs` (VisualAtom: 5,000)."""
    warmup_prefix: bool = False
    """False: the cosine spans the whole run and the warm-up replaces its first steps (timm's and
    DeiT's schedule); True: the cosine starts where the warm-up ends (DINO's)."""
    cooldown_epochs: float = 0.0
    """Epochs at min_lr after the cosine (timm's cooldown: the run is epochs + cooldown_epochs long)."""
    weight_decay: float = 0.05
    """Weight decay (not applied to biases and norms)."""
    clip_grad: float = 0.0
    """Clip the global gradient norm to this value; 0 disables."""

    def images_seen(self, num_images: int) -> int:
        """Images the run trains on over a set of `num_images`: total steps x global batch (the rows
        of its seeded stream, `streams.id_rows`)."""
        return self.schedule(num_images)["total_steps"] * self.global_batch_size

    def peak_lr(self) -> float:
        """The rate the optimizer applies at the end of warm-up (`LRSection.lr`, or a trainer's own
        rule: SSL's `lr_base` per 256 images)."""
        raise NotImplementedError(f"{type(self).__name__} declares no learning rate")

    def validate(self) -> None:
        super().validate()
        self._check_range("global_batch_size", 1, 10_000_000)
        self._check_range("epochs", 0.0, 1e6)
        self._check_range("max_steps", 0, 10**9)
        if self.max_steps == 0 and self.epochs <= 0:
            raise ValueError(f"epochs: got {self.epochs}, expected > 0 (or set max_steps)")
        self._check_range("min_lr", 0.0, 10.0)
        if self.min_lr > self.peak_lr():
            raise ValueError(f"min_lr: got {self.min_lr!r}, expected a value <= the peak learning rate "
                             f"({self.peak_lr()!r})")
        self._check_range("warmup_lr", 0.0, 10.0)
        self._check_range("warmup_epochs", 0.0, 1e6)
        self._check_range("warmup_steps", 0, 10**9)
        self._check_range("cooldown_epochs", 0.0, 1e6)
        self._check_range("weight_decay", 0.0, 10.0)
        self._check_range("clip_grad", 0.0, 1e6)
        per_step = self.world_size * self.grad_accum_steps
        if self.global_batch_size % per_step:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected a multiple of "
                             f"num_workers x grad_accum_steps = {per_step}")

    grad_accum_steps = 1  # a class constant unless a trainer declares the field (pre-training does)

    @property
    def micro_batch_size(self) -> int:
        """Images per forward/backward on one worker."""
        return self.global_batch_size // (self.world_size * self.grad_accum_steps)

    def schedule(self, num_images: int) -> dict[str, int]:
        """Optimizer steps of the run for a data set of `num_images`: total, warm-up, per epoch.

        One rule for the three trainers: an epoch is `num_images` images, the run is
        ceil(epochs x num_images / batch) steps (or max_steps), the warm-up is rounded to steps.
        """
        steps_per_epoch = max(1, num_images // self.global_batch_size)
        epochs = self.epochs + self.cooldown_epochs
        total = self.max_steps or max(1, math.ceil(epochs * num_images / self.global_batch_size))
        cooldown = round(total * self.cooldown_epochs / epochs)
        cosine = max(1, total - cooldown)
        warmup = min(cosine - 1, self.warmup_steps or round(self.warmup_epochs * steps_per_epoch))
        return {"total_steps": total, "cosine_steps": cosine, "warmup_steps": max(0, warmup),
                "steps_per_epoch": steps_per_epoch}


@dataclasses.dataclass
class BackboneSection(Config):
    """The timm network a run trains."""

    model: str = "vit_tiny_patch16_224"
    """timm architecture name (see `timm.list_models("vit_*")`); fine-tuning and SSL: '' takes
    `pretrain.model`."""
    img_size: int = 224
    """Side of the square input in pixels; fine-tuning and SSL: 0 takes the weights' (or
    `pretrain.img_size`); another size than the weights' resamples their position embedding (timm)."""
    patch_size: int = 16
    """ViT patch side in pixels (img_size must be a multiple of it); fine-tuning and SSL: 0 takes
    `pretrain.patch_size` (weights bring their own)."""
    drop_path_rate: float = 0.1
    """Stochastic depth rate of the model (DeiT: 0.1)."""

    inherits_backbone = False  # fine-tuning and SSL: empty / 0 fields come from `pretrain`

    def validate(self) -> None:
        super().validate()
        _check_model_name(self.model, self.inherits_backbone)
        if self.img_size or not self.inherits_backbone:
            self._check_range("img_size", 8, 4096)
        if self.inherits_backbone:
            self._check_range("patch_size", 0, 4096)
        else:
            self._check_range("patch_size", 1, self.img_size)
        if self.img_size and self.patch_size and self.img_size % self.patch_size:
            raise ValueError(f"img_size: got {self.img_size}, expected a multiple of patch_size "
                             f"({self.patch_size})")
        self._check_range("drop_path_rate", 0.0, 1.0)


@dataclasses.dataclass
class AugmentSection(Config):
    """DeiT-style augmentation with timm's components: per image in Ray Data tasks (crop, flip,
    RandAugment), per batch on the worker (random erasing, Mixup/CutMix, label smoothing)."""

    randaugment: str = "rand-m9-mstd0.5-inc1"
    """timm RandAugment spec (DeiT: rand-m9-mstd0.5-inc1); empty disables it."""
    crop_scale_min: float = 0.08
    """Smallest area fraction of RandomResizedCrop (the largest is 1)."""
    hflip: float = 0.0
    """Horizontal flip probability (0: flips are already instances of the formula data sets)."""
    vflip: float = 0.0
    """Vertical flip probability (OFDB and 1p-frac pre-train with 0.5: their sets hold no flips)."""
    crop: Literal["resized", "padded"] = "resized"
    """"resized": RandomResizedCrop (crop_scale_min..1); "padded": RandomCrop of the image zero-padded
    by crop_padding pixels (the CIFAR recipe of Gani et al.)."""
    crop_padding: int = 4
    """Zero padding on each side before a "padded" crop."""
    autoaugment: str = ""
    """torchvision AutoAugment policy ("cifar10", "svhn", "imagenet") instead of RandAugment; "" off."""
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
    """Repeated augmentation: each image appears this many times, differently augmented, per pass
    (pre-training) or in the same batch (fine-tuning; Gani et al.: 3)."""
    augment_on: Literal["cpu", "device"] = "cpu"
    """Where the crop, flips, RandAugment and repeats run: "cpu" (per image, timm's transform in Ray
    Data tasks) or "device" (whole batches, each sample its own draws, where the model trains:
    `DeviceAugment`; pre-training with crop "resized" and no AutoAugment)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("repeated_aug", 1, 64)
        if self.randaugment and not self.randaugment.startswith("rand-"):
            raise ValueError(f"randaugment: got {self.randaugment!r}, expected a timm RandAugment spec "
                             "like 'rand-m9-mstd0.5-inc1' or '' to disable")
        self._check_range("crop_scale_min", 0.01, 1.0)
        self._check_range("hflip", 0.0, 1.0)
        self._check_range("vflip", 0.0, 1.0)
        self._check_choice("crop", ["resized", "padded"])
        self._check_range("crop_padding", 0, 64)
        self._check_choice("autoaugment", ["", "cifar10", "svhn", "imagenet"])
        self._check_choice("augment_on", ["cpu", "device"])
        if self.augment_on == "device" and (self.crop != "resized" or self.autoaugment):
            raise ValueError(f"augment_on: got 'device' with crop {self.crop!r} and autoaugment "
                             f"{self.autoaugment!r}, expected crop 'resized' and no AutoAugment (the device "
                             "path runs RandomResizedCrop and RandAugment); set augment_on=cpu")
        if self.autoaugment and self.randaugment:
            raise ValueError(f"autoaugment: got {self.autoaugment!r} with randaugment {self.randaugment!r}, "
                             "expected one policy: set randaugment='' to use AutoAugment")
        self._check_range("mixup", 0.0, 100.0)
        self._check_range("cutmix", 0.0, 100.0)
        self._check_range("mixup_prob", 0.0, 1.0)
        self._check_range("mixup_switch_prob", 0.0, 1.0)
        self._check_range("label_smoothing", 0.0, 0.99)
        self._check_range("random_erasing", 0.0, 1.0)
        if self.mixes and self.micro_batch_size % 2:
            raise ValueError(f"global_batch_size: got {self.global_batch_size}, expected an even micro "
                             f"batch for Mixup/CutMix (micro batch is {self.micro_batch_size})")

    @property
    def mixes(self) -> bool:
        """Whether Mixup or CutMix is on."""
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


@dataclasses.dataclass
class PrecisionSection(Config):
    """Training precision, the engine (DeepSpeed or plain torch) and DeepSpeed's ZeRO stage."""

    use_deepspeed: bool = True
    """Train through DeepSpeed (ZeRO, bf16 master weights); false: plain torch (DDP with several
    workers, bf16 through autocast), which starts faster and suits laptop-size models on CPU."""
    zero_stage: int = 1
    """DeepSpeed ZeRO stage: 0 (plain data parallel), 1 (optimizer), 2 (+gradients), 3 (+parameters)."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Training precision; fp16 (with dynamic loss scaling) needs GPUs and DeepSpeed, bf16 and fp32 run
    on CPU too."""

    max_zero_stage = 3

    def validate(self) -> None:
        super().validate()
        self._check_range("zero_stage", 0, self.max_zero_stage)
        self._check_choice("precision", PRECISIONS)
        if self.precision == "fp16" and not (getattr(self, "use_gpu", False) and self.use_deepspeed):
            raise ValueError("precision: got 'fp16', expected 'bf16' or 'fp32' (fp16 needs use_gpu=true "
                             "and use_deepspeed=true)")
        if self.zero_stage and not self.use_deepspeed:
            raise ValueError(f"zero_stage: got {self.zero_stage}, expected 0 without use_deepspeed=true")
        if self.use_deepspeed and getattr(self, "local_mode", False):
            raise ValueError("use_deepspeed: got true with num_workers=0 (local mode); DeepSpeed needs Ray "
                             "Train workers: set use_deepspeed=false and zero_stage=0, or num_workers >= 1")

    @property
    def torch_dtype_name(self) -> str:
        """The torch dtype of the model's inputs: bfloat16, float16 or float32."""
        return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[self.precision]


def deepspeed_config(cfg) -> dict:
    """The `deepspeed.initialize(config=...)` dict of a pre-training or fine-tuning config (optimizer
    and LR schedule stay timm's, passed to DeepSpeed as objects)."""
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
