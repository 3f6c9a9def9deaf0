"""Fine-tuning pre-trained (FDSL, SSL, timm) or scratch weights on a target set, on Ray Train.

    fdsl finetune debug-finetune --weights runs/pretrain/debug --dataset digits --out runs/finetune/debug
    finetune(get_preset("debug-finetune"), "runs/pretrain/debug", "digits", "runs/finetune/debug")

Weights: a `fdsl pretrain` / `fdsl ssl` run (its folder or `model.safetensors`, with `config.json`
beside it), `scratch` (the architecture of `finetune.model`, else `pretrain.model`), or
`timm:<name>` (timm's pretrained weights, read from the local Hugging Face / torch hub cache only:
nothing downloads). A head whose class count differs from the target's is replaced by a new one,
and the run says so (log line and `metrics.json["head"]`).

Data path: the target arrays in Ray's object store -> `seeded_stream` over all epochs' rows
(seeded permutation per epoch, `augment_images`: RandomResizedCrop/flip/RandAugment) -> each
worker's `iter_torch_batches`. The val split goes through `resize_batch` once.
On the worker: `DeviceBatch` (normalise, optional random erasing and Mixup/CutMix, the loss; the
same as pre-training's), then the engine's (`make_engine`: plain torch, DDP with several
workers, or DeepSpeed) forward/backward/step with timm's optimizer and cosine-with-warm-up
schedule; evaluation of the whole val split every `eval_every` epochs, reported from every rank
with `ray.train.report`, so a Ray Tune trial wrapping `finetune(..., callbacks=[TuneReportCallback()])`
sees each epoch (in local mode, num_workers=0, the loop itself reports to Tune: `run.report`).

Run folder (`--out DIR`):
    experiment.json     the full experiment config
    metrics.jsonl       one line per evaluation: epoch, step, finetune_top1/top5/loss, train_loss, lr, ...
    metrics.json        final top-1/top-5/loss, the per-epoch curve, weights and head info,
                        loader vs training images/s, data-wait share, confusion matrix (<= 100 classes)
    confusion.npy       the final confusion matrix (rows: true class, columns: predicted)
    confusion.png       the same as a picture
    curves.png          val top-1 (beside the raw-pixel baselines) and train / val loss per epoch
    model.safetensors   the fine-tuned weights, config.json beside them (loadable by load_pretrained)
    train/              Ray Train's run folder: the newest two checkpoints (one at every evaluation
                        but the last) while the run goes, for `--resume`; removed once it finishes
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch

from fdsl.platform.console import quiet_data
from fdsl.platform.data.targets import TargetData, load_target
from fdsl.platform.train.augment import DeviceBatch
from fdsl.platform.train.checkpoints import (
    CKPT_TAG,
    KEEP_CHECKPOINTS,
    check_same_run,
    drop_checkpoints,
    restore_checkpoint,
    resume_checked,
    save_checkpoint,
)
from fdsl.platform.train.engine import make_engine
from fdsl.platform.train.evaluators import evaluate, pixel_baselines, val_tensors
from fdsl.platform.train.optim import create_optimizer, create_scheduler
from fdsl.platform.train.plans import PLAN, FinetunePlan, Memory
from fdsl.platform.train.plots import CONFUSION_PNG, CURVES_PNG, Panel, save_confusion_png, save_curves
from fdsl.platform.train.run import (
    CONFUSION_FILE,
    SUMMARY_FILE,
    MetricsLog,
    connect_checked,
    epoch_due,
    eval_text,
    finetune_summary,
    fit,
    owned_run,
    read_finetune_metrics,
    read_metrics,
    refuse_used_folder,
    report,
    seed_all,
    start_worker,
    write_experiment,
    write_finetune_summary,
)
from fdsl.platform.train.streams import eval_dataset, measure_loader, target_stream
from fdsl.platform.train.tracked import tracked
from fdsl.platform.train.weights import (
    build_model,
    check_model_of,
    check_weights_fit,
    export_weights,
    freeze_backbone,
    head_info,
    resolve_weights,
)

__all__ = ["build_model", "finetune", "head_info", "prepare_finetune", "resolve_weights"]


# --- the worker ------------------------------------------------------------------------------------
def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop of fine-tuning (TorchTrainer, Tune trials and tests all call this one).

    config: {"plan": FinetunePlan} (plus run.fit's reporting flag); no files are written when the
    plan's run_dir is None.
    """
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    plan: FinetunePlan = config[PLAN]
    cfg, spec, num_classes, run_dir = plan.cfg, plan.weights, plan.num_classes, plan.run_dir
    num_train = plan.num_train
    rank, world, device = start_worker(cfg)  # the same new head on every rank
    model = build_model(spec, num_classes, 0.0 if cfg.linear_probe else cfg.drop_path_rate)
    mean = spec.mean or model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5))
    std = spec.std or model.pretrained_cfg.get("std", (0.5, 0.5, 0.5))
    trained = freeze_backbone(model) if cfg.linear_probe else None
    optimizer = create_optimizer(model, cfg)
    net, optimizer = make_engine(cfg, model, optimizer, world, device)
    plain = net.module
    scheduler, schedule = create_scheduler(cfg, optimizer, num_train)
    total = schedule["total_steps"]
    first, curve = 0, []
    client = restore_checkpoint(cfg, run_dir, lambda d: net.load_checkpoint(d, tag=CKPT_TAG)[1], rank, world)
    if client is not None:  # a resumed run (--resume, or a restarted worker group)
        first, curve = client["step"], list(client["curve"])
        scheduler.load_state_dict(client["scheduler"])
    else:
        seed_all(cfg.seed + 1 + rank)  # different erasing/Mixup draws per rank
    scheduler.step_update(first)
    # without DeepSpeed the model stays fp32 (bf16 through autocast), so its inputs do too
    batch_ops = DeviceBatch(cfg, num_classes, device, mean, std,
                            dtype=None if cfg.use_deepspeed else torch.float32)

    val_x, val_y = val_tensors(ray.train.get_dataset_shard("val"), rank, world, device)
    batches = iter(ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=cfg.micro_batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
        device=device, dtypes={"image": torch.uint8, "label": torch.int64}))
    metrics_log = MetricsLog(run_dir, rank, first)
    metrics_log.event("resume" if client is not None else "start", step=first, total_steps=total,
                      world_size=world)
    last_eval = None
    wait_s = compute_s = startup_s = 0.0  # waits for batches after the first; the first: pipeline start
    loss_sum, loss_count = torch.zeros((), device=device), 0

    def set_train_mode():
        net.train()
        if cfg.linear_probe:
            plain.eval()  # frozen backbone: no dropout / drop-path, fixed statistics

    set_train_mode()
    start = time.perf_counter()
    for step in range(first + 1, total + 1):
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            raise RuntimeError(f"the training stream ended at step {step} of {total}") from None
        t1 = time.perf_counter()
        x, target = batch_ops.inputs(batch["image"], batch["label"])
        loss = batch_ops.loss(net(x), target)
        net.backward(loss)
        net.step()
        scheduler.step_update(step)
        loss_sum += loss.detach()
        loss_count += 1
        if step == first + 1:
            startup_s = t1 - t0
        else:
            wait_s += t1 - t0
        compute_s += time.perf_counter() - t1
        epoch = epoch_due(step, total, cfg.global_batch_size, num_train, cfg.eval_every)
        if epoch is None:
            continue
        net.eval()
        result = evaluate(net, val_x, val_y, num_classes, batch_ops.normalise)
        set_train_mode()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= world
        images_done = (step - first) * cfg.global_batch_size  # by this process
        row = {"epoch": epoch, "step": step, "finetune_top1": result["top1"], "finetune_top5": result["top5"],
               "finetune_loss": result["loss"], "train_loss": loss_sum.item() / max(1, loss_count),
               "lr": optimizer.param_groups[0]["lr"],
               "train_images_per_s": round(images_done / max(compute_s, 1e-9), 1),
               "images_per_s": round(images_done / max(time.perf_counter() - start, 1e-9), 1),
               "data_wait_fraction": round(wait_s / max(wait_s + compute_s, 1e-9), 4),
               "data_startup_s": round(startup_s, 3)}
        loss_sum.zero_()
        loss_count = 0
        curve.append(row)
        last_eval = result
        metrics_log.metrics(row)
        state = functools.partial(net.save_checkpoint, tag=CKPT_TAG, client_state={
            "step": step, "scheduler": scheduler.state_dict(), "world_size": world, "curve": curve})
        if step == total or not save_checkpoint(cfg, run_dir, state, step, rank, row, KEEP_CHECKPOINTS):
            report(row, config)  # the last evaluation: the run ends, no checkpoint
    patch = spec.patch_size
    if patch is None and getattr(plain, "patch_embed", None) is not None:
        patch = int(plain.patch_embed.patch_size[0])
    if run_dir:
        export_weights(plain, run_dir, {
            "architecture": spec.architecture, "img_size": spec.img_size, "patch_size": patch,
            "num_classes": num_classes, "mean": mean, "std": std, "finetune": cfg.to_dict(),
            "weights": spec.source}, rank)
    if rank != 0 or not run_dir:
        return
    write_finetune_summary(Path(run_dir), curve, last_eval, plan.extra, epochs=cfg.epochs, steps=total,
                           num_train=num_train, num_val=last_eval["count"], num_classes=num_classes,
                           world_size=world, seconds=round(time.perf_counter() - start, 2),
                           linear_probe=cfg.linear_probe, trained_parameters=trained)


