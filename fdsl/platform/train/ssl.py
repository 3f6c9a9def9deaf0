"""Small-data self-supervised pre-training (Gani et al. BMVC'22): DINO on the target set itself.

    fdsl ssl debug-dino --dataset digits --out runs/ssl/digits
    ssl(get_preset("debug-dino"), "digits", "runs/ssl/digits")
    fdsl finetune debug-finetune --weights runs/ssl/digits --dataset digits --out runs/finetune/ssl

DINO (Caron et al. ICCV'21): a student and a teacher ViT (timm, `dynamic_img_size` so one network
takes both crop sizes), each followed by a projection head (`DINOHead`). Every image gives 2 global
and N local crops (`multicrop_views`, in the Ray Data tasks of `seeded_stream`); the teacher sees
the global crops, the student all of them, and the student learns to predict the teacher's centred,
sharpened distribution over `out_dim` prototypes for every other view (`DINOLoss`). The teacher is
the exponential moving average of the student (`ema_update`), its momentum raised from
`momentum_teacher` to 1 on a cosine schedule. Only the head, the loss and the EMA are written here;
backbone, optimiser and the data path are timm, torch and Ray's.

Run folder (`--out RUN`): experiment.json, metrics.jsonl (one line per step: loss, lr, wd,
momentum, teacher_temp, images/s), curves.png (loss beside ln(out_dim), lr), knn.json, train/ (Ray
Train), and the teacher backbone as `model.safetensors` + `config.json` (num_classes 0: no head)
in the format of `fdsl pretrain`, so
`load_pretrained(RUN, num_classes=N)` and `fdsl finetune --weights RUN` take it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fdsl.atomic import atomic_write_text
from fdsl.platform.console import quiet_data
from fdsl.platform.train.augment import batch_resized_crop
from fdsl.platform.train.config import SSLConfig
from fdsl.platform.train.plots import CURVES_PNG, Panel, save_curves
from fdsl.platform.train.run import (
    MetricsLog,
    connect_checked,
    epoch_due,
    fit,
    read_metrics,
    refuse_used_folder,
    report,
    start_worker,
    step_text,
    write_experiment,
)
from fdsl.platform.train.weights import WEIGHTS_FILE, check_buildable, export_weights


# --- DINO: head, loss, EMA (nothing installed provides them) ----------------------------------------------
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


def koleo_loss(x, eps: float = 1e-8):
    """DINOv2's KoLeo regulariser (Sablayrolles et al.): minus the mean log distance of each
    L2-normalised row of `x` to its nearest other row; large when features crowd together."""
    x = F.normalize(x.float(), dim=-1, eps=eps)
    dots = x @ x.t()
    dots.fill_diagonal_(-2.0)  # never its own neighbour
    nearest = dots.argmax(dim=1)
    return -torch.log(F.pairwise_distance(x, x[nearest], eps=eps) + eps).mean()


class DINOLoss(nn.Module):
    """Cross-entropy of the student's views against the teacher's centred, sharpened global views."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center"):
        super().__init__()
        self.student_temp, self.center_momentum, self.centering = student_temp, center_momentum, centering
        self.register_buffer("center", torch.zeros(1, out_dim))

    def targets(self, teacher_out, teacher_temp: float):
        """The teacher's target distributions (2*B, K), no gradient."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_out.detach().float() / teacher_temp)
        return F.softmax((teacher_out - self.center) / teacher_temp, dim=-1).detach()

    def forward(self, student_out, teacher_out, num_crops: int, teacher_temp: float):
        """student_out: (num_crops*B, K), the 2 global crops first; teacher_out: (2*B, K)."""
        student = (student_out / self.student_temp).chunk(num_crops)
        teacher = self.targets(teacher_out, teacher_temp).chunk(2)
        total, terms = 0.0, 0
        for iq, q in enumerate(teacher):
            for v, s in enumerate(student):
                if v == iq:
                    continue  # never the same view
                total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                terms += 1
        self.update_center(teacher_out)
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher_out) -> None:
        """center <- m * center + (1 - m) * mean teacher output over all ranks' batches."""
        batch_center = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor(float(len(teacher_out)), device=teacher_out.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_center / count, alpha=1 - self.center_momentum)


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
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (no grad)."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def cosine(base: float, final: float, step: int, total: int) -> float:
    """Cosine schedule from `base` at step 0 to `final` at step `total`."""
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def lr_at(cfg: SSLConfig, step: int, plan: dict) -> float:
    """Linear warm-up to the batch-scaled peak, then cosine to min_lr."""
    peak = cfg.lr * cfg.global_batch_size / 256
    warm = plan["warmup_steps"]
    if step < warm:
        return peak * step / warm
    return cosine(peak, cfg.min_lr, step - warm, plan["total_steps"] - warm)


