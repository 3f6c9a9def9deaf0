"""Pre-training a timm ViT on a formula data set with Ray Train + DeepSpeed.

    fdsl pretrain debug-vit --data runs/data/debug --out runs/pretrain/debug
    pretrain(get_preset("debug-vit"), "runs/data/debug", "runs/pretrain/debug")

Data path (Ray Data tasks, off the training loop): the data set (`read_dataset` of a generated
folder, or `render_dataset` rendering on the fly) -> shuffle -> `augment_batch` (gray to RGB,
RandomResizedCrop, RandAugment, repeated augmentation; uint8 out) -> each worker's
`get_dataset_shard("train").iter_torch_batches` with prefetching. (A small data set is held in the
object store and streamed with seeded draws instead: the `seeded_stream` fine-tuning and SSL use
too; see `training_dataset`.) On the worker: `DeviceBatch` (normalise, random erasing, Mixup/CutMix
with label smoothing, as timm's own GPU prefetcher does), then DeepSpeed forward/backward/step,
timm's cosine-with-warm-up schedule. The driver and worker skeleton are `fdsl.platform.train.run`'s,
the weights contract `fdsl.platform.train.weights`'.

Run folder (`--out RUN`):
    experiment.json     the full experiment config of the run (what `--resume` continues)
    metrics.jsonl       one line per optimizer step: step, epoch, loss, lr, images_per_s, ...
    events.jsonl        start / resume / checkpoint / done, with steps and world sizes
    curves.png          loss (beside ln(classes), chance) and learning rate per step
    train/              Ray Train's run: checkpoint_NNNNNNNNN/ folders (DeepSpeed state + RNG)
    model.safetensors   final fp32 weights (ZeRO partitions gathered), written by rank 0
    config.json         architecture, img_size, patch_size, num_classes, mean/std: see load_pretrained
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch

from fdsl.platform.console import quiet_data
from fdsl.platform.data.datasets import validate_dataset_dir
from fdsl.platform.train.augment import DeviceBatch
from fdsl.platform.train.checkpoints import (
    CKPT_TAG,
    check_resume,
    restore_checkpoint,
    resume_checked,
    save_checkpoint,
)
from fdsl.platform.train.config import PretrainConfig
from fdsl.platform.train.device_augment import DeviceAugment
from fdsl.platform.train.engine import create_model, input_normalization, make_engine
from fdsl.platform.train.optim import create_optimizer, create_scheduler
from fdsl.platform.train.plans import PLAN, Memory, PretrainPlan
from fdsl.platform.train.plots import CURVES_PNG, Panel, save_curves
from fdsl.platform.train.run import (
    MetricsLog,
    connect_checked,
    fit,
    owned_run,
    read_metrics,
    refuse_used_folder,
    report,
    seed_all,
    start_worker,
    step_text,
    write_experiment,
)
from fdsl.platform.train.streams import micro_batches, open_source, training_dataset
from fdsl.platform.train.tracked import tracked
from fdsl.platform.train.weights import WEIGHTS_FILE, check_buildable, export_weights


# --- the model --------------------------------------------------------------------------------------
def check_model(cfg: PretrainConfig, num_classes: int) -> dict[str, int]:
    """Fail early (ValueError) on a model timm does not know or cannot build; returns its shape."""
    return check_buildable("pretrain", cfg.model, lambda _, **__: create_model(cfg, num_classes),
                           img_size=cfg.img_size, patch_size=cfg.patch_size)


# --- the worker ----------------------------------------------------------------------------------------
def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop (TorchTrainer, Tune trials and tests all call this one function).

    config: {"plan": PretrainPlan} (plus run.fit's reporting flag); no metrics files and no
    export when the plan's run_dir is None.
    """
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # DeepSpeed's ZeRO calls a collective torch deprecates, once per step: not the user's concern
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    plan: PretrainPlan = config[PLAN]
    cfg, num_classes, num_images, run_dir = plan.cfg, plan.num_classes, plan.num_images, plan.run_dir
    rank, world, device = start_worker(cfg)  # the same initial model on every rank
    if cfg.use_deepspeed:  # before the model: ZeRO-3 partitions it as it is built
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    model = create_model(cfg, num_classes)
    mean, std = input_normalization(cfg, model)
    optimizer = create_optimizer(model, cfg)
    engine, optimizer = make_engine(cfg, model, optimizer, world, device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    scheduler, schedule = create_scheduler(cfg, optimizer, num_images)
    total = schedule["total_steps"]

    step = 0
    client = restore_checkpoint(cfg, run_dir, lambda d: engine.load_checkpoint(d, tag=CKPT_TAG)[1], rank,
                                world)
    if client is not None:
        step = client["step"]
        if client.get("schedule") == schedule:  # else the run was extended: keep the new schedule
            scheduler.load_state_dict(client["scheduler"])
    else:
        seed_all(cfg.seed + 1 + rank)  # different Mixup/erasing draws per rank
    scheduler.step_update(step)
    log = MetricsLog(run_dir, rank, step)
    log.event("resume" if client is not None else "start", step=step, total_steps=total,
              world_size=world, schedule=schedule)

    # DeepSpeed's bf16 model takes bf16 inputs; a plain model stays fp32 (bf16 through autocast)
    batch_ops = DeviceBatch(cfg, num_classes, device, mean, std,
                            dtype=None if cfg.use_deepspeed else torch.float32)
    batches = micro_batches(ray.train.get_dataset_shard("train"), cfg, device)
    # each rank and each (re)start its own draws, all from the config's seed
    on_device = DeviceAugment(cfg, device, seed=cfg.seed * 100_003 + rank * 1009 + step) \
        if cfg.augment_on == "device" else None

    engine.train()
    images_seen_per_epoch = max(1, num_images)
    last = time.perf_counter()
    metrics: dict[str, Any] = {"step": step}
    while step < total:
        waited, loss_sum = 0.0, torch.zeros((), device=device)
        lr = optimizer.param_groups[0]["lr"]
        for _ in range(cfg.grad_accum_steps):
            t = time.perf_counter()
            images, labels = next(batches)
            waited += time.perf_counter() - t
            if on_device is not None:
                images, labels = on_device(images, labels)
            x, target = batch_ops.inputs(images, labels)
            loss = batch_ops.loss(engine(x), target)
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach()
        step += 1
        scheduler.step_update(step)
        if distributed:
            torch.distributed.all_reduce(loss_sum)
        now = time.perf_counter()
        seconds, last = now - last, now
        metrics = {"step": step, "epoch": round(step * cfg.global_batch_size / images_seen_per_epoch, 4),
                   "loss": loss_sum.item() / (world * cfg.grad_accum_steps),
                   "lr": lr, "step_s": round(seconds, 5),
                   "data_wait_s": round(waited, 5),
                   "images_per_s": round(cfg.global_batch_size / seconds, 2)}
        log.metrics(metrics)
        if (step % cfg.checkpoint_every == 0 and step < total) or (step == total and not cfg.local_mode):
            state = functools.partial(engine.save_checkpoint, tag=CKPT_TAG, client_state={
                "step": step, "scheduler": scheduler.state_dict(), "schedule": schedule, "world_size": world})
            reported = save_checkpoint(cfg, run_dir, state, step, rank, metrics, cfg.keep_checkpoints)
            log.event("checkpoint", step=step)
            last = time.perf_counter()  # checkpoint time is not a step's time
            if not reported and (step % cfg.report_every == 0 or step == total):
                report(metrics, config)
        elif step % cfg.report_every == 0 or step == total:
            report(metrics, config)
    if run_dir:  # fp32 master weights, gathered from ZeRO partitions
        export_weights(engine.module, run_dir, {
            "architecture": cfg.model, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
            "num_classes": num_classes, "mean": mean, "std": std, "step": step, "pretrain": cfg.to_dict()},
            rank)
    log.event("done", step=step, model=str(Path(run_dir) / WEIGHTS_FILE) if run_dir else None)


# --- the driver ---------------------------------------------------------------------------------------
def prepare_run(experiment, data: str, out: str | os.PathLike, *, resume: bool = False) -> PretrainPlan:
    """Every check that can fail before a worker starts; returns the workers' plan.

    ValueError / FileNotFoundError / FileExistsError name what to fix: a config out of range, a
    global batch that does not split over the workers, an unknown timm model, a missing or
    incomplete data folder, a folder holding another experiment's images, a run folder in use.
    """
    experiment.validate()
    cfg = experiment.pretrain
    if resume:
        out = Path(out).absolute()
        check_resume(out, experiment)
    else:
        out = refuse_used_folder(out, resumable=True)
    if data != "stream" and not Path(data).exists():
        raise FileNotFoundError(f"--data: {data} does not exist (make it with `fdsl generate "
                                f"{experiment.name} --out {data}`, or pass --data stream)")

    if data == "stream":
        num_images, num_classes = experiment.data.num_classes * experiment.data.num_instances, \
            experiment.data.num_classes
    else:
        manifest = validate_dataset_dir(data, experiment)
        num_images, num_classes = int(manifest["num_rows"]), int(manifest["num_classes"])
    rows_per_worker = num_images * cfg.pass_copies(num_images) * cfg.repeated_aug // cfg.world_size
    if rows_per_worker < cfg.micro_batch_size:
        raise ValueError(f"pretrain.global_batch_size: got {cfg.global_batch_size}, but each of the "
                         f"{cfg.world_size} workers gets only {rows_per_worker} images per pass "
                         f"(micro batch {cfg.micro_batch_size}); lower the batch or the workers")
    shape = check_model(cfg, num_classes)
    return PretrainPlan(cfg=cfg, num_classes=num_classes, num_images=num_images, run_dir=str(out),
                        memory=Memory(shape, (cfg.img_size,),
                                      cfg.images_seen(num_images) if cfg.pass_copies(num_images) > 1 else 0))


@tracked("pretrain")
def pretrain(experiment, data: str, out: str | os.PathLike, *, resume: bool = False,
             address: str | None = None) -> dict:
    """Pre-train `experiment.pretrain` on `data` ("stream" or a generated folder) into run folder `out`.

    Starts (or joins, with `address`) Ray, checks everything first (see `prepare_run`), runs the
    TorchTrainer (restarting failed worker groups from the last checkpoint up to `max_failures`
    times; `resume=True` continues the run in `out` from its last checkpoint) and returns a summary.
    """
    plan = prepare_run(experiment, data, out, resume=resume)
    cfg = plan.cfg
    out = Path(plan.run_dir)
    with owned_run(out, "fdsl pretrain", resume=resume, resumable=True):
        if resume:  # held: nothing else writes here now
            resume_checked(out, cfg.world_size, "pretrain")
        connect_checked(cfg, "pretrain", address, memory=plan.memory)
        quiet_data()
        source = open_source(experiment, data)
        write_experiment(out, experiment)
        start = time.perf_counter()
        total = cfg.schedule(plan.num_images)["total_steps"]
        result = fit(train_func, plan, cfg, out, {"train": training_dataset(source, cfg, plan.num_images)},
                     preserve_order=cfg.preserve_order, keep_checkpoints=cfg.keep_checkpoints,
                     progress=("pretrain", total, step_text))
        save_curves(read_metrics(out), out / CURVES_PNG,
                    f"pre-training {cfg.model} on {data} ({plan.num_classes} classes)",
                    [Panel("loss", ["loss"], {"chance: ln(classes)": math.log(plan.num_classes)}),
                     Panel("learning rate", ["lr"])])
        return {**pretrain_summary(out), "seconds": round(time.perf_counter() - start, 1),
                "checkpoint": result.checkpoint and result.checkpoint.path}


def pretrain_summary(out: Path) -> dict:
    """What `pretrain` returns about the finished run in `out`, read from its files: steps, final
    loss, the steady images/s (the median after the first fifth of the steps), curves, weights."""
    rows = read_metrics(out)
    last = rows[-1] if rows else {}
    steady = [r["images_per_s"] for r in rows[len(rows) // 5:]] or [0.0]
    return {"run_dir": str(out), "steps": last.get("step", 0), "loss": last.get("loss"),
            "images_per_s": round(float(np.median(steady)), 2), "curves": str(out / CURVES_PNG),
            "model": str(out / WEIGHTS_FILE)}
