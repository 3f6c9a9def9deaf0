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

import json
import logging
import math
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fdsl.platform.console import quiet_data
from fdsl.platform.train.augment import DeviceBatch, augment_batch, augment_images
from fdsl.platform.train.config import PretrainConfig
from fdsl.platform.train.engine import make_engine
from fdsl.platform.train.plots import CURVES_PNG, Panel, save_curves
from fdsl.platform.train.run import (
    EVENTS_FILE,
    EXPERIMENT_FILE,
    TRAIN_NAME,
    MetricsLog,
    connect_checked,
    fit,
    read_metrics,
    refuse_used_folder,
    report,
    seed_all,
    start_worker,
    step_text,
    write_experiment,
)
from fdsl.platform.train.weights import WEIGHTS_FILE, check_buildable, export_weights, load_pretrained

CKPT_TAG = "state"
"""The engine's tag (sub-folder) of the state inside each Ray checkpoint folder."""
RESUME_FIXED = ("model", "img_size", "patch_size", "num_workers", "use_deepspeed", "zero_stage",
                "precision", "global_batch_size", "grad_accum_steps", "optimizer")
"""Pre-training fields a resumed run must keep (the checkpoint's shapes and partitions depend on them)."""
__all__ = ["CKPT_TAG", "EVENTS_FILE", "load_pretrained", "open_source", "pretrain",
           "read_metrics", "training_dataset"]


# --- the model --------------------------------------------------------------------------------------
def create_model(cfg: PretrainConfig, num_classes: int, **kwargs):
    """A freshly initialised timm model of the config (`timm.create_model`, no download)."""
    import timm

    return timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, img_size=cfg.img_size,
                             patch_size=cfg.patch_size, drop_path_rate=cfg.drop_path_rate, **kwargs)


