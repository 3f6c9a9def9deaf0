"""Fine-tuning pre-trained (FDSL, SSL, timm) or scratch weights on a target set, on Ray Train.

    fdsl finetune debug-finetune --weights runs/pretrain/debug/model.safetensors --dataset digits \
        --out runs/finetune/debug
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
    train/              Ray Train's run folder
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fdsl.atomic import atomic_write_text, save_figure
from fdsl.platform.console import quiet_data
from fdsl.platform.train.augment import DeviceBatch, augment_images
from fdsl.platform.train.baselines import pixel_baselines
from fdsl.platform.train.config import FinetuneConfig
from fdsl.platform.train.engine import make_engine
from fdsl.platform.train.plots import CURVES_PNG, Panel, save_curves
from fdsl.platform.train.run import (
    SUMMARY_FILE,
    MetricsLog,
    connect_checked,
    epoch_due,
    fit,
    read_metrics,
    refuse_used_folder,
    report,
    seed_all,
    start_worker,
    write_experiment,
)
from fdsl.platform.train.weights import (
    WEIGHTS_FILE,
    build_model,
    check_buildable,
    check_weights_fit,
    export_weights,
    freeze_backbone,
    head_info,
    resolve_weights,
)

CONFUSION_FILE = "confusion.npy"
CONFUSION_PNG = "confusion.png"
__all__ = ["build_model", "finetune", "head_info", "prepare_finetune", "resolve_weights"]


# --- the worker ------------------------------------------------------------------------------------
def _val_tensors(shard, rank: int, world: int, device):
    """This rank's share (rows with index % world == rank) of the val split, kept in memory."""
    import torch

    images, labels = [], []
    for batch in shard.iter_batches(batch_size=1024, batch_format="numpy"):
        keep = batch["index"] % world == rank
        images.append(torch.from_numpy(batch["image"][keep]))
        labels.append(torch.from_numpy(batch["label"][keep].astype(np.int64)))
    return torch.cat(images).to(device), torch.cat(labels).to(device)


def evaluate(model, images, labels, num_classes: int, normalise, batch_size: int = 256) -> dict:
    """Top-1/top-5 counts, summed loss and the confusion matrix over all ranks (all_reduce)."""
    import torch
    import torch.nn.functional as F

    k = min(5, num_classes)
    stats = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss_sum, count
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x, y = normalise(images[start:start + batch_size]), labels[start:start + batch_size]
            logits = model(x).float()
            top = logits.topk(k, dim=1).indices
            stats[0] += (top[:, 0] == y).sum().item()
            stats[1] += (top == y[:, None]).any(dim=1).sum().item()
            stats[2] += F.cross_entropy(logits, y, reduction="sum").item()
            stats[3] += len(y)
            confusion += torch.bincount((y * num_classes + top[:, 0]).cpu(),
                                        minlength=num_classes * num_classes).double()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(stats)
        torch.distributed.all_reduce(confusion)
    n = max(1.0, stats[3].item())
    return {"top1": stats[0].item() / n, "top5": stats[1].item() / n, "loss": stats[2].item() / n,
            "count": int(stats[3].item()),
            "confusion": confusion.view(num_classes, num_classes).long().numpy()}


