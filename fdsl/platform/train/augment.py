"""Augmentation of the three trainers, with timm's and torch's components.

Per image, in Ray Data tasks (uint8 in, uint8 CHW out): `augment_images` (DeiT: RandomResizedCrop,
flip, RandAugment, repeated augmentation, through timm's `create_transform`), or the batched
`batch_resized_crop` when there is no RandAugment. Per batch, on the training device (as timm's GPU
prefetcher does): `DeviceBatch` (normalise, random erasing, Mixup/CutMix, the loss), shared by
pre-training and fine-tuning.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# timm and torchvision (2 s to import) are imported by the functions that use them: Ray Data's tasks
# import this module for the batched crop, which needs torch only (a command's first batch waits on it)


def _posterize(img, bits_to_keep, **kwargs):
    """timm's posterize, also for 0 bits (RandAugment's top magnitude), which Pillow >= 12 refuses:
    keeping no bit gives a black image, as older Pillow did."""
    from timm.data.auto_augment import posterize

    return img.point(lambda _: 0) if bits_to_keep <= 0 else posterize(img, bits_to_keep, **kwargs)


@functools.lru_cache(maxsize=8)
def _train_transform(img_size: int, randaugment: str, crop_scale_min: float, hflip: float,
                     vflip: float = 0.0, crop: str = "resized", crop_padding: int = 4, autoaugment: str = ""):
    if crop == "padded" or autoaugment:
        return _torchvision_transform(img_size, crop_scale_min, hflip, vflip, crop, crop_padding, autoaugment)
    from timm.data import create_transform

    # use_prefetcher=True: uint8 CHW out; normalisation and random erasing happen on the worker's device
    return with_zero_bit_posterize(create_transform(
        input_size=(3, img_size, img_size), is_training=True, use_prefetcher=True,
        scale=(crop_scale_min, 1.0), hflip=hflip, vflip=vflip, auto_augment=randaugment or None,
        interpolation="bicubic", re_prob=0.0))


def with_zero_bit_posterize(transform):
    """timm's transform with its RandAugment's posterize replaced by `_posterize` (0 bits allowed)."""
    from timm.data.auto_augment import RandAugment, posterize

    for step in transform.transforms:
        for op in step.ops if isinstance(step, RandAugment) else ():
            if op.aug_fn is posterize:
                op.aug_fn = _posterize
    return transform


def _torchvision_transform(img_size: int, crop_scale_min: float, hflip: float, vflip: float, crop: str,
                           crop_padding: int, autoaugment: str):
    """The small-set recipe of Gani et al. (finetune.py): flip, RandomCrop with zero padding, the
    AutoAugment policy of the data set (torchvision's AutoAugment, CIFAR10 / SVHN / ImageNet
    policies of Cubuk et al.), uint8 CHW out like timm's prefetcher path."""
    from torchvision.transforms import v2

    steps = [v2.Resize(img_size, interpolation=v2.InterpolationMode.BICUBIC)]
    if crop == "padded":
        steps.append(v2.RandomCrop(img_size, padding=crop_padding))
    else:
        steps.append(v2.RandomResizedCrop(img_size, scale=(crop_scale_min, 1.0),
                                          interpolation=v2.InterpolationMode.BICUBIC))
    steps += [v2.RandomHorizontalFlip(hflip), v2.RandomVerticalFlip(vflip)]
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy(autoaugment)))
    steps.append(v2.PILToTensor())
    return v2.Compose(steps)