def input_normalization(cfg: PretrainConfig, model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel in [0, 1] units: the config's, else the model's timm default."""
    if cfg.norm_mean is not None:
        return (cfg.norm_mean,) * 3, (cfg.norm_std,) * 3
    return (tuple(model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5))),
            tuple(model.pretrained_cfg.get("std", (0.5, 0.5, 0.5))))


def check_model(cfg: PretrainConfig, num_classes: int) -> dict[str, int]:
    """Fail early (ValueError) on a model timm does not know or cannot build; returns its shape."""
    return check_buildable("pretrain", cfg.model, lambda _, **__: create_model(cfg, num_classes),
                           img_size=cfg.img_size, patch_size=cfg.patch_size)


# --- the data path (runs in Ray Data tasks) ----------------------------------------------------
def open_source(experiment, data: str):
    """The Ray Dataset of `data`: "stream" (rendered on the fly) or a folder made by `fdsl generate`."""
    from fdsl.platform.data.datasets import read_dataset, render_dataset

    return render_dataset(experiment) if data == "stream" else read_dataset(data)


def _augment_pass(batch: dict[str, np.ndarray], *, seed: int, **augment) -> dict[str, np.ndarray]:
    """Ray Data adapter for a set read anew every pass: seeds the batch's augmentation from (seed,
    pass, its first image's class and instance), then `augment_batch`.

    The pass is the data set's Ray Data execution index, from which Ray Data's own seeded shuffles
    (`RandomSeedConfig`) derive each execution's seed too.
    """
    import ray.data

    from fdsl.platform.train.streams import seed_batch

    if len(batch["label"]):
        seed_batch(seed, ray.data.DataContext.get_current()._execution_idx, int(batch["label"][0]),
                   int(batch["instance"][0]))
    return augment_batch(batch, **augment)


def training_dataset(source, cfg: PretrainConfig, num_images: int):
    """The Ray Dataset the trainer splits over its workers: shuffled, augmented, uint8 CHW.

    A data set smaller than `cfg.min_pass_images` is read once into the object store and streamed
    by `seeded_stream`: run-long row ids (the run's total_steps x global_batch_size images), each
    row a seeded draw with seeded augmentation, in parallel blocks; no per-epoch read or all-to-all
    shuffle, whose start-up would cost seconds every few steps. A larger set is read and shuffled
    anew every pass: the shuffle and each batch's augmentation are seeded from (seed, pass), so
    every pass differs and the same config gives the same passes.
    """
    from ray.data import RandomSeedConfig

    from fdsl.platform.data.datasets import take_all
    from fdsl.platform.train.streams import seeded_stream

    augment = dict(img_size=cfg.img_size, randaugment=cfg.randaugment, crop_scale_min=cfg.crop_scale_min,
                   hflip=cfg.hflip, vflip=cfg.vflip, crop=cfg.crop, crop_padding=cfg.crop_padding,
                   autoaugment=cfg.autoaugment, repeats=cfg.repeated_aug)
    if cfg.pass_copies(num_images) > 1:  # a small set: held in the object store and streamed
        rows = take_all(source, "pretrain")
        rows.sort(key=lambda r: (int(r["label"]), int(r["instance"])))  # the set's order, not the read's
        images = cfg.schedule(num_images)["total_steps"] * cfg.global_batch_size
        return seeded_stream(np.stack([r["image"] for r in rows]),
                             np.array([r["label"] for r in rows], dtype=np.int64),
                             num_rows=-(-images // cfg.repeated_aug),  # each id gives repeated_aug copies
                             seed=cfg.seed, augment=augment_images, batch_size=cfg.augment_batch_size,
                             num_cpus=cfg.augment_cpus, **augment)
    order = RandomSeedConfig(seed=cfg.seed, reseed_after_execution=True)  # a new seeded order each pass
    if cfg.shuffle == "global":
        ds = source.random_shuffle(seed=order)
    else:
        ds = source.randomize_block_order(seed=order)
    return ds.map_batches(_augment_pass, batch_format="numpy", batch_size=cfg.augment_batch_size,
                          num_cpus=cfg.augment_cpus, fn_kwargs=dict(seed=cfg.seed, **augment))


def _micro_batches(shard, cfg: PretrainConfig, device):
    """Endless (images uint8, labels int64) micro batches of a worker's shard, pass after pass."""
    import torch

    buffer = cfg.shuffle_buffer if cfg.shuffle == "local" and cfg.shuffle_buffer > 0 else None
    while True:
        count = 0
        for batch in shard.iter_torch_batches(batch_size=cfg.micro_batch_size, drop_last=True,
                                              prefetch_batches=cfg.prefetch_batches,
                                              local_shuffle_buffer_size=buffer,
                                              local_shuffle_seed=cfg.seed if buffer else None, device=device,
                                              dtypes={"image": torch.uint8, "label": torch.int64}):
            count += 1
            yield batch["image"], batch["label"]
        if count == 0:
            raise RuntimeError("a worker's data shard holds less than one micro batch; use a smaller "
                               "global_batch_size or fewer workers")


# --- checkpoint state beyond DeepSpeed's: RNG of each rank -------------------------------------------
def _save_rng(directory: Path, rank: int) -> None:
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, directory / f"rng-rank{rank}.pt")


def _load_rng(directory: Path, rank: int) -> None:
    import torch

    state = torch.load(directory / f"rng-rank{rank}.pt", weights_only=True)
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --- the worker ----------------------------------------------------------------------------------------
def _save_checkpoint(engine, scheduler, plan: dict, step: int, rank: int, world: int, metrics: dict) -> None:
    """DeepSpeed state + this rank's RNG, reported to Ray Train from every rank (one merged folder)."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="fdsl-ckpt-") as d:
        engine.save_checkpoint(d, tag=CKPT_TAG, client_state={
            "step": step, "scheduler": scheduler.state_dict(), "schedule": plan, "world_size": world})
        _save_rng(Path(d), rank)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{step:09d}")


def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop (TorchTrainer, Tune trials and tests all call this one function).

    config: {"pretrain": PretrainConfig as a dict, "num_classes": int, "num_images": int,
             "run_dir": str or None (no metrics files and no export when None)}.
    """
    import ray.train
    import timm.optim
    import torch
    from timm.scheduler import CosineLRScheduler

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # DeepSpeed's ZeRO calls a collective torch deprecates, once per step: not the user's concern
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    cfg = PretrainConfig.from_dict(config["pretrain"])
    cfg.validate()
    num_classes, num_images, run_dir = config["num_classes"], config["num_images"], config.get("run_dir")
    rank, world, device = start_worker(cfg)  # the same initial model on every rank
    if cfg.use_deepspeed:  # before the model: ZeRO-3 partitions it as it is built
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
    model = create_model(cfg, num_classes)
    mean, std = input_normalization(cfg, model)
    optimizer = timm.optim.create_optimizer_v2(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    engine, optimizer = make_engine(cfg, model, optimizer, world, device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    plan = cfg.schedule(num_images)
    total = plan["total_steps"]
    scheduler = CosineLRScheduler(optimizer, t_initial=plan["cosine_steps"], lr_min=cfg.min_lr,
                                  warmup_t=plan["warmup_steps"], warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)

    step, checkpoint = 0, None if cfg.local_mode else ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            _, client = engine.load_checkpoint(d, tag=CKPT_TAG)
            if client is None or client["world_size"] != world:
                raise RuntimeError(f"checkpoint {checkpoint.path} was written by "
                                   f"{client and client['world_size']} workers, this run has {world}")
            step = client["step"]
            if client.get("schedule") == plan:  # else the run was extended: keep the new schedule
                scheduler.load_state_dict(client["scheduler"])
            _load_rng(Path(d), rank)
    else:
        seed_all(cfg.seed + 1 + rank)  # different Mixup/erasing draws per rank
    scheduler.step_update(step)
    log = MetricsLog(run_dir, rank, step)
    log.event("resume" if checkpoint is not None else "start", step=step, total_steps=total,
              world_size=world, schedule=plan)

    # DeepSpeed's bf16 model takes bf16 inputs; a plain model stays fp32 (bf16 through autocast)
    batch_ops = DeviceBatch(cfg, num_classes, device, mean, std,
                            dtype=None if cfg.use_deepspeed else torch.float32)
    batches = _micro_batches(ray.train.get_dataset_shard("train"), cfg, device)

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
        if (step % cfg.checkpoint_every == 0 or step == total) and not cfg.local_mode:
            _save_checkpoint(engine, scheduler, plan, step, rank, world, metrics)
            log.event("checkpoint", step=step)
            last = time.perf_counter()  # checkpoint time is not a step's time
        elif step % cfg.report_every == 0 or step == total:
            report(metrics, config)
    if run_dir:  # fp32 master weights, gathered from ZeRO partitions
        export_weights(engine.module, run_dir, {
            "architecture": cfg.model, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
            "num_classes": num_classes, "mean": mean, "std": std, "step": step, "pretrain": cfg.to_dict()},
            rank)
    log.event("done", step=step, model=str(Path(run_dir) / WEIGHTS_FILE) if run_dir else None)


# --- the driver ---------------------------------------------------------------------------------------
def _check_resume(out: Path, experiment) -> None:
    """The resumed experiment keeps what the run's checkpoints depend on (RESUME_FIXED)."""
    path = out / EXPERIMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no run to resume ({EXPERIMENT_FILE} missing); "
                                "start it without --resume")
    saved = json.loads(path.read_text()).get("pretrain", {})
    for name in RESUME_FIXED:
        have, want = saved.get(name), getattr(experiment.pretrain, name)
        if have != want:
            raise ValueError(f"pretrain.{name}: got {want!r}, expected {have!r} as in the run being resumed "
                             "(its checkpoints depend on it)")


CHECKPOINT_GLOBALS = frozenset({
    "deepspeed.runtime.zero.config.ZeroStageEnum", "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler"})
"""The classes beyond torch's weights-only set that DeepSpeed's checkpoint files name (ZeRO stage,
partition addresses, the loss scaler): nothing else may appear in a checkpoint that `--resume` loads."""


def check_checkpoints(out: Path) -> int:
    """Refuse (ValueError) a run folder whose checkpoint files could run code when loaded.

    DeepSpeed loads its checkpoint files with `torch.load(weights_only=False)` (pickle): a crafted
    file there would run code in every worker. Before a resume starts any worker, every `*.pt` file
    of every checkpoint is scanned (torch's `get_unsafe_globals_in_checkpoint`: the pickle's opcodes,
    nothing loaded) and must name only torch's weights-only types and `CHECKPOINT_GLOBALS`; each
    checkpoint's client state must hold what the loop reads. Returns the number of files checked."""
    import torch

    checked = 0
    for folder in sorted((out / TRAIN_NAME).glob("checkpoint_*")):
        named: dict[Path, list[str]] = {}  # each file's allowed non-torch globals, scanned once
        for path in sorted(p for p in folder.rglob("*.pt") if p.is_file()):
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except (ValueError, RuntimeError, OSError, EOFError) as err:
                raise ValueError(f"--resume: {path} is not a checkpoint file torch.save wrote ({err}); "
                                 "refusing to load it: start the run anew in another --out") from None
            foreign = [name for name in unsafe if name not in CHECKPOINT_GLOBALS]
            if foreign:
                raise ValueError(f"--resume: {path} names {foreign[0]!r}, which loading would call (not a "
                                 "checkpoint fdsl or DeepSpeed wrote); refusing to load it: start the run "
                                 "anew in another --out") from None
            named[path] = unsafe
            checked += 1
        _check_client_state(folder, named)
    return checked


def _check_client_state(folder: Path, named: dict[Path, list[str]]) -> None:
    """The client state of a checkpoint (DeepSpeed's model states or the torch engine's file): a dict
    with an int step and world size and a dict scheduler state; ValueError naming the file otherwise.
    `named`: the globals `check_checkpoints` found (and allowed) in each file."""
    import torch

    from fdsl.platform.train.engine import STATE_FILE

    tag = folder / CKPT_TAG
    files = [tag / STATE_FILE] if (tag / STATE_FILE).is_file() else \
        sorted(tag.glob("*model_states.pt"))  # mp_rank_00_... or, with ZeRO-3, zero_pp_rank_N_mp_rank_00_...
    for path in files:
        with torch.serialization.safe_globals([_import(name) for name in named[path]]):  # usually none
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        client = state.get("client", state) if isinstance(state, dict) else None
        problems = [] if isinstance(client, dict) else ["not a dict"]
        if not problems:
            problems = [f"{key} is not {kind.__name__}" for key, kind in
                        (("step", int), ("world_size", int), ("scheduler", dict))
                        if not isinstance(client.get(key), kind) or isinstance(client.get(key), bool)]
        if problems:
            raise ValueError(f"--resume: {path}: the checkpoint's client state is damaged ({problems[0]}); "
                             "resume from another run, or start anew in another --out")


def _import(qualified: str):
    import importlib

    module, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module), name)