def teacher_temp_at(cfg: SSLConfig, epoch: float) -> float:
    if epoch >= cfg.warmup_teacher_temp_epochs:
        return cfg.teacher_temp
    rise = (cfg.teacher_temp - cfg.warmup_teacher_temp) * epoch / cfg.warmup_teacher_temp_epochs
    return cfg.warmup_teacher_temp + rise


def build_backbone(arch: str, img_size: int, patch_size: int, drop_path_rate: float):
    """A headless timm model (num_classes 0); ViTs with dynamic_img_size for the local crops."""
    import timm

    kwargs = dict(pretrained=False, num_classes=0, img_size=img_size, drop_path_rate=drop_path_rate)
    if patch_size:
        kwargs["patch_size"] = patch_size
    try:
        return timm.create_model(arch, dynamic_img_size=True, **kwargs)
    except TypeError:  # not a ViT: convnets take any input size and have no patches
        return timm.create_model(arch, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)


def _headless(arch: str, img_size: int, patch_size: int):
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
        raise RuntimeError(f"DINO loss is {loss.item()}; lower ssl.lr or raise ssl.clip_grad")
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


# --- multi-crop augmentation (a Ray Data task) ---------------------------------------------------------
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


# --- the worker ----------------------------------------------------------------------------------------
def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop of DINO. config: {"ssl": SSLConfig dict, "model": {architecture, img_size,
    patch_size, local_size, mean, std}, "num_train": int, "run_dir": str or None}."""
    import ray.train
    import ray.train.torch
    from timm.optim import param_groups_weight_decay

    cfg = SSLConfig.from_dict(config["ssl"])
    cfg.validate()
    spec, run_dir, num_train = config["model"], config.get("run_dir"), config["num_train"]
    rank, world, device = start_worker(cfg)
    backbone = build_backbone(spec["architecture"], spec["img_size"], spec["patch_size"], cfg.drop_path_rate)
    embed = backbone.num_features
    student = MultiCrop(backbone, DINOHead(embed, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim,
                                           norm_last_layer=cfg.norm_last_layer)).to(device)
    teacher = MultiCrop(build_backbone(spec["architecture"], spec["img_size"], spec["patch_size"], 0.0),
                        DINOHead(embed, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim,
                                 norm_last_layer=cfg.norm_last_layer)).to(device)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    teacher.eval()
    plain = student
    if world > 1:
        student = ray.train.torch.prepare_model(student, move_to_device=False)
    groups = param_groups_weight_decay(plain, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=0.0)
    loss_fn = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum, cfg.centering).to(device)
    plan = cfg.schedule(num_train)
    total = plan["total_steps"]
    mean, std = spec["mean"], spec["std"]
    scale = torch.tensor([255.0 * s for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([255.0 * m for m in mean], device=device).view(1, 3, 1, 1)
    batches = iter(ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=cfg.micro_batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
        device=device))
    log = MetricsLog(run_dir, rank)
    student.train()
    epoch_losses: list[float] = []
    last = time.perf_counter()
    for step in range(total):
        t0 = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter() - t0
        crops = [batch["global"][:, k] for k in range(2)]
        if "local" in batch:
            crops += [batch["local"][:, k] for k in range(batch["local"].shape[1])]
        crops = [c.float().sub_(shift).div_(scale) for c in crops]
        epoch = step * cfg.global_batch_size / num_train
        lr = lr_at(cfg, step, plan)
        wd = cosine(cfg.weight_decay, cfg.weight_decay_end, step, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if group["weight_decay"] > 0:
                group["weight_decay"] = wd
        momentum = cosine(cfg.momentum_teacher, 1.0, step, total)
        temp = teacher_temp_at(cfg, epoch)
        loss = dino_step(student, teacher, loss_fn, optimizer, crops, teacher_temp=temp, momentum=momentum,
                         clip_grad=cfg.clip_grad, freeze_last_layer=epoch < cfg.freeze_last_layer_epochs,
                         student_module=plain, koleo=cfg.koleo_weight)
        epoch_losses.append(loss)
        now = time.perf_counter()
        row = {"step": step + 1, "epoch": round((step + 1) * cfg.global_batch_size / num_train, 4),
               "loss": loss, "lr": lr, "wd": wd,
               "momentum": momentum, "teacher_temp": temp, "data_wait_s": round(waited, 5),
               "images_per_s": round(cfg.global_batch_size / max(now - last, 1e-9), 2)}
        last = now
        log.metrics(row)
        done = epoch_due(step + 1, total, cfg.global_batch_size, num_train)
        if done is not None:
            report({"epoch": done, "step": step + 1, "ssl_loss": float(np.mean(epoch_losses)), "lr": lr},
                   config)
            epoch_losses = []
    if run_dir:  # the teacher backbone, headless, in the format of `fdsl pretrain`
        export_weights(teacher.backbone, run_dir, {
            "architecture": spec["architecture"], "img_size": spec["img_size"],
            "patch_size": spec["patch_size"], "num_classes": 0, "mean": mean, "std": std, "step": total,
            "ssl": cfg.to_dict(), "source": "dino teacher backbone"}, rank)


# --- the driver ---------------------------------------------------------------------------------------
def _knn_probe(out: Path, data, cfg: SSLConfig, spec: dict) -> dict:
    """Cosine 20-NN top-1 on the val split of the teacher's features (labels of the training images),
    beside the same architecture at random initialisation (seeded): whether DINO learned anything.
    Also written to the run folder as knn.json."""
    import torch

    from fdsl.platform.train.baselines import feature_knn
    from fdsl.platform.train.weights import load_pretrained

    images = (data.train_images, data.train_labels, data.val_images, data.val_labels)
    kwargs = dict(img_size=spec["img_size"], mean=spec["mean"], std=spec["std"])
    teacher = feature_knn(load_pretrained(out, num_classes=0), *images, **kwargs)
    torch.manual_seed(cfg.seed)
    random_init = feature_knn(_headless(spec["architecture"], img_size=spec["img_size"],
                                        patch_size=spec["patch_size"]), *images, **kwargs)
    result = {"knn_top1": teacher, "knn_top1_random_init": random_init, "knn_k": 20,
              "ln_out_dim": round(float(np.log(cfg.out_dim)), 4)}
    atomic_write_text(out / "knn.json", json.dumps(result, indent=2) + "\n")
    return result


# --- the driver ------------------------------------------------------------------------------------------
def prepare_ssl(experiment, dataset: str | None, out: str | os.PathLike):
    """Every check that can fail before a worker starts; returns (loop config, TargetData)."""

    from fdsl.platform.data.targets import load_target

    if dataset:
        experiment.ssl.dataset = dataset
    experiment.validate()
    cfg, pre = experiment.ssl, experiment.pretrain
    out = refuse_used_folder(out)
    arch = cfg.model or pre.model
    img_size, patch = cfg.img_size or pre.img_size, cfg.patch_size or pre.patch_size
    local = cfg.local_img_size or max(patch, (img_size // 2) // patch * patch)
    if img_size % patch or local % patch:
        raise ValueError(f"ssl.local_img_size: crops of {img_size} and {local} px, expected multiples of "
                         f"patch_size {patch}")
    shape = check_buildable("ssl", arch, _headless, img_size=img_size, patch_size=patch)
    data = load_target(cfg.dataset, train_fraction=cfg.train_fraction,
                       samples_per_class=cfg.samples_per_class, seed=cfg.seed)
    if len(data.train_labels) < cfg.micro_batch_size:
        raise ValueError(f"ssl.global_batch_size: got {cfg.global_batch_size}, but {cfg.dataset} keeps only "
                         f"{len(data.train_labels)} training images; lower the batch")
    mean = [pre.norm_mean] * 3 if getattr(pre, "norm_mean", None) is not None else [0.5] * 3
    std = [pre.norm_std] * 3 if getattr(pre, "norm_std", None) is not None else [0.5] * 3
    loop = {"ssl": cfg.to_dict(), "num_train": len(data.train_labels), "run_dir": str(out),
            "model": {"architecture": arch, "img_size": img_size, "patch_size": patch, "local_size": local,
                      "mean": mean, "std": std},
            "memory": {"shape": shape, "views": [img_size] * 2 + [local] * cfg.num_local_crops}}
    return loop, data


def ssl(experiment, dataset: str | None, out: str | os.PathLike, *, address: str | None = None,
        callbacks=()) -> dict:
    """DINO pre-training of `experiment.ssl` on the training images of `dataset` into run folder `out`."""
    from fdsl.platform.train.streams import seeded_stream

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    loop, data = prepare_ssl(experiment, dataset, out)
    cfg, spec = experiment.ssl, loop["model"]
    out = Path(loop["run_dir"])
    connect_checked(cfg, "ssl", address, memory=loop["memory"])
    quiet_data()
    write_experiment(out, experiment)
    rows = cfg.schedule(loop["num_train"])["total_steps"] * cfg.global_batch_size
    train_ds = seeded_stream(
        data.train_images, data.train_labels, num_rows=rows, seed=cfg.seed, augment=multicrop_views,
        batch_size=cfg.augment_batch_size, num_cpus=cfg.augment_cpus, img_size=spec["img_size"],
        local_size=spec["local_size"], num_local=cfg.num_local_crops,
        global_scale_min=cfg.global_crop_scale_min, local_scale_min=cfg.local_crop_scale_min,
        local_scale_max=cfg.local_crop_scale_max, hflip=cfg.hflip, color_jitter=cfg.color_jitter,
        blur=cfg.blur, solarize=cfg.solarize)
    print(f"ssl: DINO on {cfg.dataset} ({loop['num_train']} unlabelled images), {spec['architecture']} "
          f"{spec['img_size']}px/{spec['patch_size']}, 2 x {spec['img_size']}px + {cfg.num_local_crops} x "
          f"{spec['local_size']}px crops, {cfg.epochs} epochs", flush=True)
    start = time.perf_counter()
    fit(train_func, loop, cfg, out, {"train": train_ds}, callbacks=callbacks,
        progress=("ssl", cfg.schedule(loop["num_train"])["total_steps"], step_text))
    rows = read_metrics(out)
    first = float(np.mean([r["loss"] for r in rows[:max(1, len(rows) // 10)]]))
    final = float(np.mean([r["loss"] for r in rows[-max(1, len(rows) // 10):]]))
    result = {"run_dir": str(out), "model": str(out / WEIGHTS_FILE), "steps": len(rows), "first_loss": first,
              "final_loss": final, "seconds": round(time.perf_counter() - start, 1),
              "images_per_s": round(float(np.median([r["images_per_s"] for r in rows[len(rows) // 5:]])), 1)}
    result.update(_knn_probe(out, data, cfg, spec))
    title = (f"DINO on {cfg.dataset}: teacher k-NN top-1 {result['knn_top1']:.3f} "
             f"(random init {result['knn_top1_random_init']:.3f})")
    result["curves"] = str(save_curves(rows, out / CURVES_PNG, title, [
        Panel("loss", ["loss"], {"collapse: ln(out_dim)": math.log(cfg.out_dim)}),
        Panel("learning rate", ["lr"])]))
    print(f"ssl: loss {first:.3f} -> {final:.3f} in {result['steps']} steps (ln out_dim = "
          f"{np.log(cfg.out_dim):.2f}); teacher k-NN top-1 {result['knn_top1']:.3f} on the val split, "
          f"the same backbone at random initialisation {result['knn_top1_random_init']:.3f} -> "
          f"{out / WEIGHTS_FILE}, curves: {result['curves']}", flush=True)
    return result
