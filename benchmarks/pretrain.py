"""Pre-training throughput: Ray Train + DeepSpeed against a bare PyTorch loop, in one run.

    .venv/bin/python benchmarks/pretrain.py [--steps 30] [--rounds 2]
    .venv/bin/python benchmarks/pretrain.py --gpu [--batch 256]   # ViT-B/16 bf16 images/s and MFU

CPU mode (the default; what runs on the 2-core machine). Same model (vit_tiny_patch16_224 at 32 px,
patch 4: 5.4M parameters, 65 tokens), same global batch (64), same threads (all cores), same
recipe ops:
  bare       one process, torch.set_num_threads(cores): timm model, timm AdamW, timm cosine schedule,
             uint8 batches already in memory, the platform's DeviceBatch (normalise, random erasing,
             Mixup/CutMix, soft-target loss). No Ray, no DeepSpeed, no data path.
  platform   `fdsl.platform.train.pretrain.pretrain` on a local Ray: `cores` Ray Train workers x 1 thread,
             DeepSpeed ZeRO-1 fp32 over gloo, Ray Data reading the Parquet data set, shuffling and
             augmenting (RandomResizedCrop + RandAugment) in tasks beside the workers. images/s from
             the run's metrics.jsonl: every step after the first 5, data waits and all-reduces included.
  data path  the platform's training Dataset alone (read, shuffle, augment, iter_torch_batches on the
             driver) in images/s, against the images/s the platform's training consumed; and the
             same images read as a large set (a seeded shuffle per pass), rows in order
             (`pretrain.preserve_order`, the default) against rows as they finish.
Rounds interleave bare and platform; the best round of each counts. Targets: platform >= 0.8x bare,
data path >= 3x consumption.

GPU mode (`--gpu`, needs CUDA; without it prints a "skipped" JSON line and exits 0): one process,
DeepSpeed ZeRO-1 bf16 on one GPU, ViT-B/16 at 224 px with the vit-base-exfractaldb-21k recipe ops,
synthetic uint8 batches resident on the GPU; images/s, and model FLOPs utilisation = measured
FLOPs per image (torch's FlopCounterMode on one training step) x images/s / the GPU's dense bf16 peak.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fdsl.presets import get_preset

CPU_MODEL = ["pretrain.model=vit_tiny_patch16_224", "pretrain.img_size=32", "pretrain.patch_size=4",
             "pretrain.global_batch_size=64", "pretrain.precision=fp32", "pretrain.zero_stage=1",
             "pretrain.drop_path_rate=0.1"]
DATA = ["data.num_instances=128"]  # debug FractalDB: 8 classes x 128 = 1,024 images of 64 px
SKIP = 5  # warm-up steps left out of every images/s


# --- bare: one process, no Ray, no DeepSpeed ------------------------------------------------------
def bare_images_per_s(cfg, num_classes: int, steps: int, threads: int) -> float:
    import timm.optim
    import torch
    from timm.scheduler import CosineLRScheduler

    from fdsl.platform.train.augment import DeviceBatch
    from fdsl.platform.train.pretrain import create_model, input_normalization

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(cfg, num_classes)
    mean, std = input_normalization(cfg, model)
    optimizer = timm.optim.create_optimizer_v2(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=steps, lr_min=cfg.min_lr, warmup_t=2,
                                  warmup_lr_init=cfg.warmup_lr, t_in_epochs=False)
    ops = DeviceBatch(cfg, num_classes, torch.device("cpu"), mean, std)
    b = cfg.global_batch_size
    images = torch.randint(0, 256, (4, b, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (4, b))
    model.train()
    for step in range(steps + SKIP):
        if step == SKIP:
            start = time.perf_counter()
        x, target = ops.inputs(images[step % 4], labels[step % 4])
        loss = ops.loss(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step_update(step + 1)
        loss.item()
    return steps * b / (time.perf_counter() - start)


# --- platform: Ray Train + DeepSpeed + Ray Data ---------------------------------------------------------
def platform_run(data: Path, out: Path, steps: int, workers: int) -> dict:
    from fdsl.platform.train.pretrain import pretrain
    from fdsl.platform.train.run import read_metrics

    experiment = get_preset("debug-vit", [*DATA, *CPU_MODEL, f"pretrain.num_workers={workers}",
                                          "pretrain.threads_per_worker=1", "pretrain.cpus_per_worker=0.5",
                                          f"pretrain.max_steps={steps + SKIP}",
                                          f"pretrain.checkpoint_every={steps + SKIP}",
                                          "pretrain.report_every=10"])
    start = time.perf_counter()
    summary = pretrain(experiment, str(data), out)
    rows = read_metrics(out)[SKIP:]
    seconds = sum(r["step_s"] for r in rows)
    return {"images_per_s": len(rows) * experiment.pretrain.global_batch_size / seconds,
            "data_wait_fraction": sum(r["data_wait_s"] for r in rows) / seconds,
            "wall_s": time.perf_counter() - start, "steps": summary["steps"]}


def data_path_images_per_s(data: Path, passes: int = 3, overrides: tuple[str, ...] = ()) -> float:
    """Images/s of the training Dataset alone, consumed on the driver like a worker would, in the
    row order the config asks the ingest for (`pretrain.preserve_order`)."""
    import torch

    from fdsl.platform.data.datasets import read_dataset
    from fdsl.platform.train.streams import training_dataset

    experiment = get_preset("debug-vit", [*DATA, *CPU_MODEL, *overrides])
    cfg = experiment.pretrain
    ds = training_dataset(read_dataset(data), cfg, 8 * 128)
    ds.context.execution_options.preserve_order = cfg.preserve_order
    count, start = 0, None
    for p in range(passes + 1):
        for batch in ds.iter_torch_batches(batch_size=cfg.micro_batch_size, drop_last=True,
                                           prefetch_batches=cfg.prefetch_batches,
                                           dtypes={"image": torch.uint8, "label": torch.int64}):
            if p > 0:
                count += len(batch["label"])
        if p == 0:
            start = time.perf_counter()  # the first pass warms up the worker processes
    return count / (time.perf_counter() - start)


def cpu_benchmark(args) -> dict:
    import ray

    from fdsl.platform.connect import connect
    from fdsl.platform.data.synthesis import generate

    cores = os.cpu_count() or 2
    experiment = get_preset("debug-vit", [*DATA, *CPU_MODEL])
    cfg = experiment.pretrain
    connect(None, num_cpus=cores)
    ray.data.DataContext.get_current().enable_progress_bars = False
    root = Path(tempfile.mkdtemp(prefix="fdsl-bench-pretrain-"))
    generate(get_preset("debug-fractaldb", DATA), root / "data", log=lambda *_: None)

    bare, platform = [], []
    for r in range(args.rounds):
        bare.append(bare_images_per_s(cfg, 8, args.steps, cores))
        print(f"round {r}: bare      {bare[-1]:8.1f} images/s", flush=True)
        platform.append(platform_run(root / "data", root / f"run{r}", args.steps, cores))
        print(f"round {r}: platform  {platform[-1]['images_per_s']:8.1f} images/s "
              f"(data wait {platform[-1]['data_wait_fraction']:.1%} of step time, "
              f"{platform[-1]['wall_s']:.0f} s with start-up)", flush=True)
    bare.append(bare_images_per_s(cfg, 8, args.steps, cores))
    print(f"round {args.rounds}: bare      {bare[-1]:8.1f} images/s", flush=True)
    data_rate = data_path_images_per_s(root / "data")
    # the same 1,024 images as a large set (read, seeded shuffle, seeded augmentation every pass),
    # rows in order (the default, reproducible) and as they finish
    large = {order: data_path_images_per_s(root / "data", overrides=(
        "pretrain.min_pass_images=1", f"pretrain.preserve_order={order}")) for order in ("true", "false")}
    best_bare = max(bare)
    best = max(platform, key=lambda p: p["images_per_s"])
    ray.shutdown()

    ratio = best["images_per_s"] / best_bare
    data_ratio = data_rate / best["images_per_s"]
    print()
    print(f"{'':34s}{'images/s':>10s}{'ratio':>8s}{'target':>8s}")
    print(f"{'bare PyTorch loop, 1 process':34s}{best_bare:10.1f}{1.0:8.2f}")
    print(f"{'Ray Train + DeepSpeed, ' + str(cores) + ' workers':34s}{best['images_per_s']:10.1f}"
          f"{ratio:8.2f}{'>= 0.8':>8s}")
    print(f"{'data path alone (Ray Data)':34s}{data_rate:10.1f}{data_ratio:8.2f}{'>= 3':>8s}"
          "  (vs platform consumption)")
    print(f"{'data path, large set, in order':34s}{large['true']:10.1f}"
          f"{large['true'] / large['false']:8.2f}  (vs the same unordered: {large['false']:.1f})")
    print(f"model {cfg.model} {cfg.img_size}px/{cfg.patch_size}, global batch {cfg.global_batch_size}, "
          f"{cores} threads, {args.steps} timed steps x {args.rounds} rounds")
    return {"mode": "cpu", "model": cfg.model, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
            "global_batch_size": cfg.global_batch_size, "threads": cores, "workers": cores,
            "steps": args.steps, "rounds": args.rounds,
            "bare_images_per_s": round(best_bare, 2), "bare_rounds": [round(v, 2) for v in bare],
            "platform_images_per_s": round(best["images_per_s"], 2),
            "platform_rounds": [round(p["images_per_s"], 2) for p in platform],
            "platform_vs_bare": round(ratio, 3), "platform_target": 0.8,
            "data_wait_fraction": round(best["data_wait_fraction"], 4),
            "data_path_images_per_s": round(data_rate, 2), "data_path_vs_consumption": round(data_ratio, 2),
            "data_path_target": 3.0,
            "data_path_large_ordered_images_per_s": round(large["true"], 2),
            "data_path_large_unordered_images_per_s": round(large["false"], 2),
            "large_ordered_vs_unordered": round(large["true"] / large["false"], 3),
            "ok": bool(ratio >= 0.8 and data_ratio >= 3.0)}


# --- GPU: ViT-B/16 bf16 on one GPU ------------------------------------------------------------------------
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
                    "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
"""Dense bf16 tensor-core peaks (no sparsity) from NVIDIA's data sheets, matched by device name."""


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in name.lower()), None)


