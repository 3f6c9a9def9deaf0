"""Time and compute of full-size FDSL pre-training, projected from rates measured in this run.

    NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/projection.py [--classes 8] [--instances 24]
        [--gpu-images-per-s N] [--gpu-name "H100 SXM"]

For each pre-training preset (the data set it reads and its recipe):
  synthesis   the per-core cost of one data-set image, measured here on one core with the platform's
              own render adapter and encoding (`shards.render_batch`, raw bytes, zstd 3 like the
              Parquet column): a steady per-image time over consecutive instances of classes spread
              over the set, plus each class's one-off category search divided by its instances.
              Projected to core-hours and to wall time on the synth-cpu pool of cluster.yaml
              (16 nodes x 32 vCPU), assuming linear scaling (benchmarks/synthesis.py measured 1.86x
              on 2 cores).
  training    FLOPs of one forward + backward pass per image, counted by torch's FlopCounterMode on
              the preset's timm model at its input size (CPU; the count does not depend on the
              device), times the images the recipe sees (epochs x set size).
  GPU time    from `--gpu-images-per-s` (per GPU, e.g. what `benchmarks/pretrain.py --gpu` printed for
              ViT-B/16, scaled by FLOPs for other models) when given; otherwise NOT MEASURED: the
              table then shows the GPU-hours at an assumed 40% MFU of an H100's 989 dense bf16
              TFLOPS (the pre-training issue's target), labelled as an assumption.
The baseline of the ratio line is the FractalDB-1k renderer's per-image time in this same run.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from fdsl.platform.data.shards import _generator, encode_images, generator_key, render_batch  # noqa: E402
from fdsl.presets import get_preset  # noqa: E402

PRESETS = ["vit-tiny-fractaldb-1k", "vit-base-fractaldb-1k", "vit-base-visualatom-21k",
           "vit-base-exfractaldb-21k"]
POOL_CORES = 16 * 32  # cluster.yaml: synth-cpu, c7i.8xlarge x max_workers 16
GPUS = 8  # the recipes' num_workers: one 8-GPU node (cluster.yaml: train-gpu, p4d.24xlarge)
H100_BF16_TFLOPS = 989.0
ASSUMED_MFU = 0.40


def synthesis_rate(experiment, classes: int, instances: int, rounds: int) -> dict:
    """Seconds per data-set image on one core (render + encode), category search amortised.

    Best of `rounds`, each with a fresh generator (so each round searches its classes again).
    """
    runs = []
    for _ in range(rounds):
        _generator.cache_clear()
        runs.append(_synthesis_round(experiment, classes, instances))
    best = min(runs, key=lambda r: r["per_image_s"])
    return {**best, "rounds_ms": [round(r["per_image_s"] * 1e3, 3) for r in runs]}


def _synthesis_round(experiment, classes: int, instances: int) -> dict:
    data = experiment.data
    key, level = generator_key(experiment), experiment.synthesis.compression_level
    codec = pa.Codec("zstd", compression_level=level)
    gen = _generator(*key)
    sampled = np.unique(np.linspace(0, data.num_classes - 1, classes).astype(np.int64))
    last = (data.num_classes - 1) * data.num_instances  # warm-up (numba) on a class not sampled below
    render_batch({"id": np.array([last // 2 + 1], np.int64)}, generator=key, num_instances=data.num_instances)
    start = time.perf_counter()  # first image of each class: its search (if any) + one render
    for c in sampled:
        gen.render(int(c), 0)
    first = (time.perf_counter() - start) / len(sampled)
    rows = np.concatenate([c * data.num_instances + np.arange(1, 1 + instances) for c in sampled])
    start, nbytes = time.perf_counter(), 0
    for lo in range(0, len(rows), experiment.synthesis.batch_size):
        batch = render_batch({"id": rows[lo:lo + experiment.synthesis.batch_size]}, generator=key,
                             num_instances=data.num_instances)
        nbytes += len(codec.compress(b"".join(encode_images(batch["image"], "raw", level)), asbytes=True))
    steady = (time.perf_counter() - start) / len(rows)
    search = max(0.0, first - steady)
    return {"steady_s": steady, "search_per_class_s": search,
            "per_image_s": steady + search / data.num_instances, "bytes_per_image": nbytes / len(rows)}


def flops_per_image(experiment) -> float:
    """Forward + backward FLOPs of the preset's model on one image (counted, not estimated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fdsl.platform.train.pretrain import create_model

    cfg = experiment.pretrain
    torch.manual_seed(0)
    model = create_model(cfg, experiment.data.num_classes)
    x = torch.randn(1, 3, cfg.img_size, cfg.img_size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().logsumexp(dim=1).sum().backward()
    return float(counter.get_total_flops())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=8, help="classes sampled per data set")
    parser.add_argument("--instances", type=int, default=24, help="consecutive instances per sampled class")
    parser.add_argument("--rounds", type=int, default=2, help="synthesis rounds (best counts)")
    parser.add_argument("--gpu-images-per-s", type=float, default=None,
                        help="measured ViT-B/16 224px training images/s per GPU (pretrain.py --gpu)")
    parser.add_argument("--gpu-name", default="H100", help="the GPU that rate was measured on")
    args = parser.parse_args(argv)

    vit_b_flops = None
    rows = []
    for name in PRESETS:
        experiment = get_preset(name)
        data, cfg = experiment.data, experiment.pretrain
        images = data.num_classes * data.num_instances
        syn = synthesis_rate(experiment, args.classes, args.instances, args.rounds)
        flops = flops_per_image(experiment)
        if cfg.model == "vit_base_patch16_224" and vit_b_flops is None:
            vit_b_flops = flops
        seen = cfg.epochs * images
        rows.append({"preset": name, "generator": experiment.generator, "images": images,
                     "image_size": data.image_size, "model": cfg.model, "epochs": cfg.epochs,
                     "synthesis_ms_per_image_core": round(syn["per_image_s"] * 1e3, 3),
                     "search_ms_per_class": round(syn["search_per_class_s"] * 1e3, 2),
                     "synthesis_rounds_ms": syn["rounds_ms"],
                     "bytes_per_image": round(syn["bytes_per_image"]),
                     "synthesis_core_hours": round(images * syn["per_image_s"] / 3600, 2),
                     "synthesis_wall_min_pool": round(images * syn["per_image_s"] / POOL_CORES / 60, 2),
                     "storage_gb": round(images * syn["bytes_per_image"] / 1e9, 1),
                     "gflop_per_image_fwd_bwd": round(flops / 1e9, 2),
                     "training_pflop": round(seen * flops / 1e15, 0)})
    for row in rows:  # GPU time: measured rate (scaled by FLOPs) or the labelled assumption
        flops = row["gflop_per_image_fwd_bwd"] * 1e9
        if args.gpu_images_per_s and vit_b_flops:
            per_gpu, basis = args.gpu_images_per_s * vit_b_flops / flops, f"measured on {args.gpu_name}"
        else:
            per_gpu = ASSUMED_MFU * H100_BF16_TFLOPS * 1e12 / flops
            basis = "ASSUMED 40% MFU on H100 (no GPU measured)"
        seconds = row["training_pflop"] * 1e15 / flops / per_gpu
        row.update(gpu_images_per_s=round(per_gpu), gpu_basis=basis,
                   gpu_hours=round(seconds / 3600, 0), node_days_8gpu=round(seconds / GPUS / 86400, 2))

    baseline = rows[0]["synthesis_ms_per_image_core"]  # FractalDB-1k, this run
    print(f"{'preset':26s} {'images':>11s} {'ms/img/core':>11s} {'core-h':>8s} {'pool min':>8s} "
          f"{'GB':>6s} {'GFLOP/img':>9s} {'PFLOP':>9s} {'img/s/GPU':>9s} {'GPU-h':>8s} {'8-GPU days':>10s}")
    for r in rows:
        print(f"{r['preset']:26s} {r['images']:11,d} {r['synthesis_ms_per_image_core']:11.3f} "
              f"{r['synthesis_core_hours']:8.1f} {r['synthesis_wall_min_pool']:8.1f} {r['storage_gb']:6.1f} "
              f"{r['gflop_per_image_fwd_bwd']:9.2f} {r['training_pflop']:9,.0f} {r['gpu_images_per_s']:9,d} "
              f"{r['gpu_hours']:8,.0f} {r['node_days_8gpu']:10.2f}")
    print(f"GPU columns: {rows[0]['gpu_basis']}; synthesis: measured here on one core "
          f"(pool = {POOL_CORES} cores, linear)")
    for r in rows[1:]:
        print(f"synthesis cost per image, {r['preset']} / {rows[0]['preset']}: "
              f"{r['synthesis_ms_per_image_core'] / baseline:.2f}x")
    print(json.dumps({"benchmark": "projection", "numba_threads": os.environ["NUMBA_NUM_THREADS"],
                      "classes_sampled": args.classes, "instances_per_class": args.instances,
                      "pool_cores": POOL_CORES, "gpus_per_node": GPUS, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
