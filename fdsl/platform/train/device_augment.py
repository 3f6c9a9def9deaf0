"""DeiT's per-image augmentation as batched tensor work on the training device (`augment_on="device"`).

    DeviceAugment(cfg, device, seed)(images uint8 (B,H,W[,3]) or (B,3,H,W)) -> uint8 (B*r, 3, S, S)

The CPU path (`augment.augment_images`, timm's `create_transform` per image in Ray Data tasks)
costs ~3 ms per 224-px image per core; here the same policy runs on whole batches where the model
trains, with every random draw per sample (from one seeded `torch.Generator`):
- RandomResizedCrop + flips: one `grid_sample` of per-sample affine maps (`augment.crop_theta`,
  bicubic), the area fraction and log aspect ratio drawn as torchvision and timm draw them;
- RandAugment: the policy string is parsed by timm (`rand_augment_transform`: its ops, their
  probability, magnitude, magnitude std and maximum, the number of layers), so the presets' spec
  means here what it means on the CPU; each layer picks an op per sample, applies it with the op's
  probability, at a per-sample magnitude ~ N(m, mstd) clipped to [0, mmax], mapped to the op's
  argument by timm's formulas (`op_argument`, tested against timm's `LEVEL_TO_ARG`).
  Ops are torch / torchvision.v2 kernels on the samples that drew them: colour ops on uint8 values
  as PIL computes them; geometric ops (rotate, shear, translate) with bilinear resampling where
  timm's DeiT transform uses bicubic, filled with the ImageNet mean as timm fills.

Neither kornia nor torchvision's v2 transforms draw per sample on a batch (v2 draws once per call,
kornia's RandAugment picks one sub-policy per batch), so the RandAugment loop is written here with
torchvision's functional kernels (equalize, autocontrast) doing the per-image work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms.v2 import functional as TF

from fdsl.platform.train.augment import crop_theta, resized_crop

FILL = (124, 116, 104)
"""timm's fill of RandAugment's geometric ops in DeiT's transform: the ImageNet mean x 255."""
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
SIGNED = GEOMETRIC | {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}
"""Ops whose argument timm negates at random (`_randomly_negate`)."""


def parse_policy(spec: str):
    """timm's RandAugment of `spec` (e.g. "rand-m9-mstd0.5-inc1"): (ops, num_layers, choice weights)."""
    policy = rand_augment_transform(spec, {"img_mean": FILL})
    return policy.ops, policy.num_layers, policy.choice_weights