def to_rgb(image: np.ndarray):
    """A uint8 HxW or HxWx3 array as an RGB PIL image."""
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def augment_batch(batch: dict[str, np.ndarray], *, img_size: int, randaugment: str, crop_scale_min: float,
                  hflip: float, repeats: int, vflip: float = 0.0, crop: str = "resized",
                  crop_padding: int = 4, autoaugment: str = "") -> dict[str, np.ndarray]:
    """Ray Data adapter: {"image" (B,H,W[,3]) uint8, "label"} -> {"image" (B*r,3,S,S) uint8, "label" int64}.

    Each image is augmented `repeats` times (repeated augmentation); the copies stay adjacent, so they
    land in the same global batch as with DeiT's RASampler.
    """
    transform = _train_transform(img_size, randaugment, crop_scale_min, hflip, vflip, crop, crop_padding,
                                 autoaugment)
    images, labels = batch["image"], np.asarray(batch["label"], dtype=np.int64)
    out = np.empty((len(images) * repeats, 3, img_size, img_size), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = to_rgb(image)
        for r in range(repeats):
            out[i * repeats + r] = np.asarray(transform(pil))
    return {"image": out, "label": np.repeat(labels, repeats)}


def augment_images(images: np.ndarray, labels: np.ndarray, *, img_size: int, randaugment: str,
                   crop_scale_min: float, hflip: float, repeats: int = 1, vflip: float = 0.0,
                   crop: str = "resized", crop_padding: int = 4,
                   autoaugment: str = "") -> dict[str, np.ndarray]:
    """Training augmentation of a drawn batch (see `fdsl.platform.train.streams.seeded_stream`).

    With RandAugment, AutoAugment, a padded crop or repeats: `augment_batch` (timm or torchvision, per
    image). Without: `batch_resized_crop` (RandomResizedCrop + flip of the whole batch at once, about
    5x faster).
    """
    if randaugment or autoaugment or crop != "resized" or repeats > 1:
        return augment_batch({"image": images, "label": labels}, img_size=img_size, randaugment=randaugment,
                             crop_scale_min=crop_scale_min, hflip=hflip, repeats=repeats, vflip=vflip,
                             crop=crop, crop_padding=crop_padding, autoaugment=autoaugment)
    crops = batch_resized_crop(images, img_size, (crop_scale_min, 1.0), hflip, vflip=vflip)
    return {"image": crops.round_().to(torch.uint8).numpy(), "label": np.asarray(labels, dtype=np.int64)}


def batch_resized_crop(images: np.ndarray, size: int, scale: tuple[float, float], hflip: float,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), vflip: float = 0.0):
    """RandomResizedCrop + horizontal (and vertical) flip of a whole batch at once (one `grid_sample`).

    images: (B,H,W) or (B,H,W,3) uint8 -> float tensor (B,3,size,size) in 0..255. Crop area fraction
    ~ U(scale), log aspect ratio ~ U(log ratio), as torchvision/timm (10 tries, else the full image),
    drawn from torch's global RNG. Per-image PIL transforms cost ~0.5 ms an image; this ~0.1 ms.
    """
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = (x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).float()
    return resized_crop(x, size, crop_theta(len(x), *x.shape[-2:], scale, ratio, hflip, vflip))


def crop_theta(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], hflip: float,
               vflip: float = 0.0, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(b, 2, 3) affine maps of per-image RandomResizedCrops (+ flips) of an h x w image, for
    `resized_crop`: area fraction ~ U(scale), log aspect ratio ~ U(log ratio), as torchvision/timm (10
    tries, else the full image), from `generator` (None: torch's global RNG)."""
    kw = {"generator": generator, "device": device}
    area = torch.empty(b, 10, device=device).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.empty(b, 10, device=device).uniform_(float(np.log(ratio[0])), float(np.log(ratio[1])),
                                                        generator=generator).exp()
    crop_w = (area * aspect).sqrt() * (h / w) ** 0.5  # fractions of the width and height
    crop_h = (area / aspect).sqrt() * (w / h) ** 0.5
    ok = (crop_w <= 1) & (crop_h <= 1)
    first, rows, found = ok.float().argmax(1), torch.arange(b, device=device), ok.any(1)
    ones = torch.ones(b, device=device)
    crop_w = torch.where(found, crop_w[rows, first], ones)
    crop_h = torch.where(found, crop_h[rows, first], ones)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = crop_w * torch.where(torch.rand(b, **kw) < hflip, -1.0, 1.0)
    theta[:, 0, 2] = (torch.rand(b, **kw) * 2 - 1) * (1 - crop_w)
    theta[:, 1, 1] = crop_h * (torch.where(torch.rand(b, **kw) < vflip, -1.0, 1.0) if vflip > 0 else 1.0)
    theta[:, 1, 2] = (torch.rand(b, **kw) * 2 - 1) * (1 - crop_h)
    return theta


def resized_crop(x: torch.Tensor, size: int, theta: torch.Tensor) -> torch.Tensor:
    """Float (B, 3, H, W) in 0..255 -> the (B, 3, size, size) crops `theta` maps (bicubic, clamped)."""
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp_(0, 255)


class DeviceBatch:
    """The per-batch half of the recipe, on the training device (as timm's GPU prefetcher does):
    uint8 images -> normalised, randomly erased, Mixup/CutMix-ed inputs in the training dtype, and
    the loss for the (soft, smoothed) targets. Used by pre-training, fine-tuning and
    benchmarks/pretrain.py; `cfg` is a config with the `AugmentSection` fields."""

    def __init__(self, cfg, num_classes: int, device, mean, std, dtype=None):
        from timm.data import Mixup
        from timm.data.random_erasing import RandomErasing
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                            switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing,
                            num_classes=num_classes) if cfg.mixes else None)
        if self.mixup is not None:
            self.criterion = SoftTargetCrossEntropy()
        elif cfg.label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing)
        else:
            self.criterion = torch.nn.CrossEntropyLoss()
        self.eraser = (RandomErasing(cfg.random_erasing, mode="pixel", device=str(device))
                       if cfg.random_erasing > 0 else None)
        self.scale = torch.tensor([255.0 * v for v in std], device=device).view(1, 3, 1, 1)
        self.shift = torch.tensor([255.0 * v for v in mean], device=device).view(1, 3, 1, 1)
        self.dtype = dtype or getattr(torch, cfg.torch_dtype_name)

    def normalise(self, images):
        """uint8 (B, 3, S, S) -> normalised inputs in the training dtype (no randomness)."""
        return images.float().sub_(self.shift).div_(self.scale).to(self.dtype)

    def inputs(self, images, labels):
        """(model input, target) of a uint8 (B, 3, S, S) batch and its int64 labels."""
        x = images.float().sub_(self.shift).div_(self.scale)
        if self.eraser is not None:
            x = self.eraser(x)
        if self.mixup is not None:
            x, labels = self.mixup(x, labels)
        return x.to(self.dtype), labels

    def loss(self, logits, target):
        return self.criterion(logits.float(), target)


