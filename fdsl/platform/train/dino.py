"""DINO's model parts (Caron et al. ICCV'21): projection head, multi-crop wrapper, loss, EMA teacher.

From `lightly` (a self-supervised learning library), where it computes what the recipe the tests
pin computes: the loss with DINO's centring (`lightly.loss.DINOLoss`: centre averaged over ranks,
teacher temperature given per step), DINOv2's KoLeo regulariser (`lightly.loss.KoLeoLoss`) and the
teacher's EMA update (`lightly.models.utils.update_momentum`). Written here, because lightly lacks
them or computes something else: the head (lightly's `DINOProjectionHead` leaves the last layer at
torch's default init and uses the deprecated `nn.utils.weight_norm`; ours draws it trunc-normal, as
the pinned recipe does), DINOv2's Sinkhorn-Knopp targets (across ranks) and the cross-entropy
against them, the multi-crop wrapper and the step. Backbones are timm's. `fdsl.platform.train.ssl`
is the loop that uses them.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss as _LightlyDINOLoss
from lightly.loss import KoLeoLoss
from lightly.models.utils import update_momentum
from torch import nn


class DINOHead(nn.Module):
    """MLP (in -> hidden -> hidden -> bottleneck), L2-normalise, weight-normalised linear to out_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:], strict=False):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # weight norm written out: a direction per prototype (trained) times its scale (fixed to 1 by default)
        direction = nn.init.trunc_normal_(torch.empty(out_dim, bottleneck_dim), std=0.02)
        self.last_direction = nn.Parameter(direction)
        self.last_scale = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [self.last_direction, self.last_scale]

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_direction, dim=1) * self.last_scale)


class MultiCrop(nn.Module):
    """Backbone + head over a list of crop batches: crops of one size go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops, features: bool = False):
        """The head's outputs of every crop; with `features`, also the backbone's (same order)."""
        feats, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        feats = torch.cat(feats)
        return (self.head(feats), feats) if features else self.head(feats)


_KOLEO = KoLeoLoss()


def koleo_loss(x):
    """DINOv2's KoLeo regulariser (Sablayrolles et al.), lightly's, in float32: minus the mean log
    distance of each L2-normalised row of `x` to its nearest other row; large when features crowd."""
    return _KOLEO(x.float())


class DINOLoss(_LightlyDINOLoss):
    """Cross-entropy of the student's views against the teacher's targets for every other view.

    centering "center": lightly's DINO loss (teacher output minus an EMA centre, sharpened by the
    teacher temperature); "sinkhorn": DINOv2's Sinkhorn-Knopp targets, which lightly lacks.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center"):
        super().__init__(output_dim=out_dim, student_temp=student_temp, center_momentum=center_momentum)
        self.centering = centering

    def targets(self, teacher_out, teacher_temp: float):
        """The teacher's target distributions (2*B, K), no gradient."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_out.detach().float() / teacher_temp)
        return F.softmax((teacher_out - self.center[0]) / teacher_temp, dim=-1).detach()

    def forward(self, student_out, teacher_out, num_crops: int, teacher_temp: float):
        """student_out: (num_crops*B, K), the 2 global crops first; teacher_out: (2*B, K)."""
        if self.centering == "center":
            return super().forward(list(teacher_out.chunk(2)), list(student_out.chunk(num_crops)),
                                   teacher_temp=teacher_temp)
        student = (student_out / self.student_temp).chunk(num_crops)
        total, terms = 0.0, 0
        for iq, q in enumerate(self.targets(teacher_out, teacher_temp).chunk(2)):
            for v, s in enumerate(student):
                if v != iq:  # never the same view
                    total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                    terms += 1
        return total / terms


@torch.no_grad()
def sinkhorn_knopp(logits, iterations: int = 3):
    """DINOv2's Sinkhorn-Knopp targets: exp(logits) scaled so that every prototype gets an equal
    share of the batch (over all ranks) and every sample sums to 1; (N, K) -> (N, K)."""
    q = torch.exp(logits - logits.max()).t()  # (K, N); the shift cancels in the normalisation
    count = torch.tensor(float(q.shape[1]), device=q.device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        torch.distributed.all_reduce(count)
    total = q.sum()
    if distributed:
        torch.distributed.all_reduce(total)
    q /= total
    k = q.shape[0]
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            torch.distributed.all_reduce(rows)
        q /= rows * k
        q /= q.sum(dim=0, keepdim=True) * count
    return (q * count).t()


def ema_update(teacher, student, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (lightly's)."""
    update_momentum(student, teacher, momentum)


def build_backbone(arch: str, img_size: int, patch_size: int, drop_path_rate: float):
    """A headless timm model (num_classes 0); ViTs with dynamic_img_size for the local crops."""
    kwargs = dict(pretrained=False, num_classes=0, img_size=img_size, drop_path_rate=drop_path_rate)
    if patch_size:
        kwargs["patch_size"] = patch_size
    try:
        return timm.create_model(arch, dynamic_img_size=True, **kwargs)
    except TypeError:  # not a ViT: convnets take any input size and have no patches
        return timm.create_model(arch, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)


def headless(arch: str, img_size: int, patch_size: int):
    """The backbone without drop-path: what a built model is checked and probed with."""
    return build_backbone(arch, img_size, patch_size, 0.0)


def dino_step(student, teacher, loss_fn, optimizer, crops, *, teacher_temp: float, momentum: float,
              clip_grad: float = 0.0, freeze_last_layer: bool = False, student_module=None,
              koleo: float = 0.0) -> float:
    """One DINO optimisation step on a list of crop batches (2 global first); returns the DINO loss
    (without the KoLeo term, so that it stays comparable with ln(out_dim)).

    `student_module` is the student without its DDP wrapper (the teacher follows its parameters);
    `koleo` the weight of `koleo_loss` on the student's backbone features of each global crop.
    """
    plain = student_module if student_module is not None else student
    with torch.no_grad():
        teacher_out = teacher(crops[:2])
    if koleo > 0:
        student_out, feats = student(crops, features=True)
        spread = sum(koleo_loss(f) for f in feats[:2 * len(crops[0])].chunk(2))
    else:
        student_out, spread = student(crops), 0.0
    loss = loss_fn(student_out, teacher_out, len(crops), teacher_temp)
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"DINO loss is {loss.item()}; lower ssl.lr_base or raise ssl.clip_grad")
    optimizer.zero_grad(set_to_none=True)
    (loss + koleo * spread).backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(plain.parameters(), clip_grad)
    if freeze_last_layer:
        for p in plain.head.last_layer_parameters():
            p.grad = None
    optimizer.step()
    ema_update(teacher, plain, momentum)
    return loss.item()


def teacher_temp_at(cfg, epoch: float) -> float:
    """DINO's teacher temperature: warmup_teacher_temp raised linearly to teacher_temp over
    warmup_teacher_temp_epochs."""
    if epoch >= cfg.warmup_teacher_temp_epochs:
        return cfg.teacher_temp
    rise = (cfg.teacher_temp - cfg.warmup_teacher_temp) * epoch / cfg.warmup_teacher_temp_epochs
    return cfg.warmup_teacher_temp + rise