def prepare_run(experiment, data: str, out: str | os.PathLike, *, resume: bool = False) -> dict:
    """Every check that can fail before a worker starts; returns the train_func config.

    ValueError / FileNotFoundError / FileExistsError name what to fix: a config out of range, a
    global batch that does not split over the workers, an unknown timm model, a missing or
    incomplete data folder, a folder holding another experiment's images, a run folder in use.
    """
    experiment.validate()
    cfg = experiment.pretrain
    if resume:
        if cfg.local_mode:
            raise ValueError("--resume: a local-mode run (pretrain.num_workers=0) keeps no checkpoints; "
                             "start a new run, or use num_workers >= 1 for a run that can resume")
        out = Path(out).absolute()
        _check_resume(out, experiment)
        check_checkpoints(out)
    else:
        out = refuse_used_folder(out, resumable=True)
    if data != "stream" and not Path(data).exists():
        raise FileNotFoundError(f"--data: {data} does not exist (make it with `fdsl generate "
                                f"{experiment.name} --out {data}`, or pass --data stream)")
    from fdsl.platform.data.datasets import validate_dataset_dir

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
    return {"pretrain": cfg.to_dict(), "num_classes": num_classes, "num_images": num_images,
            "run_dir": str(out), "memory": {"shape": shape, "views": [cfg.img_size]}}


