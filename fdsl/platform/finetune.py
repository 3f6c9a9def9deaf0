"""Fine-tuning pre-trained (FDSL, SSL, timm) or scratch weights on a target set, on Ray Train.

    fdsl finetune debug-finetune --weights runs/pretrain/debug/model.safetensors --dataset digits \
        --out runs/finetune/debug
    finetune(get_preset("debug-finetune"), "runs/pretrain/debug", "digits", "runs/finetune/debug")

Weights: a `fdsl pretrain` / `fdsl ssl` run (its folder or `model.safetensors`, with `config.json`
beside it), `scratch` (the architecture of `finetune.model`, else `pretrain.model`), or
`timm:<name>` (timm's pretrained weights, read from the local Hugging Face / torch hub cache only:
nothing downloads). A head whose class count differs from the target's is replaced by a new one,
and the run says so (log line and `metrics.json["head"]`).

Data path: the target arrays in Ray's object store -> `ray.data.range` over all epochs' rows ->
`map_batches(finetune_batch)` (seeded permutation per epoch, RandomResizedCrop/flip/RandAugment)
-> each worker's `iter_torch_batches`. The val split goes through `resize_batch` once.
On the worker: normalise, optional random erasing and Mixup/CutMix, then torch DDP (or DeepSpeed)
forward/backward/step with timm's optimizer and cosine-with-warm-up schedule; evaluation of the
whole val split every `eval_every` epochs, reported from every rank with `ray.train.report`, so a
Ray Tune trial wrapping `finetune(..., callbacks=[TuneReportCallback()])` sees each epoch.

Run folder (`--out DIR`):
    experiment.json     the full experiment config
    metrics.jsonl       one line per evaluation: epoch, step, finetune_top1/top5/loss, train_loss, lr, ...
    metrics.json        final top-1/top-5/loss, the per-epoch curve, weights and head info,
                        loader vs training images/s, data-wait share, confusion matrix (<= 100 classes)
    confusion.npy       the final confusion matrix (rows: true class, columns: predicted)
    confusion.png       the same as a picture
    model.safetensors   the fine-tuned weights, config.json beside them (loadable by load_pretrained)
    train/              Ray Train's run folder
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fdsl.platform.finetune_config import FinetuneConfig, finetune_deepspeed_config

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EXPERIMENT_FILE = "experiment.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "metrics.jsonl"
CONFUSION_FILE = "confusion.npy"
CONFUSION_PNG = "confusion.png"
TRAIN_NAME = "train"

log = logging.getLogger("fdsl.finetune")


# --- weights: what to start from -------------------------------------------------------------------
def _timm_local_file(name: str) -> str:
    """The local file of timm's pretrained weights `name` (HF hub cache or torch hub dir), or ValueError."""
    import timm
    from timm.models import get_pretrained_cfg

    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ValueError(f"--weights: got 'timm:{name}', expected a timm model name "
                         "(see timm.list_pretrained())")
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"--weights: timm has no pretrained weights for {name!r} "
                         "(see timm.list_pretrained())")
    looked = []
    if cfg.file:
        looked.append(str(cfg.file))
        if Path(cfg.file).is_file():
            return str(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return found
        looked.append(f"{HF_HUB_CACHE} ({repo})")
    if cfg.url:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        looked.append(str(path))
        if path.is_file():
            return str(path)
    raise ValueError(f"--weights: timm:{name} has no local copy of its pretrained weights (looked in "
                     f"{'; '.join(looked) or 'nowhere: no source known'}) and nothing downloads here; "
                     "copy the file into that cache, or fine-tune a `fdsl pretrain` run or scratch")


def resolve_weights(weights: str, cfg: FinetuneConfig, pretrain_cfg) -> dict[str, Any]:
    """Check `--weights` on the driver and describe it for the workers (plain dict).

    Keys: kind (run | scratch | timm), architecture, img_size, patch_size, file, num_classes
    (the weights' head, None for scratch and timm), source (what the user passed), mean / std (the
    input normalisation the weights were trained with; None: the model's timm default).
    """
    if weights == "scratch":
        mean = getattr(pretrain_cfg, "norm_mean", None)  # as pre-training normalises, for a fair scratch arm
        std = getattr(pretrain_cfg, "norm_std", None)
        return {"kind": "scratch", "source": weights, "file": None, "num_classes": None,
                "architecture": cfg.model or pretrain_cfg.model,
                "img_size": cfg.img_size or pretrain_cfg.img_size,
                "patch_size": cfg.patch_size or pretrain_cfg.patch_size,
                "mean": None if mean is None else [mean] * 3, "std": None if std is None else [std] * 3}
    if weights.startswith("timm:"):
        name = weights[len("timm:"):]
        file = _timm_local_file(name)
        from timm.models import get_pretrained_cfg

        size = cfg.img_size or get_pretrained_cfg(name).input_size[-1]
        return {"kind": "timm", "source": weights, "file": file, "num_classes": None,
                "architecture": name, "img_size": size, "patch_size": None, "mean": None, "std": None}
    path = Path(weights)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    config_path = file.with_name(CONFIG_FILE)
    if not file.is_file() or not config_path.is_file():
        raise FileNotFoundError(f"--weights: {weights} is not a finished run (expected {WEIGHTS_FILE} and "
                                f"{CONFIG_FILE} beside it), 'scratch' or 'timm:<name>'")
    try:
        config = json.loads(config_path.read_text())
        arch, size, patch = config["architecture"], int(config["img_size"]), config.get("patch_size")
        num_classes = int(config["num_classes"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{config_path}: not a weights config of fdsl ({err})") from None
    _check_safetensors(file)
    if cfg.img_size and patch and cfg.img_size % int(patch):
        raise ValueError(f"finetune.img_size: got {cfg.img_size}, expected 0 (the weights' {size}) or a "
                         f"multiple of their patch size {patch}")
    # another img_size than the weights': timm resamples the position embedding when it loads them
    return {"kind": "run", "source": weights, "file": str(file.absolute()), "num_classes": num_classes,
            "architecture": arch, "img_size": cfg.img_size or size, "weights_img_size": size,
            "patch_size": patch,
            "mean": config.get("mean"), "std": config.get("std")}


def _check_safetensors(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{file}: not a readable safetensors file ({err})") from None


def build_model(spec: dict[str, Any], num_classes: int, drop_path_rate: float = 0.0):
    """The model of a resolved weights spec with a `num_classes` head (new if the counts differ)."""
    import timm

    if spec["kind"] == "scratch":
        return timm.create_model(spec["architecture"], pretrained=False, num_classes=num_classes,
                                 img_size=spec["img_size"], patch_size=spec["patch_size"],
                                 drop_path_rate=drop_path_rate)
    if spec["kind"] == "timm":
        return timm.create_model(spec["architecture"], pretrained=True,
                                 pretrained_cfg_overlay=dict(file=spec["file"]), num_classes=num_classes,
                                 img_size=spec["img_size"], drop_path_rate=drop_path_rate)
    from fdsl.platform.pretrain import load_pretrained

    return load_pretrained(spec["file"], num_classes=num_classes, img_size=spec["img_size"],
                           drop_path_rate=drop_path_rate)


def head_info(spec: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """Whether fine-tuning starts with a new classifier head, and why."""
    have = spec["num_classes"]
    if spec["kind"] == "scratch":
        reason = "scratch: every weight is new"
    elif spec["kind"] == "timm":
        reason = "timm weights: head replaced for the target classes"
    elif have == num_classes:
        reason = "class counts match: the pre-trained head is kept"
    else:
        reason = (f"the weights have a {have}-class head, the target has {num_classes} classes: "
                  "new head" if have else f"the weights have no head: new {num_classes}-class head")
    new = spec["kind"] != "run" or have != num_classes
    return {"weights_num_classes": have, "target_num_classes": num_classes, "new_head": new, "reason": reason}


def freeze_backbone(model) -> list[str]:
    """Linear probe: turn off gradients of everything but the classifier; returns the trained names."""
    head = model.get_classifier()
    keep = {id(p) for p in head.parameters()}
    trained = []
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in keep)
        if id(p) in keep:
            trained.append(name)
    assert trained, "the model has no classifier parameters to train"
    return trained


# --- the worker ------------------------------------------------------------------------------------
def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _export(model, spec: dict, cfg: FinetuneConfig, num_classes: int, out: Path, mean, std) -> None:
    """model.safetensors + config.json of the fine-tuned model (rank 0; ZeRO <= 2 keeps full params)."""
    from safetensors.torch import save_file

    try:
        from deepspeed.utils import safe_get_full_fp32_param
    except ImportError:  # plain torch run without DeepSpeed installed
        safe_get_full_fp32_param = None
    params = dict(model.named_parameters())
    state = {}
    for name, tensor in model.state_dict().items():
        full = safe_get_full_fp32_param(params[name]) if safe_get_full_fp32_param and name in params else None
        tensor = (tensor if full is None else full).detach().cpu()
        state[name] = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS_FILE)
    patch = spec["patch_size"]
    if patch is None:
        embed = getattr(model, "patch_embed", None)
        patch = int(embed.patch_size[0]) if embed is not None else None
    config = {"architecture": spec["architecture"], "img_size": spec["img_size"], "patch_size": patch,
              "num_classes": num_classes, "in_chans": 3, "mean": list(mean), "std": list(std),
              "interpolation": "bicubic", "finetune": cfg.to_dict(), "weights": spec["source"]}
    tmp = out / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, out / CONFIG_FILE)


def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop of fine-tuning (TorchTrainer, Tune trials and tests all call this one).

    config: {"finetune": FinetuneConfig as a dict, "weights": resolve_weights(...), "num_classes",
             "num_train", "run_dir": str or None (no files written when None), "extra": dict merged
             into metrics.json}.
    """
    import ray.train
    import ray.train.torch
    import timm.optim
    import torch
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing
    from timm.loss import SoftTargetCrossEntropy
    from timm.scheduler import CosineLRScheduler

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    cfg = FinetuneConfig.from_dict(config["finetune"])
    cfg.validate()
    spec, num_classes, run_dir = config["weights"], config["num_classes"], config.get("run_dir")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = cfg.worker_device()

    _seed_all(cfg.seed)  # the same new head on every rank
    model = build_model(spec, num_classes, 0.0 if cfg.linear_probe else cfg.drop_path_rate)
    mean = spec.get("mean") or model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5))
    std = spec.get("std") or model.pretrained_cfg.get("std", (0.5, 0.5, 0.5))
    trained = freeze_backbone(model) if cfg.linear_probe else None
    opt_name = {"sgd": "momentum", "adamw": "adamw"}[cfg.optimizer]  # timm's "sgd" is Nesterov
    opt_args = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    optimizer = timm.optim.create_optimizer_v2(model, opt_name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               **opt_args)
    in_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.precision]
    if cfg.use_deepspeed:
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                       config=finetune_deepspeed_config(cfg))
        net, plain = engine, engine.module
    else:
        net = ray.train.torch.prepare_model(model) if world > 1 else model.to(device)
        plain = model
    plan = cfg.schedule(config["num_train"])
    total, per_epoch = plan["total_steps"], plan["steps_per_epoch"]
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=cfg.min_lr,
                                  warmup_t=plan["warmup_steps"], warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)
    scheduler.step_update(0)
    _seed_all(cfg.seed + 1 + rank)  # different erasing/Mixup draws per rank

    mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                   num_classes=num_classes) if cfg.mixes else None)
    criterion = (SoftTargetCrossEntropy() if mixup is not None
                 else torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing))
    eraser = (RandomErasing(cfg.random_erasing, mode="pixel", device=str(device))
              if cfg.random_erasing > 0 else None)
    scale = torch.tensor([255.0 * s for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([255.0 * m for m in mean], device=device).view(1, 3, 1, 1)

    def normalise(images):
        return images.float().sub_(shift).div_(scale).to(in_dtype if cfg.use_deepspeed else torch.float32)

    val_x, val_y = _val_tensors(ray.train.get_dataset_shard("val"), rank, world, device)
    batches = iter(ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=cfg.micro_batch_size, drop_last=True, prefetch_batches=cfg.prefetch_batches,
        device=device, dtypes={"image": torch.uint8, "label": torch.int64}))
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if cfg.precision == "bf16" and not cfg.use_deepspeed else None)
    out = Path(run_dir) if run_dir and rank == 0 else None
    if out is not None:
        (out / CURVE_FILE).unlink(missing_ok=True)  # a restarted worker group starts the curve again
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
        x, target = normalise(batch["image"]), batch["label"]
        if eraser is not None:
            x = eraser(x)
        if mixup is not None:
            x, target = mixup(x, target)
        if cfg.use_deepspeed:
            loss = criterion(net(x).float(), target)
            net.backward(loss)
            net.step()
        else:
            if autocast is not None:
                with autocast:
                    logits = net(x)
            else:
                logits = net(x)
            loss = criterion(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.clip_grad)
            optimizer.step()
        scheduler.step_update(step)
        loss_sum += loss.detach()
        loss_count += 1
        if step == 1:
            startup_s = t1 - t0
        else:
            wait_s += t1 - t0
        compute_s += time.perf_counter() - t1
        epoch, end_of_epoch = divmod(step, per_epoch)
        if end_of_epoch or not (epoch % cfg.eval_every == 0 or step == total):
            continue
        net.eval()
        result = evaluate(net, val_x, val_y, num_classes, normalise)
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
        if out is not None:
            with open(out / CURVE_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")
        ray.train.report(row)
    if out is None:
        return
    _export(plain, spec, cfg, num_classes, out, mean, std)
    np.save(out / CONFUSION_FILE, last_eval["confusion"])
    final = curve[-1]
    metrics = {"finetune_top1": final["finetune_top1"], "finetune_top5": final["finetune_top5"],
               "finetune_loss": final["finetune_loss"], "best_top1": max(r["finetune_top1"] for r in curve),
               "epochs": cfg.epochs, "steps": total, "num_train": config["num_train"],
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
    tmp = out / f".{METRICS_FILE}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, out / METRICS_FILE)


# --- the driver ------------------------------------------------------------------------------------
def prepare_finetune(experiment, weights: str, dataset: str | None, out: str | os.PathLike):
    """Every check that can fail before a worker starts; returns (loop config, TargetData).

    ValueError / FileNotFoundError / FileExistsError name what to fix: a config out of range, an
    unknown or unreadable target set, weights that are not a finished run or not local, a model
    timm cannot build, a run folder in use.
    """
    from fdsl.platform.targets import load_target

    if dataset:
        experiment.finetune.dataset = dataset
    experiment.validate()
    cfg = experiment.finetune
    out = Path(out).absolute()
    if (out / METRICS_FILE).exists() or (out / TRAIN_NAME).exists():
        raise FileExistsError(f"{out} holds a fine-tuning run already; choose another --out")
    if not weights:
        raise ValueError("--weights: got '', expected RUN/model.safetensors, a run folder, 'scratch' or "
                         "'timm:<name>'")
    spec = resolve_weights(weights, cfg, experiment.pretrain)
    data = load_target(cfg.dataset, train_fraction=cfg.train_fraction,
                       samples_per_class=cfg.samples_per_class, seed=cfg.seed)
    if len(data.train_labels) == 0 or len(data.val_labels) == 0:
        raise ValueError(f"dataset: {cfg.dataset} has {len(data.train_labels)} training and "
                         f"{len(data.val_labels)} val images after subsampling; need at least one each")
    _check_model(spec, data.num_classes)
    loop = {"finetune": cfg.to_dict(), "weights": spec, "num_classes": data.num_classes,
            "num_train": len(data.train_labels), "run_dir": str(out),
            "extra": {"dataset": cfg.dataset, "weights": spec, "head": head_info(spec, data.num_classes)}}
    return loop, data


def _check_model(spec: dict, num_classes: int) -> None:
    import timm
    import torch

    arch = spec["architecture"].split(".")[0]
    if not timm.is_model(arch):
        raise ValueError(f"finetune.model: got {arch!r}, expected a timm model name (see timm.list_models())")
    if spec["kind"] == "run":
        return  # the weights' own architecture: it was built once already
    kwargs = {"img_size": spec["img_size"]}
    if spec["patch_size"]:
        kwargs["patch_size"] = spec["patch_size"]
    try:
        with torch.device("meta"):
            timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise ValueError(f"finetune.model: timm cannot build {arch!r} with {kwargs}: {err}") from None


def training_dataset(source: list, cfg: FinetuneConfig, num_train: int, img_size: int):
    """All epochs' training rows, augmented in Ray Data tasks (see fdsl.platform.target_stream)."""
    from fdsl.platform.target_stream import finetune_batch, stream_dataset

    rows = cfg.schedule(num_train)["total_steps"] * cfg.global_batch_size
    return stream_dataset(rows, cfg.augment_batch_size).map_batches(
        finetune_batch, batch_format="numpy", batch_size=cfg.augment_batch_size, num_cpus=cfg.augment_cpus,
        fn_kwargs=dict(source=source, num_images=num_train, seed=cfg.seed, img_size=img_size,
                       randaugment=cfg.randaugment, crop_scale_min=cfg.crop_scale_min, hflip=cfg.hflip))


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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def finetune(experiment, weights: str, dataset: str | None, out: str | os.PathLike, *,
             address: str | None = None, callbacks: Sequence[Any] = ()) -> dict:
    """Fine-tune `weights` on `dataset` (default `experiment.finetune.dataset`) into run folder `out`.

    Checks everything first (`prepare_finetune`), starts (or joins, with `address`) Ray, measures
    the loader alone, runs the TorchTrainer (`callbacks` go to its RunConfig, e.g. Tune's
    `TuneReportCallback()`) and returns the summary of `metrics.json`.
    """
    import ray
    import ray.data
    from ray.train import DataConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from fdsl.platform.manifest import atomic_write_text
    from fdsl.platform.pretrain import connect_checked
    from fdsl.platform.target_stream import eval_dataset, put_source

    loop, data = prepare_finetune(experiment, weights, dataset, out)
    cfg, spec = experiment.finetune, loop["weights"]
    out = Path(loop["run_dir"])
    connect_checked(cfg, "finetune", address)
    ray.data.DataContext.get_current().enable_progress_bars = False  # one line per epoch, not bars
    head = loop["extra"]["head"]
    print(f"finetune: {spec['kind']} weights {spec['source']} -> {cfg.dataset} "
          f"({loop['num_train']} train / {len(data.val_labels)} val images, {data.num_classes} classes); "
          f"{head['reason']}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EXPERIMENT_FILE, json.dumps(experiment.to_dict(), indent=2) + "\n")
    train_source = put_source(data.train_images, data.train_labels)
    val_source = put_source(data.val_images, data.val_labels)
    train_ds = training_dataset(train_source, cfg, loop["num_train"], spec["img_size"])
    val_ds = eval_dataset(val_source, len(data.val_labels), spec["img_size"])
    throughput = {}
    if cfg.loader_probe_images:
        throughput = measure_loader(train_ds, cfg.loader_probe_images, cfg.micro_batch_size)
    loop["extra"]["throughput_probe"] = throughput
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True  # rows in id order: with per-batch seeds, one worker's run is reproducible
    trainer = TorchTrainer(
        train_func, train_loop_config=loop,
        scaling_config=cfg.scaling_config(),
        run_config=RunConfig(name=TRAIN_NAME, storage_path=str(out), callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest))
    start = time.perf_counter()
    trainer.fit()
    metrics = read_finetune_metrics(out)
    metrics["throughput"].update(metrics.pop("throughput_probe", {}))
    tp = metrics["throughput"]
    if tp.get("loader_images_per_s"):
        tp["loader_to_train_ratio"] = round(tp["loader_images_per_s"] / max(tp["train_images_per_s"], 1e-9),
                                            2)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    confusion = np.load(out / CONFUSION_FILE, allow_pickle=False)
    save_confusion_png(confusion, out / CONFUSION_PNG,
                       f"{cfg.dataset} from {spec['source']}: top-1 {metrics['finetune_top1']:.3f}",
                       data.class_names)
    print(f"finetune: top-1 {metrics['finetune_top1']:.4f}, top-5 {metrics['finetune_top5']:.4f} after "
          f"{metrics['epochs']} epochs; train {tp['train_images_per_s']:.0f} images/s, loader alone "
          f"{tp.get('loader_images_per_s', float('nan')):.0f} images/s, data wait "
          f"{100 * tp['data_wait_fraction']:.1f}% -> {out}", flush=True)
    return summary(metrics, out)


def read_finetune_metrics(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a finished fine-tuning run."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {METRICS_FILE} (the fine-tuning run did not finish)")
    return json.loads(path.read_text())


def summary(metrics: dict, out: Path) -> dict:
    keys = ("finetune_top1", "finetune_top5", "finetune_loss", "best_top1", "epochs", "num_train", "head",
            "throughput", "wall_seconds")
    return {"run_dir": str(out), "model": str(out / WEIGHTS_FILE),
            **{k: metrics[k] for k in keys if k in metrics}}
