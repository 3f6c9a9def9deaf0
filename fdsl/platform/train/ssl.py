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
Train: the newest two checkpoints, every `ssl.checkpoint_every` epochs, for `--resume`; removed once
the run finishes), and the teacher backbone as `model.safetensors` + `config.json` (num_classes 0: no head)
in the format of `fdsl pretrain`, so
`load_pretrained(RUN, num_classes=N)` and `fdsl finetune --weights RUN` take it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from fdsl.platform.console import quiet_data
from fdsl.platform.data.targets import load_target
from fdsl.platform.train.augment import multicrop_views
from fdsl.platform.train.checkpoints import (
    KEEP_CHECKPOINTS,
    check_same_run,
    drop_checkpoints,
    load_state,
    restore_checkpoint,
    resume_checked,
    save_checkpoint,
    save_state,
)
from fdsl.platform.train.dino import (
    DINOHead,
    DINOLoss,
    MultiCrop,
    build_backbone,
    dino_step,
    headless,
    teacher_temp_at,
)
from fdsl.platform.train.evaluators import knn_probe
from fdsl.platform.train.optim import cosine, create_scheduler, dino_optimizer
from fdsl.platform.train.plans import PLAN, Memory, SSLModel, SSLPlan
from fdsl.platform.train.plots import CURVES_PNG, Panel, save_curves
from fdsl.platform.train.run import (
    MetricsLog,
    connect_checked,
    epoch_due,
    fit,
    owned_run,
    read_metrics,
    refuse_used_folder,
    report,
    start_worker,
    step_text,
    write_experiment,
)
from fdsl.platform.train.streams import seeded_stream
from fdsl.platform.train.tracked import tracked
from fdsl.platform.train.weights import WEIGHTS_FILE, check_buildable, export_weights