# --- the driver ------------------------------------------------------------------------------------
def prepare_finetune(experiment, weights: str, dataset: str | None, out: str | os.PathLike, *,
                     resume: bool = False) -> tuple[FinetunePlan, TargetData]:
    """Every check that can fail before a worker starts; returns (the workers' plan, the target).

    ValueError / FileNotFoundError / FileExistsError name what to fix: a config out of range, an
    unknown or unreadable target set, weights that are not a finished run or not local, a model
    timm cannot build, a run folder in use (or, with `resume`, a run of another experiment).
    """
    if dataset:
        experiment.finetune.dataset = dataset
    experiment.validate()
    cfg = experiment.finetune
    out = check_same_run(out, experiment, SUMMARY_FILE) if resume else refuse_used_folder(out, resumable=True)
    if not weights:
        raise ValueError("--weights: got '', expected RUN/model.safetensors, a run folder, 'scratch' or "
                         "'timm:<name>'")
    spec = resolve_weights(weights, cfg, experiment.pretrain)
    data = load_target(cfg.dataset, train_fraction=cfg.train_fraction,
                       samples_per_class=cfg.samples_per_class, seed=cfg.seed)
    if len(data.train_labels) == 0 or len(data.val_labels) == 0:
        raise ValueError(f"dataset: {cfg.dataset} has {len(data.train_labels)} training and "
                         f"{len(data.val_labels)} val images after subsampling; need at least one each")
    shape = check_model_of(spec, data.num_classes)
    loaded = check_weights_fit(spec, data.num_classes) if spec.kind == "run" else None
    plan = FinetunePlan(cfg=cfg, weights=spec, num_classes=data.num_classes, num_train=len(data.train_labels),
                        run_dir=str(out),
                        memory=Memory(shape, (spec.img_size,), cfg.images_seen(len(data.train_labels))),
                        extra={"dataset": cfg.dataset, "weights": spec.to_dict(),
                               "head": head_info(spec, data.num_classes), "weights_loaded_tensors": loaded})
    return plan, data