def op_argument(name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """timm's level-to-argument formula of op `name` (auto_augment.LEVEL_TO_ARG), on a tensor of
    magnitudes, without its random sign (drawn by the caller for the ops in SIGNED)."""
    level = magnitude / 10.0
    if name == "Rotate":
        return level * 30.0
    if name in ("ShearX", "ShearY"):
        return level * 0.3
    if name in ("TranslateXRel", "TranslateYRel"):
        return level * 0.45
    if name.endswith("Increasing") and name != "PosterizeIncreasing" and name != "SolarizeIncreasing":
        return level * 0.9  # the blend factor is max(0.1, 1 +- this)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return level * 1.8 + 0.1
    if name == "PosterizeIncreasing":
        return 4 - (level * 4).floor()
    if name == "Posterize":
        return (level * 4).floor()
    if name == "SolarizeIncreasing":
        return 256 - (level * 256).floor().clamp(max=256)
    if name == "Solarize":
        return (level * 256).floor().clamp(max=256)
    if name == "SolarizeAdd":
        return (level * 110).floor().clamp(max=128)
    return torch.zeros_like(magnitude)  # AutoContrast, Equalize, Invert take no argument


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """PIL's "L" of RGB values: (299 R + 587 G + 114 B) / 1000, as (n, 1, H, W)."""
    return (x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114).round()


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), per sample."""
    return degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float (n,3,H,W) through output->input maps `theta`, outside the image the fill."""
    fill = torch.tensor(FILL, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def apply_op(name: str, x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """Op `name` of timm's RandAugment on float (n, 3, H, W) values 0..255 (whole numbers), each sample
    with its own argument `arg` (n,), signed already; returns whole numbers 0..255."""
    n = len(x)
    if name in GEOMETRIC:
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        if name == "Rotate":
            rad = arg * (math.pi / 180.0)
            theta[:, 0, 0], theta[:, 0, 1] = rad.cos(), -rad.sin()
            theta[:, 1, 0], theta[:, 1, 1] = rad.sin(), rad.cos()
        elif name == "ShearX":  # PIL: x_in = x + f y, with the origin at the top-left corner
            theta[:, 0, 1], theta[:, 0, 2] = arg, arg
        elif name == "ShearY":
            theta[:, 1, 0], theta[:, 1, 2] = arg, arg
        elif name == "TranslateXRel":
            theta[:, 0, 2] = 2 * arg
        else:
            theta[:, 1, 2] = 2 * arg
        return _affine(x, theta).round_().clamp_(0, 255)
    if name in ("AutoContrast", "Equalize"):
        kernel = TF.autocontrast if name == "AutoContrast" else TF.equalize
        return kernel(x.to(torch.uint8)).to(x.dtype)
    if name == "Invert":
        return 255.0 - x
    if name.startswith("Posterize"):
        keep = arg.long().clamp(0, 8).view(-1, 1, 1, 1)
        mask = (256 - (1 << (8 - keep))).clamp(min=0)  # 0 bits kept: black, as older Pillow did
        return (x.long() & mask).to(x.dtype)
    if name.startswith("Solarize") and name != "SolarizeAdd":
        return torch.where(x >= arg.view(-1, 1, 1, 1), 255.0 - x, x)
    if name == "SolarizeAdd":
        return torch.where(x < 128, (x + arg.view(-1, 1, 1, 1)).clamp(max=255), x)
    factor = (1.0 + arg).clamp(min=0.1) if name.endswith("Increasing") else arg
    if name.startswith("Color"):
        degenerate = _grayscale(x)
    elif name.startswith("Contrast"):  # the mean of the grey image, rounded, as PIL takes it
        degenerate = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True).add(0.5).floor()
    elif name.startswith("Brightness"):
        degenerate = torch.zeros_like(x)
    else:  # Sharpness: PIL's SMOOTH kernel inside, the border kept
        kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
        smooth = F.conv2d(x.reshape(-1, 1, *x.shape[-2:]), kernel.view(1, 1, 3, 3)).round()
        degenerate = x.clone()
        degenerate[..., 1:-1, 1:-1] = smooth.view(n, 3, *smooth.shape[-2:])
    return _blend(degenerate, x, factor).round_().clamp_(0, 255)


class DeviceAugment:
    """RandomResizedCrop, flips, RandAugment and repeated augmentation of uint8 batches, per sample,
    on `device`; `cfg` has the `AugmentSection` fields (crop "resized", no AutoAugment) and img_size."""

    def __init__(self, cfg, device, seed: int):
        self.size, self.scale = cfg.img_size, (cfg.crop_scale_min, 1.0)
        self.hflip, self.vflip = cfg.hflip, cfg.vflip
        self.repeats, self.device = cfg.repeated_aug, torch.device(device)
        self.batch = getattr(cfg, "micro_batch_size", 0)  # images out per call; 0: every copy
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.ops, self.num_layers, weights = ([], 0, None) if not cfg.randaugment else \
            parse_policy(cfg.randaugment)
        # a weighted spec ("-w0") draws its layers' ops with replacement here (timm: without)
        self.weights = torch.tensor(weights if weights is not None else [1.0] * len(self.ops) or [1.0],
                                    device=self.device, dtype=torch.float32)
        # per op: probability, magnitude, its std and upper bound, on the device once (not every batch)
        self.op_table = torch.tensor([[op.prob, float(op.magnitude), float(op.magnitude_std),
                                       float(op.magnitude_max or 10.0)] for op in self.ops] or [[0.0] * 4],
                                     device=self.device, dtype=torch.float32)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(self.device)
        if x.ndim == 3:  # grey (B, H, W)
            x = x[:, None].expand(-1, 3, -1, -1)
        elif x.shape[-1] == 3 and x.shape[1] != 3:  # (B, H, W, 3)
            x = x.permute(0, 3, 1, 2)
        if self.repeats > 1:  # the copies adjacent, as the CPU path and DeiT's RASampler keep them; a
            # micro batch that is no multiple of the repeats drops the last image's extra copies
            keep = self.batch or len(x) * self.repeats
            x = x.repeat_interleave(self.repeats, 0)[:keep]
            labels = labels.repeat_interleave(self.repeats, 0)[:keep]
        theta = crop_theta(len(x), *x.shape[-2:], self.scale, (3 / 4, 4 / 3), self.hflip, self.vflip,
                           generator=self.generator, device=self.device)
        x = resized_crop(x.float(), self.size, theta).round_()
        for _ in range(self.num_layers):
            x = self.rand_augment_layer(x)
        return x.to(torch.uint8), labels.to(self.device)

    def draw_layer(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One RandAugment layer's draws for n samples: op index, applied or not, magnitude."""
        choice = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        probs, mean, std, top = self.op_table[choice].unbind(1)
        applied = self._rand(n) < probs
        noise = torch.randn(n, generator=self.generator, device=self.device)
        gauss = mean + noise * std.nan_to_num(posinf=0)
        magnitude = torch.where(torch.isinf(std), self._rand(n) * mean, gauss)  # mstd inf: U(0, m), as timm
        return choice, applied, torch.minimum(magnitude.clamp(min=0.0), top)

    def rand_augment_layer(self, x: torch.Tensor) -> torch.Tensor:
        choice, applied, magnitude = self.draw_layer(len(x))
        sign = torch.where(self._rand(len(x)) < 0.5, -1.0, 1.0)
        for k, op in enumerate(self.ops):
            picked = (applied & (choice == k)).nonzero().squeeze(1)
            if len(picked):
                arg = op_argument(op.name, magnitude[picked])
                if op.name in SIGNED:
                    arg = arg * sign[picked]
                x[picked] = apply_op(op.name, x[picked], arg)
        return x
