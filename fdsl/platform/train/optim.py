"""The optimizers and learning-rate schedules of the three trainers, in one place.

Pre-training and fine-tuning: timm's optimizer (`create_optimizer_v2`: no weight decay on biases
and norms) and timm's `CosineLRScheduler`, stepped per optimizer step: linear warm-up from
`warmup_lr` to `lr`, cosine to `min_lr` over `cosine_steps`, then `min_lr` for the cool-down
(`ScheduleSection.schedule`). SSL (DINO): torch's AdamW on timm's parameter groups and DINO's own
per-step schedules (`dino_lr`, `cosine`). `lr` is the rate the optimizer applies in every trainer;
SSL gives its rate as `lr_base` per 256 images, as DINO does (`SSLConfig.peak_lr`).
"""

from __future__ import annotations

import math

import timm.optim
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import optim


def create_optimizer(model, cfg):
    """timm's optimizer of a pre-training or fine-tuning config. A fine-tuning config's "sgd" is
    momentum SGD, Nesterov with `nesterov` (timm's "sgd" is Nesterov, its "momentum" is not)."""
    if not hasattr(cfg, "nesterov"):  # pre-training: any timm optimizer name
        return timm.optim.create_optimizer_v2(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = {"sgd": "sgd" if cfg.nesterov else "momentum", "adamw": "adamw"}[cfg.optimizer]
    extra = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    return timm.optim.create_optimizer_v2(model, name, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def create_scheduler(cfg, optimizer, num_images: int) -> tuple[CosineLRScheduler, dict]:
    """timm's warm-up + cosine schedule of `cfg` over a data set of `num_images`, stepped per
    optimizer step (`step_update`); returns it with the step plan (`cfg.schedule`)."""
    plan = cfg.schedule(num_images)
    scheduler = CosineLRScheduler(optimizer, t_initial=plan["cosine_steps"], lr_min=cfg.min_lr,
                                  warmup_t=plan["warmup_steps"], warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)
    return scheduler, plan


def dino_optimizer(model, weight_decay: float):
    """DINO's AdamW over timm's parameter groups (no weight decay on biases and norms); its lr and
    weight decay are set every step."""
    return optim.AdamW(param_groups_weight_decay(model, weight_decay), lr=0.0)


def cosine(base: float, final: float, step: int, total: int) -> float:
    """Cosine schedule from `base` at step 0 to `final` at step `total`."""
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def dino_lr(cfg, step: int, plan: dict) -> float:
    """DINO's learning rate: linear warm-up from 0 to the peak rate (lr_base x global_batch_size /
    256), then cosine to min_lr."""
    peak = cfg.peak_lr()
    warm = plan["warmup_steps"]
    if step < warm:
        return peak * step / warm
    return cosine(peak, cfg.min_lr, step - warm, plan["total_steps"] - warm)