@tracked("finetune")
def finetune(experiment, weights: str, dataset: str | None, out: str | os.PathLike, *,
             address: str | None = None, callbacks: Sequence[Any] = (), resume: bool = False) -> dict:
    """Fine-tune `weights` on `dataset` (default `experiment.finetune.dataset`) into run folder `out`.

    Checks everything first (`prepare_finetune`), holds the folder, starts (or joins, with
    `address`) Ray, measures the loader alone, runs the TorchTrainer (`callbacks` go to its
    RunConfig, e.g. Tune's `TuneReportCallback()`) and returns the summary of `metrics.json`. A
    checkpoint is kept at every evaluation but the last; `resume=True` continues the run in `out`
    from its newest one (the same experiment and weights). Logged to MLflow (`tracked`).
    """
    plan, data = prepare_finetune(experiment, weights, dataset, out, resume=resume)
    cfg, spec, out = plan.cfg, plan.weights, Path(plan.run_dir)
    with owned_run(out, "fdsl finetune", resume=resume, resumable=True):
        first = resume_checked(out, cfg.world_size, "finetune") if resume else 0
        connect_checked(cfg, "finetune", address, memory=plan.memory)
        quiet_data()  # one line per epoch, not bars
        print(f"finetune: {spec.kind} weights {spec.source} -> {cfg.dataset} ({plan.num_train} train / "
              f"{len(data.val_labels)} val images, {data.num_classes} classes); "
              f"{plan.extra['head']['reason']}", flush=True)
        write_experiment(out, experiment)
        train_ds = target_stream(data, cfg, spec.img_size, first)
        val_ds = eval_dataset(data.val_images, data.val_labels, spec.img_size)
        probe = measure_loader(train_ds, cfg.loader_probe_images, cfg.micro_batch_size) \
            if cfg.loader_probe_images else {}
        baselines = pixel_baselines(data.train_images, data.train_labels, data.val_images, data.val_labels,
                                    seed=cfg.seed)
        plan = dataclasses.replace(plan, extra={**plan.extra, "baselines": baselines,
                                                "throughput_probe": probe})
        start = time.perf_counter()
        fit(train_func, plan, cfg, out, {"train": train_ds, "val": val_ds}, callbacks=callbacks,
            keep_checkpoints=KEEP_CHECKPOINTS,
            progress=("finetune", cfg.schedule(plan.num_train)["total_steps"], eval_text))
        drop_checkpoints(out)
        return _report(out, cfg.dataset, spec.source, data.class_names, round(time.perf_counter() - start, 2))


