"""Pre-training a timm ViT on a formula data set with Ray Train + DeepSpeed.

    fdsl pretrain debug-vit --data runs/data/debug --out runs/pretrain/debug
    pretrain(get_preset("debug-vit"), "runs/data/debug", "runs/pretrain/debug")

Data path (Ray Data tasks, off the training loop): the data set (`read_dataset` of a generated
folder, or `stream_dataset` rendering on the fly) -> shuffle -> `augment_batch` (gray to RGB,
RandomResizedCrop, RandAugment, repeated augmentation; uint8 out) -> each worker's
`get_dataset_shard("train").iter_torch_batches` with prefetching. (A small data set is held in the
object store and streamed with seeded draws instead: see `training_dataset`.) On the worker: normalise, random
erasing, Mixup/CutMix with label smoothing (timm's batch-level components, as timm's own GPU
prefetcher does), then DeepSpeed forward/backward/step, timm's cosine-with-warm-up schedule.

Run folder (`--out RUN`):
    experiment.json     the full experiment config of the run (what `--resume` continues)
    metrics.jsonl       one line per optimizer step: step, epoch, loss, lr, images_per_s, ...
    events.jsonl        start / resume / checkpoint / done, with steps and world sizes
    train/              Ray Train's run: checkpoint_NNNNNNNNN/ folders (DeepSpeed state + RNG)
    model.safetensors   final fp32 weights (ZeRO partitions gathered), written by rank 0
    config.json         architecture, img_size, patch_size, num_classes, mean/std: see load_pretrained
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fdsl.platform.pretrain_config import PretrainConfig, deepspeed_config
from fdsl.platform.workers_config import WorkersConfig

CKPT_TAG = "state"
"""DeepSpeed's tag (sub-folder) of the state inside each Ray checkpoint folder."""
TRAIN_NAME = "train"
"""Name of the Ray Train run inside the run folder."""
EXPERIMENT_FILE = "experiment.json"
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RESUME_FIXED = ("model", "img_size", "patch_size", "num_workers", "zero_stage", "precision",
                "global_batch_size", "grad_accum_steps", "optimizer")
"""Pre-training fields a resumed run must keep (the checkpoint's shapes and partitions depend on them)."""


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


def check_model(cfg: PretrainConfig, num_classes: int) -> int:
    """Fail early (ValueError) on a model timm does not know or cannot build; returns its parameters."""
    import timm
    import torch

    if not timm.is_model(cfg.model):
        close = difflib.get_close_matches(cfg.model, timm.list_models(), n=3) or ["vit_tiny_patch16_224"]
        raise ValueError(f"pretrain.model: got {cfg.model!r}, expected a timm model name such as "
                         f"{', '.join(close)} (see timm.list_models())")
    try:
        with torch.device("meta"):
            model = create_model(cfg, num_classes)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise ValueError(f"pretrain.model: timm cannot build {cfg.model!r} with img_size={cfg.img_size}, "
                         f"patch_size={cfg.patch_size}: {err}") from None
    return sum(p.numel() for p in model.parameters())


def load_pretrained(run_or_file: str | os.PathLike, num_classes: int | None = None, **kwargs):
    """The exported model of a run as a timm model, through timm's own pretrained-file path.

    `num_classes` other than the pre-training's gives a freshly initialised head (fine-tuning);
    `img_size=` another input size (the position embedding is resampled by timm's loader).
    """
    import timm

    path = Path(run_or_file)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    config_path = weights.with_name(CONFIG_FILE)
    if not weights.is_file() or not config_path.is_file():
        raise FileNotFoundError(f"{path}: expected {WEIGHTS_FILE} and {CONFIG_FILE} of a finished "
                                "`fdsl pretrain` run")
    config = json.loads(config_path.read_text())
    n = config["num_classes"] if num_classes is None else num_classes
    overlay = dict(file=str(weights), num_classes=config["num_classes"])
    kwargs.setdefault("img_size", config["img_size"])  # another size: timm resamples the pos. embedding
    return timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                             num_classes=n, patch_size=config["patch_size"], **kwargs)


