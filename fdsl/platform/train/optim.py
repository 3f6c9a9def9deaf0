"""The optimizers and the learning-rate schedule of the three trainers, in one place.

One schedule for every trainer: timm's `CosineLRScheduler` (`create_scheduler`), stepped per
optimizer step: linear warm-up from `warmup_lr` to the peak rate (`peak_lr()`), cosine to `min_lr`
(over the whole run, or from the warm-up's end with `warmup_prefix`, as DINO has it), then `min_lr`
for the cool-down (`ScheduleSection.schedule`). Optimizers: timm's (`create_optimizer_v2`: no weight
decay on biases and norms) for pre-training and fine-tuning, torch's AdamW on timm's parameter
groups for SSL, whose weight decay and teacher momentum follow DINO's per-step cosine (`cosine`).
`lr` is the rate the optimizer applies in every trainer; SSL gives its rate as `lr_base` per 256
images, as DINO does (`SSLConfig.peak_lr`).
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
    optimizer step (`step_update`), towards the rate each parameter group starts with (the peak);
    returns it with the step plan (`cfg.schedule`)."""
    plan = cfg.schedule(num_images)
    cosine_steps = plan["cosine_steps"] - (plan["warmup_steps"] if cfg.warmup_prefix else 0)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, cosine_steps), lr_min=cfg.min_lr,
                                  warmup_t=plan["warmup_steps"], warmup_lr_init=cfg.warmup_lr,
                                  warmup_prefix=cfg.warmup_prefix, t_in_epochs=False)
    return scheduler, plan


def dino_optimizer(model, cfg):
    """DINO's AdamW over timm's parameter groups (no weight decay on biases and norms), at the peak
    rate (`create_scheduler` steps it); its weight decay is set every step."""
    return optim.AdamW(param_groups_weight_decay(model, cfg.weight_decay), lr=cfg.peak_lr())


def cosine(base: float, final: float, step: int, total: int) -> float:
    """Cosine schedule from `base` at step 0 to `final` at step `total`."""
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