def _report(out: Path, dataset: str, source: str, class_names, wall_seconds: float) -> dict:
    """The driver's pictures and console lines of a finished run, from the workers' files as they are."""
    metrics = read_finetune_metrics(out)
    tp, base = metrics["throughput"], metrics["baselines"]
    confusion = np.load(out / CONFUSION_FILE, allow_pickle=False)
    save_confusion_png(confusion, out / CONFUSION_PNG, f"{dataset} from {source}: top-1 "
                       f"{metrics['finetune_top1']:.3f}", class_names)
    save_curves(read_metrics(out), out / CURVES_PNG, f"fine-tuning on {dataset} from {source}",
                [Panel("val top-1", ["finetune_top1"], {"logistic regression (pixels)": base["logreg_top1"],
                                                         "1-NN (pixels)": base["knn1_top1"]}),
                 Panel("loss", ["train_loss", "finetune_loss"])], x="epoch")
    loader = f", loader alone {tp['loader_images_per_s']:.0f} images/s" if "loader_images_per_s" in tp else ""
    print(f"finetune: top-1 {metrics['finetune_top1']:.4f}, top-5 {metrics['finetune_top5']:.4f} after "
          f"{metrics['epochs']} epochs (raw-pixel baselines: logistic regression {base['logreg_top1']:.4f}, "
          f"1-NN {base['knn1_top1']:.4f}); train {tp['train_images_per_s']:.0f} images/s{loader}, data wait "
          f"{100 * tp['data_wait_fraction']:.1f}% -> {out} (metrics.json, {CONFUSION_PNG}, {CURVES_PNG})",
          flush=True)
    return finetune_summary({**metrics, "wall_seconds": wall_seconds}, out)