def gpu_benchmark(args) -> dict:
    import torch

    if not torch.cuda.is_available():
        print("gpu: no CUDA device here; nothing measured", file=sys.stderr)
        return {"mode": "gpu", "skipped": "no CUDA device"}
    import deepspeed
    from gpu_check import synthetic_step  # benchmarks/ (this script's folder)
    from torch.utils.flop_counter import FlopCounterMode

    from fdsl.platform.train.augment import DeviceBatch
    from fdsl.platform.train.pretrain import create_model, input_normalization
    from fdsl.platform.train.sections import deepspeed_config

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl")
    experiment = get_preset("vit-base-exfractaldb-21k", [
        "pretrain.num_workers=1", "pretrain.grad_accum_steps=1", f"pretrain.global_batch_size={args.batch}",
        "pretrain.precision=bf16", "pretrain.use_gpu=true"])
    cfg, num_classes = experiment.pretrain, experiment.data.num_classes
    torch.manual_seed(0)
    model = create_model(cfg, num_classes)
    if args.compile:
        model = torch.compile(model)
    mean, std = input_normalization(cfg, model)
    import timm.optim

    optimizer = timm.optim.create_optimizer_v2(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                   config=deepspeed_config(cfg))
    device = torch.device("cuda", 0)
    ops = DeviceBatch(cfg, num_classes, device, mean, std)
    b = cfg.global_batch_size
    step, images, labels = synthetic_step(engine, ops, cfg.img_size, num_classes, b, device)

    for _ in range(args.warmup):
        step()
    probe = create_model(cfg, num_classes).to(device, torch.bfloat16)  # FLOPs of forward + backward
    with FlopCounterMode(display=False) as counter:
        x, target = ops.inputs(images, labels)
        ops.loss(probe(x), target).backward()
    flops_per_image = counter.get_total_flops() / b
    del probe, x
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    images_per_s = args.steps * b / (time.perf_counter() - start)
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name, args.peak_tflops)
    mfu = images_per_s * flops_per_image / (peak * 1e12) if peak else None
    mfu_text = f"MFU {mfu:.1%}" if mfu is not None else "MFU unknown (pass --peak-tflops)"
    print(f"{name}: {cfg.model} {cfg.img_size}px bf16 ZeRO-{cfg.zero_stage}, batch {b}: "
          f"{images_per_s:.0f} images/s, {flops_per_image / 1e9:.1f} GFLOP/image, {mfu_text}")
    return {"mode": "gpu", "device": name, "model": cfg.model, "img_size": cfg.img_size,
            "precision": "bf16", "zero_stage": cfg.zero_stage, "batch": b, "compile": args.compile,
            "steps": args.steps, "images_per_s": round(images_per_s, 1),
            "gflop_per_image": round(flops_per_image / 1e9, 2), "peak_tflops": peak,
            "mfu": None if mfu is None else round(mfu, 4), "mfu_target": 0.4,
            "ok": None if mfu is None else bool(mfu >= 0.4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="CPU: platform rounds (bare runs one more)")
    parser.add_argument("--gpu", action="store_true", help="measure ViT-B/16 bf16 on one GPU instead")
    parser.add_argument("--batch", type=int, default=256, help="GPU: batch size")
    parser.add_argument("--warmup", type=int, default=10, help="GPU: untimed steps first")
    parser.add_argument("--compile", action="store_true", help="GPU: torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU: dense bf16 peak, if unknown")
    parser.add_argument("--port", type=int, default=29533, help="GPU: port of the 1-process group")
    args = parser.parse_args(argv)
    result = gpu_benchmark(args) if args.gpu else cpu_benchmark(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