# --- the data path (runs in Ray Data tasks) ----------------------------------------------------
def _posterize(img, bits_to_keep, **kwargs):
    """timm's posterize, also for 0 bits (RandAugment's top magnitude), which Pillow >= 12 refuses:
    keeping no bit gives a black image, as older Pillow did."""
    from timm.data.auto_augment import posterize

    return img.point(lambda _: 0) if bits_to_keep <= 0 else posterize(img, bits_to_keep, **kwargs)


@functools.lru_cache(maxsize=8)
def _train_transform(img_size: int, randaugment: str, crop_scale_min: float, hflip: float):
    from timm.data import create_transform
    from timm.data.auto_augment import RandAugment, posterize

    # use_prefetcher=True: uint8 CHW out; normalisation and random erasing happen on the worker's device
    transform = create_transform(input_size=(3, img_size, img_size), is_training=True, use_prefetcher=True,
                                 scale=(crop_scale_min, 1.0), hflip=hflip, vflip=0.0,
                                 auto_augment=randaugment or None, interpolation="bicubic", re_prob=0.0)
    for step in transform.transforms:
        for op in step.ops if isinstance(step, RandAugment) else ():
            if op.aug_fn is posterize:
                op.aug_fn = _posterize
    return transform


def augment_batch(batch: dict[str, np.ndarray], *, img_size: int, randaugment: str, crop_scale_min: float,
                  hflip: float, repeats: int) -> dict[str, np.ndarray]:
    """Ray Data adapter: {"image" (B,H,W[,3]) uint8, "label"} -> {"image" (B*r,3,S,S) uint8, "label" int64}.

    Each image is augmented `repeats` times (repeated augmentation); the copies stay adjacent, so they
    land in the same global batch as with DeiT's RASampler.
    """
    from PIL import Image

    transform = _train_transform(img_size, randaugment, crop_scale_min, hflip)
    images, labels = batch["image"], np.asarray(batch["label"], dtype=np.int64)
    out = np.empty((len(images) * repeats, 3, img_size, img_size), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        for r in range(repeats):
            out[i * repeats + r] = np.asarray(transform(pil))
    return {"image": out, "label": np.repeat(labels, repeats)}


def open_source(experiment, data: str):
    """The Ray Dataset of `data`: "stream" (rendered on the fly) or a folder made by `fdsl generate`."""
    from fdsl.platform.datasets import read_dataset, stream_dataset

    return stream_dataset(experiment) if data == "stream" else read_dataset(data)


def _sample_and_augment(batch: dict[str, np.ndarray], *, data, seed: int, **augment) -> dict[str, np.ndarray]:
    """Ray Data adapter for small data sets: run-long row ids -> images of `data` (an object-store
    copy of the whole set), augmented by `augment_batch`.

    Row i is image perm_e[i mod N] of the seeded permutation of epoch e = i // N, and the batch
    seeds its augmentation RNGs from (seed, first row): the stream's bytes depend on the config only.
    """
    import ray

    from fdsl.platform.target_stream import seed_batch, stream_indices

    held = ray.get(data)
    ids = np.asarray(batch["id"], dtype=np.int64)
    seed_batch(seed, int(ids[0]))
    order = stream_indices(ids, len(held["label"]), seed)
    return augment_batch({"image": held["image"][order], "label": held["label"][order]}, **augment)


def _augment_pass(batch: dict[str, np.ndarray], *, seed: int, **augment) -> dict[str, np.ndarray]:
    """Ray Data adapter for a set read anew every pass: seeds the batch's augmentation from (seed,
    pass, its first image's class and instance), then `augment_batch`.

    The pass is the data set's Ray Data execution index, from which Ray Data's own seeded shuffles
    (`RandomSeedConfig`) derive each execution's seed too.
    """
    import ray.data

    from fdsl.platform.target_stream import seed_batch

    if len(batch["label"]):
        seed_batch(seed, ray.data.DataContext.get_current()._execution_idx, int(batch["label"][0]),
                   int(batch["instance"][0]))
    return augment_batch(batch, **augment)


def training_dataset(source, cfg: PretrainConfig, num_images: int):
    """The Ray Dataset the trainer splits over its workers: shuffled, augmented, uint8 CHW.

    A data set smaller than `cfg.min_pass_images` is read once into the object store and streamed:
    one pass of run-long row ids (the run's total_steps x global_batch_size images), each row a
    seeded draw with seeded augmentation, in parallel blocks; no per-epoch read or all-to-all
    shuffle, whose start-up would cost seconds every few steps. A larger set is read and shuffled
    anew every pass: the shuffle and each batch's augmentation are seeded from (seed, pass), so
    every pass differs and the same config gives the same passes.
    """
    import ray
    from ray.data import RandomSeedConfig

    augment = dict(img_size=cfg.img_size, randaugment=cfg.randaugment, crop_scale_min=cfg.crop_scale_min,
                   hflip=cfg.hflip, repeats=cfg.repeated_aug)
    if cfg.pass_copies(num_images) > 1:  # a small set: held in the object store and streamed
        rows = source.take_all()
        rows.sort(key=lambda r: (int(r["label"]), int(r["instance"])))  # the set's order, not the read's
        data = ray.put({"image": np.stack([r["image"] for r in rows]),
                        "label": np.array([r["label"] for r in rows], dtype=np.int64)})
        images = cfg.schedule(num_images)["total_steps"] * cfg.global_batch_size
        size = -(-images // cfg.repeated_aug)  # each id gives repeated_aug augmented copies
        # row ids as in-memory blocks: `ray.data.range` would run 1-CPU read tasks, which cannot be
        # scheduled beside the Train workers of a Tune trial on a small machine
        ids = ray.data.from_items([{"id": i} for i in range(size)],
                                  override_num_blocks=max(1, size // cfg.augment_batch_size))
        return ids.map_batches(
            _sample_and_augment, batch_format="numpy", batch_size=cfg.augment_batch_size,
            num_cpus=cfg.augment_cpus, fn_kwargs=dict(data=data, seed=cfg.seed, **augment))
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
def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
class _RunLog:
    """metrics.jsonl and events.jsonl of the run folder, written by rank 0 only."""

    def __init__(self, run_dir: str | None, active: bool, from_step: int):
        self.dir = Path(run_dir) if run_dir and active else None
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        metrics = self.dir / METRICS_FILE
        if metrics.exists():  # a restart: drop the steps after the checkpoint we continue from
            kept = [line for line in metrics.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= from_step]
            metrics.write_text("".join(line + "\n" for line in kept))

    def metrics(self, row: dict) -> None:
        if self.dir is not None:
            with open(self.dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")

    def event(self, name: str, **fields) -> None:
        if self.dir is not None:
            with open(self.dir / EVENTS_FILE, "a") as f:
                f.write(json.dumps({"event": name, "time": round(time.time(), 3), **fields}) + "\n")


def _save_checkpoint(engine, scheduler, plan: dict, step: int, rank: int, world: int, metrics: dict) -> None:
    """DeepSpeed state + this rank's RNG, reported to Ray Train from every rank (one merged folder)."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="fdsl-ckpt-") as d:
        engine.save_checkpoint(d, tag=CKPT_TAG, client_state={
            "step": step, "scheduler": scheduler.state_dict(), "schedule": plan, "world_size": world})
        _save_rng(Path(d), rank)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{step:09d}")


def _export(engine, cfg: PretrainConfig, num_classes: int, run_dir: str, rank: int, step: int,
            mean, std) -> None:
    """model.safetensors (fp32 master weights, gathered from ZeRO partitions) + config.json."""
    from deepspeed.utils import safe_get_full_fp32_param
    from safetensors.torch import save_file

    params = dict(engine.module.named_parameters())
    state = {}
    for name, tensor in engine.module.state_dict().items():
        if name in params:  # collective under ZeRO: every rank walks the same names in the same order
            full = safe_get_full_fp32_param(params[name])
            tensor = params[name].detach() if full is None else full
        if rank == 0:
            tensor = tensor.detach().cpu()
            state[name] = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
    if rank != 0:
        return
    out = Path(run_dir)
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS_FILE)
    config = {"architecture": cfg.model, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
              "num_classes": num_classes, "in_chans": 3, "mean": list(mean), "std": list(std),
              "interpolation": "bicubic", "step": step, "pretrain": cfg.to_dict()}
    tmp = out / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, out / CONFIG_FILE)


class DeviceBatch:
    """The per-batch half of the recipe, on the training device (as timm's GPU prefetcher does):
    uint8 images -> normalised, randomly erased, Mixup/CutMix-ed inputs in the training dtype, and
    the loss for the (soft, smoothed) targets. Shared by `train_func` and benchmarks/pretrain.py."""

    def __init__(self, cfg: PretrainConfig, num_classes: int, device, mean, std):
        import torch
        from timm.data import Mixup
        from timm.data.random_erasing import RandomErasing
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        self.mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                            switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing,
                            num_classes=num_classes) if cfg.mixes else None)
        if self.mixup is not None:
            self.criterion = SoftTargetCrossEntropy()
        elif cfg.label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing)
        else:
            self.criterion = torch.nn.CrossEntropyLoss()
        self.eraser = (RandomErasing(cfg.random_erasing, mode="pixel", device=str(device))
                       if cfg.random_erasing > 0 else None)
        self.scale = torch.tensor([255.0 * v for v in std], device=device).view(1, 3, 1, 1)
        self.shift = torch.tensor([255.0 * v for v in mean], device=device).view(1, 3, 1, 1)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.precision]

    def inputs(self, images, labels):
        """(model input, target) of a uint8 (B, 3, S, S) batch and its int64 labels."""
        x = images.float().sub_(self.shift).div_(self.scale)
        if self.eraser is not None:
            x = self.eraser(x)
        if self.mixup is not None:
            x, labels = self.mixup(x, labels)
        return x.to(self.dtype), labels

    def loss(self, logits, target):
        return self.criterion(logits.float(), target)


def train_func(config: dict[str, Any]) -> None:
    """The Ray Train loop (TorchTrainer, Tune trials and tests all call this one function).

    config: {"pretrain": PretrainConfig as a dict, "num_classes": int, "num_images": int,
             "run_dir": str or None (no metrics files and no export when None)}.
    """
    import deepspeed
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
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = cfg.worker_device()
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")

    _seed_all(cfg.seed)  # the same initial model on every rank
    model = create_model(cfg, num_classes)
    mean, std = input_normalization(cfg, model)
    optimizer = timm.optim.create_optimizer_v2(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                   config=deepspeed_config(cfg))
    plan = cfg.schedule(num_images)
    total = plan["total_steps"]
    scheduler = CosineLRScheduler(optimizer, t_initial=total, lr_min=cfg.min_lr,
                                  warmup_t=plan["warmup_steps"], warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)

    step, checkpoint = 0, ray.train.get_checkpoint()
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
        _seed_all(cfg.seed + 1 + rank)  # different Mixup/erasing draws per rank
    scheduler.step_update(step)
    log = _RunLog(run_dir, rank == 0, step)
    log.event("resume" if checkpoint is not None else "start", step=step, total_steps=total,
              world_size=world, schedule=plan)

    batch_ops = DeviceBatch(cfg, num_classes, device, mean, std)
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
        torch.distributed.all_reduce(loss_sum)
        now = time.perf_counter()
        seconds, last = now - last, now
        metrics = {"step": step, "epoch": round(step * cfg.global_batch_size / images_seen_per_epoch, 4),
                   "loss": loss_sum.item() / (world * cfg.grad_accum_steps),
                   "lr": lr, "step_s": round(seconds, 5),
                   "data_wait_s": round(waited, 5),
                   "images_per_s": round(cfg.global_batch_size / seconds, 2)}
        log.metrics(metrics)
        if step % cfg.checkpoint_every == 0 or step == total:
            _save_checkpoint(engine, scheduler, plan, step, rank, world, metrics)
            log.event("checkpoint", step=step)
            last = time.perf_counter()  # checkpoint time is not a step's time
        elif step % cfg.report_every == 0:
            ray.train.report(metrics)
    if run_dir:
        _export(engine, cfg, num_classes, run_dir, rank, step, mean, std)
    log.event("done", step=step, model=str(Path(run_dir) / WEIGHTS_FILE) if run_dir else None)


# --- the driver ---------------------------------------------------------------------------------------
def _has_run(out: Path) -> bool:
    return (out / EXPERIMENT_FILE).exists() or (out / TRAIN_NAME).exists()


def load_run_experiment(out: str | os.PathLike, preset: str | None = None, overrides=()):
    """The experiment of an existing run folder, with `key=value` overrides (for `--resume`)."""
    from fdsl.config import apply_overrides
    from fdsl.experiment import Experiment

    path = Path(out) / EXPERIMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no run to resume ({EXPERIMENT_FILE} missing); "
                                "start it without --resume")
    experiment = Experiment.from_dict(json.loads(path.read_text()))
    if preset is not None and experiment.name != preset:
        raise ValueError(f"preset: got {preset!r}, expected {experiment.name!r}, the preset of the run "
                         f"in {out}")
    return apply_overrides(experiment, overrides)


def _check_resume(saved, experiment) -> None:
    for name in RESUME_FIXED:
        have, want = getattr(saved.pretrain, name), getattr(experiment.pretrain, name)
        if have != want:
            raise ValueError(f"pretrain.{name}: got {want!r}, expected {have!r} as in the run being resumed "
                             "(its checkpoints depend on it)")


def connect_checked(cfg: WorkersConfig, section: str, address: str | None = None) -> None:
    """Join or start Ray (`synthesis.connect`); a local Ray started here must hold the run.

    Shared by pre-training, fine-tuning and SSL (their configs extend `WorkersConfig`). Only a
    local Ray this call starts is checked: it never grows, so a run it cannot hold would wait for
    resources forever. A cluster joined by address or as a Ray job may autoscale (its GPU pool can
    sit at 0 nodes until the trainers ask), and a Ray already running in this process belongs to
    the caller (a test, a Tune trial): those are not refused. ValueError naming `section` when the
    local Ray is too small.
    """
    import ray

    from fdsl.platform.synthesis import connect

    if not connect(address):
        return
    have, need_cpu = ray.cluster_resources(), cfg.cpus_needed()
    if have.get("CPU", 0) < need_cpu:
        raise ValueError(f"{section}.num_workers: {cfg.num_workers} workers x {cfg.cpus_per_worker} CPUs + "
                         f"{cfg.augment_cpus} for augmentation need {need_cpu:g} CPUs, this machine's "
                         f"local Ray has {have.get('CPU', 0):g}; lower num_workers, cpus_per_worker or "
                         "augment_cpus, or pass --address of a larger cluster")
    if cfg.use_gpu and have.get("GPU", 0) < cfg.num_workers:
        raise ValueError(f"{section}.use_gpu: {cfg.num_workers} GPU workers requested, this machine's local "
                         f"Ray has {have.get('GPU', 0):g} GPUs; set use_gpu=false or fewer num_workers, or "
                         "pass --address of a cluster with GPUs")


def prepare_run(experiment, data: str, out: str | os.PathLike, *, resume: bool = False) -> dict:
    """Every check that can fail before a worker starts; returns the train_func config.

    ValueError / FileNotFoundError / FileExistsError name what to fix: a config out of range, a
    global batch that does not split over the workers, an unknown timm model, a missing or
    incomplete data folder, a folder holding another experiment's images, a run folder in use.
    """
    experiment.validate()
    cfg = experiment.pretrain
    out = Path(out).absolute()
    if resume:
        _check_resume(load_run_experiment(out), experiment)
    elif _has_run(out):
        raise FileExistsError(f"{out} holds a run already: pass --resume to continue it, or choose "
                              "another --out")
    if data != "stream" and not Path(data).exists():
        raise FileNotFoundError(f"--data: {data} does not exist (make it with `fdsl generate "
                                f"{experiment.name} --out {data}`, or pass --data stream)")
    from fdsl.platform.datasets import validate_dataset_dir

    if data == "stream":
        num_images, num_classes = experiment.data.num_classes * experiment.data.num_instances, \
            experiment.data.num_classes
    else:
        manifest = validate_dataset_dir(data, experiment)
        num_images, num_classes = int(manifest["num_rows"]), int(manifest["num_classes"])
    rows_per_worker = num_images * cfg.pass_copies(num_images) * cfg.repeated_aug // cfg.num_workers
    if rows_per_worker < cfg.micro_batch_size:
        raise ValueError(f"pretrain.global_batch_size: got {cfg.global_batch_size}, but each of the "
                         f"{cfg.num_workers} workers gets only {rows_per_worker} images per pass "
                         f"(micro batch {cfg.micro_batch_size}); lower the batch or the workers")
    check_model(cfg, num_classes)
    return {"pretrain": cfg.to_dict(), "num_classes": num_classes, "num_images": num_images,
            "run_dir": str(out)}


def pretrain(experiment, data: str, out: str | os.PathLike, *, resume: bool = False,
             address: str | None = None) -> dict:
    """Pre-train `experiment.pretrain` on `data` ("stream" or a generated folder) into run folder `out`.

    Starts (or joins, with `address`) Ray, checks everything first (see `prepare_run`), runs the
    TorchTrainer (restarting failed worker groups from the last checkpoint up to `max_failures`
    times; `resume=True` continues the run in `out` from its last checkpoint) and returns a summary.
    """
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from fdsl.platform.manifest import atomic_write_text

    loop_config = prepare_run(experiment, data, out, resume=resume)
    cfg = experiment.pretrain
    out = Path(loop_config["run_dir"])
    connect_checked(cfg, "pretrain", address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar per pass per worker otherwise
    context.print_on_execution_start = False
    source = open_source(experiment, data)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EXPERIMENT_FILE, json.dumps(experiment.to_dict(), indent=2) + "\n")
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = cfg.preserve_order  # the rows are seeded: their order makes a run reproducible
    trainer = TorchTrainer(
        train_func, train_loop_config=loop_config,
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest),
        scaling_config=cfg.scaling_config(),
        run_config=RunConfig(name=TRAIN_NAME, storage_path=str(out),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
        datasets={"train": training_dataset(source, cfg, loop_config["num_images"])})
    start = time.perf_counter()
    result = trainer.fit()
    rows = read_metrics(out)
    last = rows[-1] if rows else {}
    steady = [r["images_per_s"] for r in rows[len(rows) // 5:]] or [0.0]
    return {"run_dir": str(out), "steps": last.get("step", 0), "loss": last.get("loss"),
            "images_per_s": round(float(np.median(steady)), 2),
            "seconds": round(time.perf_counter() - start, 1),
            "model": str(out / WEIGHTS_FILE), "checkpoint": result.checkpoint and result.checkpoint.path}


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl (one per optimizer step)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