def pretrain(experiment, data: str, out: str | os.PathLike, *, resume: bool = False,
             address: str | None = None) -> dict:
    """Pre-train `experiment.pretrain` on `data` ("stream" or a generated folder) into run folder `out`.

    Starts (or joins, with `address`) Ray, checks everything first (see `prepare_run`), runs the
    TorchTrainer (restarting failed worker groups from the last checkpoint up to `max_failures`
    times; `resume=True` continues the run in `out` from its last checkpoint) and returns a summary.
    """
    loop_config = prepare_run(experiment, data, out, resume=resume)
    cfg = experiment.pretrain
    out = Path(loop_config["run_dir"])
    connect_checked(cfg, "pretrain", address, memory=loop_config["memory"])
    quiet_data()
    source = open_source(experiment, data)
    write_experiment(out, experiment)
    start = time.perf_counter()
    total = cfg.schedule(loop_config["num_images"])["total_steps"]
    result = fit(train_func, loop_config, cfg, out,
                 {"train": training_dataset(source, cfg, loop_config["num_images"])},
                 preserve_order=cfg.preserve_order, keep_checkpoints=cfg.keep_checkpoints,
                 progress=("pretrain", total, step_text))
    rows = read_metrics(out)
    last = rows[-1] if rows else {}
    steady = [r["images_per_s"] for r in rows[len(rows) // 5:]] or [0.0]
    classes = loop_config["num_classes"]
    curves = save_curves(rows, out / CURVES_PNG, f"pre-training {cfg.model} on {data} ({classes} classes)",
                         [Panel("loss", ["loss"], {"chance: ln(classes)": math.log(classes)}),
                          Panel("learning rate", ["lr"])])
    return {"run_dir": str(out), "steps": last.get("step", 0), "loss": last.get("loss"),
            "images_per_s": round(float(np.median(steady)), 2),
            "seconds": round(time.perf_counter() - start, 1), "curves": str(curves),
            "model": str(out / WEIGHTS_FILE), "checkpoint": result.checkpoint and result.checkpoint.path}