# --- DINO's multi-crop views (a Ray Data task of SSL's seeded_stream) -----------------------------------
def _photometric(crops, *, color_jitter: float, blur: float, solarize: float, grayscale: float = 0.2):
    """DINO's colour jitter, grayscale, Gaussian blur and solarisation, per image (torchvision), in 0..1."""
    from torchvision.transforms import v2

    size = crops.shape[-1]
    jitter = v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
    sigma_max = max(0.1, 2.0 * size / 224)  # DINO's radius 0.1..2 at 224px, scaled to the crop
    kernel = 2 * math.ceil(3 * sigma_max) + 1
    blurrer = v2.GaussianBlur(kernel_size=kernel, sigma=(0.1 * size / 224, sigma_max))
    out = crops.div(255.0)
    for i in range(len(out)):
        img = out[i]
        if torch.rand(()) < color_jitter:
            img = jitter(img)
        if torch.rand(()) < grayscale:
            img = v2.functional.rgb_to_grayscale(img, num_output_channels=3)
        if torch.rand(()) < blur:
            img = blurrer(img)
        if torch.rand(()) < solarize:
            img = v2.functional.solarize(img, threshold=0.5)
        out[i] = img
    return out.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def multicrop_views(picked: np.ndarray, labels=None, *, img_size: int, local_size: int, num_local: int,
                    global_scale_min: float, local_scale_max: float, hflip: float, color_jitter: float,
                    blur: float, solarize: float, local_scale_min: float = 0.05) -> dict[str, np.ndarray]:
    """DINO's views of a drawn batch (labels unused): {"global" (B,2,3,S,S) uint8, "local" (B,N,3,s,s)
    uint8 if N > 0}; the augmentation of SSL's `seeded_stream`.

    Blur probability: 1 on the first global view, 0.1 on the second, `blur` on the locals (DINO);
    `blur` 0 turns it off everywhere. Solarisation only on the second global view.
    """
    views = []
    for view_blur, view_solarize in ((1.0, 0.0), (0.1, solarize)):  # DINO's two global views
        crops = batch_resized_crop(picked, img_size, (global_scale_min, 1.0), hflip)
        views.append(_photometric(crops, color_jitter=color_jitter, blur=view_blur if blur > 0 else 0.0,
                                  solarize=view_solarize))
    out = {"global": torch.stack(views, dim=1).numpy()}
    if num_local:
        scale = (local_scale_min, local_scale_max)
        local = [_photometric(batch_resized_crop(picked, local_size, scale, hflip),
                              color_jitter=color_jitter, blur=blur, solarize=0.0) for _ in range(num_local)]
        out["local"] = torch.stack(local, dim=1).numpy()
    return out