def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop of fine-tuning (TorchTrainer, Tune trials and tests all call this one).

    config: {"finetune": FinetuneConfig as a dict, "weights": resolve_weights(...), "num_classes",
             "num_train", "run_dir": str or None (no files written when None), "extra": dict merged
             into metrics.json}.
    """
    import ray.train
    import timm.optim
    import torch
    from timm.scheduler import CosineLRScheduler

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    cfg = FinetuneConfig.from_dict(config["finetune"])
    cfg.validate()
    spec, num_classes, run_dir = config["weights"], config["num_classes"], config.get("run_dir")
    num_train = config["num_train"]
    rank, world, device = start_worker(cfg)  # the same new head on every rank
    model = build_model(spec, num_classes, 0.0 if cfg.linear_probe else cfg.drop_path_rate)
    mean = spec.get("mean") or model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5))
    std = spec.get("std") or model.pretrained_cfg.get("std", (0.5, 0.5, 0.5))
    trained = freeze_backbone(model) if cfg.linear_probe else None
    # timm's "sgd" is Nesterov momentum, its "momentum" plain momentum
    opt_name = {"sgd": "sgd" if cfg.nesterov else "momentum", "adamw": "adamw"}[cfg.optimizer]
    opt_args = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    optimizer = timm.optim.create_optimizer_v2(model, opt_name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               **opt_args)
    net, optimizer = make_engine(cfg, model, optimizer, world, device)
    plain = net.module
    plan = cfg.schedule(num_train)
    total = plan["total_steps"]
    scheduler = CosineLRScheduler(optimizer, t_initial=plan["cosine_steps"], lr_min=cfg.min_lr,
                                  warmup_t=plan["warmup_steps"], warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)
    scheduler.step_update(0)
    seed_all(cfg.seed + 1 + rank)  # different erasing/Mixup draws per rank
    # without DeepSpeed the model stays fp32 (bf16 through autocast), so its inputs do too
    batch_ops = DeviceBatch(cfg, num_classes, device, mean, std,
                            dtype=None if cfg.use_deepspeed else torch.float32)

    val_x, val_y = _val_tensors(ray.train.get_dataset_shard("val"), rank, world, device)
    batches = iter(ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=cfg.micro_batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
        device=device, dtypes={"image": torch.uint8, "label": torch.int64}))
    metrics_log = MetricsLog(run_dir, rank)  # a restarted worker group starts the curve again
    curve, last_eval = [], None
    wait_s = compute_s = startup_s = 0.0  # waits for batches after the first; the first: pipeline start
    loss_sum, loss_count = torch.zeros((), device=device), 0

    def set_train_mode():
        net.train()
        if cfg.linear_probe:
            plain.eval()  # frozen backbone: no dropout / drop-path, fixed statistics

    set_train_mode()
    start = time.perf_counter()
    for step in range(1, total + 1):
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
        if step == 1:
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
        images_done = step * cfg.global_batch_size
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
        report(row, config)
    patch = spec["patch_size"]
    if patch is None and getattr(plain, "patch_embed", None) is not None:
        patch = int(plain.patch_embed.patch_size[0])
    if run_dir:
        export_weights(plain, run_dir, {
            "architecture": spec["architecture"], "img_size": spec["img_size"], "patch_size": patch,
            "num_classes": num_classes, "mean": mean, "std": std, "finetune": cfg.to_dict(),
            "weights": spec["source"]}, rank)
    if rank != 0 or not run_dir:
        return
    out = Path(run_dir)
    np.save(out / CONFUSION_FILE, last_eval["confusion"])
    final = curve[-1]
    metrics = {"finetune_top1": final["finetune_top1"], "finetune_top5": final["finetune_top5"],
               "finetune_loss": final["finetune_loss"], "best_top1": max(r["finetune_top1"] for r in curve),
               "epochs": cfg.epochs, "steps": total, "num_train": num_train,
               "num_val": last_eval["count"], "num_classes": num_classes, "world_size": world,
               "seconds": round(time.perf_counter() - start, 2),
               "linear_probe": cfg.linear_probe, "trained_parameters": trained,
               "throughput": {"train_images_per_s": final["train_images_per_s"],
                              "images_per_s": final["images_per_s"],
                              "data_wait_fraction": final["data_wait_fraction"],
                              "data_startup_s": final["data_startup_s"]},
               "curve": curve}
    if num_classes <= 100:
        metrics["confusion"] = last_eval["confusion"].tolist()
    metrics.update(config.get("extra", {}))
    atomic_write_text(out / SUMMARY_FILE, json.dumps(metrics, indent=2) + "\n")


# --- the driver ------------------------------------------------------------------------------------
def prepare_finetune(experiment, weights: str, dataset: str | None, out: str | os.PathLike):
    """Every check that can fail before a worker starts; returns (loop config, TargetData).

    ValueError / FileNotFoundError / FileExistsError name what to fix: a config out of range, an
    unknown or unreadable target set, weights that are not a finished run or not local, a model
    timm cannot build, a run folder in use.
    """
    from fdsl.platform.data.targets import load_target

    if dataset:
        experiment.finetune.dataset = dataset
    experiment.validate()
    cfg = experiment.finetune
    out = refuse_used_folder(out)
    if not weights:
        raise ValueError("--weights: got '', expected RUN/model.safetensors, a run folder, 'scratch' or "
                         "'timm:<name>'")
    spec = resolve_weights(weights, cfg, experiment.pretrain)
    data = load_target(cfg.dataset, train_fraction=cfg.train_fraction,
                       samples_per_class=cfg.samples_per_class, seed=cfg.seed)
    if len(data.train_labels) == 0 or len(data.val_labels) == 0:
        raise ValueError(f"dataset: {cfg.dataset} has {len(data.train_labels)} training and "
                         f"{len(data.val_labels)} val images after subsampling; need at least one each")
    shape = _check_model(spec, data.num_classes)
    loaded = check_weights_fit(spec, data.num_classes) if spec["kind"] == "run" else None
    loop = {"finetune": cfg.to_dict(), "weights": spec, "num_classes": data.num_classes,
            "num_train": len(data.train_labels), "run_dir": str(out),
            "memory": {"shape": shape, "views": [spec["img_size"]]},
            "extra": {"dataset": cfg.dataset, "weights": spec, "head": head_info(spec, data.num_classes),
                      "weights_loaded_tensors": loaded}}
    return loop, data


def _check_model(spec: dict, num_classes: int) -> dict[str, int]:
    """The model timm builds for `spec` (ValueError if it cannot): its shape, for the memory check."""
    kwargs = {"img_size": spec["img_size"]}
    if spec["patch_size"]:
        kwargs["patch_size"] = spec["patch_size"]
    return check_buildable("finetune", spec["architecture"], num_classes=num_classes, **kwargs)


def training_dataset(data, cfg: FinetuneConfig, img_size: int):
    """All epochs' training rows of the target set `data`, augmented in Ray Data tasks (`seeded_stream`)."""
    from fdsl.platform.train.streams import seeded_stream

    num_train = len(data.train_labels)
    rows = cfg.schedule(num_train)["total_steps"] * cfg.global_batch_size
    return seeded_stream(data.train_images, data.train_labels, num_rows=-(-rows // cfg.repeated_aug),
                         seed=cfg.seed, augment=augment_images, batch_size=cfg.augment_batch_size,
                         num_cpus=cfg.augment_cpus, img_size=img_size, randaugment=cfg.randaugment,
                         crop_scale_min=cfg.crop_scale_min, hflip=cfg.hflip, vflip=cfg.vflip, crop=cfg.crop,
                         crop_padding=cfg.crop_padding, autoaugment=cfg.autoaugment, repeats=cfg.repeated_aug)


def measure_loader(ds, num_images: int, batch_size: int) -> dict[str, float]:
    """Images/s of the data path alone (no training): `num_images` rows pulled through `ds`."""
    start = first = time.perf_counter()
    count = 0
    for k, batch in enumerate(ds.limit(num_images).iter_batches(batch_size=batch_size, batch_format="numpy",
                                                                prefetch_batches=2)):
        if k == 0:
            first = time.perf_counter()
        else:
            count += len(batch["label"])
    end = time.perf_counter()
    return {"loader_images_per_s": round(count / max(end - first, 1e-9), 1),
            "loader_startup_s": round(first - start, 3)}


def save_confusion_png(confusion: np.ndarray, path: Path, title: str, class_names: Sequence[str]) -> Path:
    """The confusion matrix (rows: true, columns: predicted), row-normalised, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(confusion)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    side = min(12.0, 3.0 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(rates, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                                color="black" if rates[i, j] > 0.5 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _eval_text(row: dict) -> tuple[int, str]:
    """The console's progress of an evaluation row of metrics.jsonl."""
    return row["step"], (f"epoch {row['epoch']}, val top-1 {row['finetune_top1']:.3f}, "
                         f"train loss {row['train_loss']:.3f}")


def finetune(experiment, weights: str, dataset: str | None, out: str | os.PathLike, *,
             address: str | None = None, callbacks: Sequence[Any] = ()) -> dict:
    """Fine-tune `weights` on `dataset` (default `experiment.finetune.dataset`) into run folder `out`.

    Checks everything first (`prepare_finetune`), starts (or joins, with `address`) Ray, measures
    the loader alone, runs the TorchTrainer (`callbacks` go to its RunConfig, e.g. Tune's
    `TuneReportCallback()`) and returns the summary of `metrics.json`.
    """
    from fdsl.platform.train.streams import eval_dataset

    loop, data = prepare_finetune(experiment, weights, dataset, out)
    cfg, spec = experiment.finetune, loop["weights"]
    out = Path(loop["run_dir"])
    connect_checked(cfg, "finetune", address, memory=loop["memory"])
    quiet_data()  # one line per epoch, not bars
    head = loop["extra"]["head"]
    print(f"finetune: {spec['kind']} weights {spec['source']} -> {cfg.dataset} "
          f"({loop['num_train']} train / {len(data.val_labels)} val images, {data.num_classes} classes); "
          f"{head['reason']}", flush=True)
    write_experiment(out, experiment)
    loop["extra"]["baselines"] = pixel_baselines(data.train_images, data.train_labels, data.val_images,
                                                 data.val_labels, seed=cfg.seed)
    train_ds = training_dataset(data, cfg, spec["img_size"])
    val_ds = eval_dataset(data.val_images, data.val_labels, spec["img_size"])
    throughput = {}
    if cfg.loader_probe_images:
        throughput = measure_loader(train_ds, cfg.loader_probe_images, cfg.micro_batch_size)
    loop["extra"]["throughput_probe"] = throughput
    start = time.perf_counter()
    fit(train_func, loop, cfg, out, {"train": train_ds, "val": val_ds}, callbacks=callbacks,
        progress=("finetune", cfg.schedule(loop["num_train"])["total_steps"], _eval_text))
    metrics = read_finetune_metrics(out)
    metrics["throughput"].update(metrics.pop("throughput_probe", {}))
    tp = metrics["throughput"]
    if tp.get("loader_images_per_s"):
        tp["loader_to_train_ratio"] = round(tp["loader_images_per_s"] / max(tp["train_images_per_s"], 1e-9),
                                            2)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(metrics, indent=2) + "\n")
    confusion = np.load(out / CONFUSION_FILE, allow_pickle=False)
    save_confusion_png(confusion, out / CONFUSION_PNG,
                       f"{cfg.dataset} from {spec['source']}: top-1 {metrics['finetune_top1']:.3f}",
                       data.class_names)
    base = metrics["baselines"]
    save_curves(read_metrics(out), out / CURVES_PNG, f"fine-tuning on {cfg.dataset} from {spec['source']}",
                [Panel("val top-1", ["finetune_top1"], {"logistic regression (pixels)": base["logreg_top1"],
                                                         "1-NN (pixels)": base["knn1_top1"]}),
                 Panel("loss", ["train_loss", "finetune_loss"])], x="epoch")
    loader = f", loader alone {tp['loader_images_per_s']:.0f} images/s" if "loader_images_per_s" in tp else ""
    print(f"finetune: top-1 {metrics['finetune_top1']:.4f}, top-5 {metrics['finetune_top5']:.4f} after "
          f"{metrics['epochs']} epochs (raw-pixel baselines: logistic regression {base['logreg_top1']:.4f}, "
          f"1-NN {base['knn1_top1']:.4f}); train {tp['train_images_per_s']:.0f} images/s{loader}, data wait "
          f"{100 * tp['data_wait_fraction']:.1f}% -> {out} (metrics.json, {CONFUSION_PNG}, {CURVES_PNG})",
          flush=True)
    return summary(metrics, out)


def read_finetune_metrics(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a finished fine-tuning run."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {SUMMARY_FILE} (the fine-tuning run did not finish)")
    return json.loads(path.read_text())


def summary(metrics: dict, out: Path) -> dict:
    keys = ("finetune_top1", "finetune_top5", "finetune_loss", "best_top1", "epochs", "num_train", "head",
            "throughput", "wall_seconds", "baselines")
    base = metrics.get("baselines", {})
    return {"run_dir": str(out), "model": str(out / WEIGHTS_FILE),
            **{k: metrics[k] for k in keys if k in metrics},
            # flat numbers too: a sweep's trial record keeps the numeric metrics of this summary
            **{f"baseline_{k}": base[k] for k in ("logreg_top1", "knn1_top1") if k in base}}