# --- the worker ----------------------------------------------------------------------------------------
def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop of DINO. config: {"plan": SSLPlan} (plus run.fit's reporting flag)."""
    plan: SSLPlan = config[PLAN]
    cfg, spec, run_dir, num_train = plan.cfg, plan.model, plan.run_dir, plan.num_train
    rank, world, device = start_worker(cfg)
    backbone = build_backbone(spec.architecture, spec.img_size, spec.patch_size, cfg.drop_path_rate)
    embed = backbone.num_features
    student = MultiCrop(backbone, DINOHead(embed, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim,
                                           norm_last_layer=cfg.norm_last_layer)).to(device)
    teacher = MultiCrop(build_backbone(spec.architecture, spec.img_size, spec.patch_size, 0.0),
                        DINOHead(embed, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim,
                                 norm_last_layer=cfg.norm_last_layer)).to(device)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    teacher.eval()
    plain = student
    if world > 1:
        student = ray.train.torch.prepare_model(student, move_to_device=False)
    optimizer = dino_optimizer(plain, cfg)
    loss_fn = DINOLoss(cfg.out_dim, cfg.student_temp, cfg.center_momentum, cfg.centering).to(device)
    scheduler, schedule = create_scheduler(cfg, optimizer, num_train)  # timm's, DINO's shape
    total = schedule["total_steps"]
    client = restore_checkpoint(cfg, run_dir, functools.partial(
        _load, student=plain, teacher=teacher, loss=loss_fn, optimizer=optimizer), rank, world)
    first = 0 if client is None else client["step"]
    if client is not None:
        scheduler.load_state_dict(client["scheduler"])
    mean, std = spec.mean, spec.std
    scale = torch.tensor([255.0 * s for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([255.0 * m for m in mean], device=device).view(1, 3, 1, 1)
    batches = iter(ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=cfg.micro_batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
        device=device))
    log = MetricsLog(run_dir, rank, first)
    log.event("resume" if client is not None else "start", step=first, total_steps=total, world_size=world)
    student.train()
    epoch_losses: list[float] = []
    last = time.perf_counter()
    for step in range(first, total):
        t0 = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter() - t0
        crops = [batch["global"][:, k] for k in range(2)]
        if "local" in batch:
            crops += [batch["local"][:, k] for k in range(batch["local"].shape[1])]
        crops = [c.float().sub_(shift).div_(scale) for c in crops]
        epoch = step * cfg.global_batch_size / num_train
        scheduler.step_update(step)
        lr = optimizer.param_groups[0]["lr"]
        wd = cosine(cfg.weight_decay, cfg.weight_decay_end, step, total)
        for group in optimizer.param_groups:
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
        if done is None:
            continue
        row = {"epoch": done, "step": step + 1, "ssl_loss": float(np.mean(epoch_losses)), "lr": lr}
        epoch_losses = []
        if done % cfg.checkpoint_every or step + 1 == total:
            report(row, config)
            continue
        client = {"step": step + 1, "scheduler": scheduler.state_dict(), "world_size": world}
        state = functools.partial(save_state, client=client, student=plain.state_dict(),
                                  teacher=teacher.state_dict(), loss=loss_fn.state_dict(),
                                  optimizer=optimizer.state_dict()) if rank == 0 else (lambda d: None)
        if not save_checkpoint(cfg, run_dir, state, step + 1, rank, row, KEEP_CHECKPOINTS):
            report(row, config)
    if run_dir:  # the teacher backbone, headless, in the format of `fdsl pretrain`
        export_weights(teacher.backbone, run_dir, {
            "architecture": spec.architecture, "img_size": spec.img_size,
            "patch_size": spec.patch_size, "num_classes": 0, "mean": mean, "std": std, "step": total,
            "ssl": cfg.to_dict(), "source": "dino teacher backbone"}, rank)


def _load(folder: Path, **into) -> dict:
    """Load an SSL checkpoint (`save_state`'s file, rank 0's) into the modules and optimizer `into`;
    returns its client state."""
    state = load_state(folder)
    for name, target in into.items():
        target.load_state_dict(state[name])
    return state["client"]


# --- the driver ------------------------------------------------------------------------------------------
def prepare_ssl(experiment, dataset: str | None, out: str | os.PathLike, *, resume: bool = False):
    """Every check that can fail before a worker starts; returns (the workers' plan, the target)."""
    if dataset:
        experiment.ssl.dataset = dataset
    experiment.validate()
    cfg, pre = experiment.ssl, experiment.pretrain
    out = check_same_run(out, experiment, WEIGHTS_FILE) if resume else refuse_used_folder(out, resumable=True)
    arch = cfg.model or pre.model
    img_size, patch = cfg.img_size or pre.img_size, cfg.patch_size or pre.patch_size
    local = cfg.local_img_size or max(patch, (img_size // 2) // patch * patch)
    if img_size % patch or local % patch:
        raise ValueError(f"ssl.local_img_size: crops of {img_size} and {local} px, expected multiples of "
                         f"patch_size {patch}")
    shape = check_buildable("ssl", arch, headless, img_size=img_size, patch_size=patch)
    data = load_target(cfg.dataset, train_fraction=cfg.train_fraction,
                       samples_per_class=cfg.samples_per_class, seed=cfg.seed)
    if len(data.train_labels) < cfg.micro_batch_size:
        raise ValueError(f"ssl.global_batch_size: got {cfg.global_batch_size}, but {cfg.dataset} keeps only "
                         f"{len(data.train_labels)} training images; lower the batch")
    mean = [pre.norm_mean] * 3 if getattr(pre, "norm_mean", None) is not None else [0.5] * 3
    std = [pre.norm_std] * 3 if getattr(pre, "norm_std", None) is not None else [0.5] * 3
    model = SSLModel(architecture=arch, img_size=img_size, patch_size=patch, local_size=local, mean=mean,
                     std=std)
    plan = SSLPlan(cfg=cfg, model=model, num_train=len(data.train_labels), run_dir=str(out),
                   memory=Memory(shape, (img_size,) * 2 + (local,) * cfg.num_local_crops,
                                 cfg.images_seen(len(data.train_labels))))
    return plan, data


@tracked("ssl")
def ssl(experiment, dataset: str | None, out: str | os.PathLike, *, address: str | None = None,
        callbacks=(), resume: bool = False) -> dict:
    """DINO pre-training of `experiment.ssl` on the training images of `dataset` into run folder `out`
    (a checkpoint every `ssl.checkpoint_every` epochs; `resume=True` continues the run in `out` from
    its newest one)."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    plan, data = prepare_ssl(experiment, dataset, out, resume=resume)
    cfg, spec = plan.cfg, plan.model
    out = Path(plan.run_dir)
    with owned_run(out, "fdsl ssl", resume=resume, resumable=True):
        first = resume_checked(out, cfg.world_size, "ssl") if resume else 0
        connect_checked(cfg, "ssl", address, memory=plan.memory)
        quiet_data()
        write_experiment(out, experiment)
        train_ds = seeded_stream(
            data.train_images, data.train_labels, num_rows=cfg.images_seen(plan.num_train), seed=cfg.seed,
            start_row=first * cfg.global_batch_size,
            augment=multicrop_views,
            batch_size=cfg.augment_batch_size, num_cpus=cfg.augment_cpus, img_size=spec.img_size,
            local_size=spec.local_size, num_local=cfg.num_local_crops,
            global_scale_min=cfg.global_crop_scale_min, local_scale_min=cfg.local_crop_scale_min,
            local_scale_max=cfg.local_crop_scale_max, hflip=cfg.hflip, color_jitter=cfg.color_jitter,
            blur=cfg.blur, solarize=cfg.solarize)
        print(f"ssl: DINO on {cfg.dataset} ({plan.num_train} unlabelled images), {spec.architecture} "
              f"{spec.img_size}px/{spec.patch_size}, 2 x {spec.img_size}px + {cfg.num_local_crops} x "
              f"{spec.local_size}px crops, {cfg.epochs} epochs", flush=True)
        start = time.perf_counter()
        fit(train_func, plan, cfg, out, {"train": train_ds}, callbacks=callbacks,
            keep_checkpoints=KEEP_CHECKPOINTS,
            progress=("ssl", cfg.schedule(plan.num_train)["total_steps"], step_text))
        drop_checkpoints(out)
        rows = read_metrics(out)
        first = float(np.mean([r["loss"] for r in rows[:max(1, len(rows) // 10)]]))
        final = float(np.mean([r["loss"] for r in rows[-max(1, len(rows) // 10):]]))
        steady = float(np.median([r["images_per_s"] for r in rows[len(rows) // 5:]]))
        result = {"run_dir": str(out), "model": str(out / WEIGHTS_FILE), "steps": len(rows),
                  "first_loss": first, "final_loss": final, "seconds": round(time.perf_counter() - start, 1),
                  "images_per_s": round(steady, 1)}
        result.update(knn_probe(out, data, cfg.seed, cfg.out_dim, spec))
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
