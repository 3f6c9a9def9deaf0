"""The FDSL effect, end to end on this machine: formula pre-training vs scratch vs small-data SSL.

    .venv/bin/python benchmarks/fdsl_effect.py [--seeds 3] [--samples-per-class 10] [--out DIR]

One tiny ViT (timm test_vit: 6 blocks, width 64, patch 4, at 16 px; the `debug-vit` architecture)
starts from four initialisations and is fine-tuned on scikit-learn's digits with few labelled
images per class, same recipe for every arm (`debug-finetune` with the overrides below):
  scratch      random initialisation
  fractaldb    supervised pre-training on a debug-size FractalDB (`fdsl generate` + `fdsl pretrain`)
  visualatom   the same on a debug-size VisualAtom (a contour family)
  dino         DINO self-supervised pre-training on the same few digits, no labels (Gani et al.)
Every arm runs with the same seeds; a seed fixes the labelled subset, the new head, the data
order and the augmentation, so arms are paired. Everything goes through the platform's own
functions (generate, pretrain, ssl, finetune) on a local Ray with 2 CPUs.

Prints one line per run, a table of mean +- std top-1 per arm beside the raw-pixel baselines of
the same subsets (logistic regression, 1-NN), and a last line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fdsl.presets import get_preset

PRETRAIN = ["pretrain.global_batch_size=64", "pretrain.num_workers=1", "pretrain.cpus_per_worker=1",
            "pretrain.augment_cpus=0.5", "pretrain.checkpoint_every=100000", "pretrain.report_every=50",
            "pretrain.warmup_epochs=1", "pretrain.lr=2e-3",
            # a light recipe: the DeiT one (Mixup/CutMix, RandAugment, erasing) left the loss at ln(32)
            # after 300 steps at this size (see docs/finetune.md)
            "pretrain.mixup=0", "pretrain.cutmix=0", "pretrain.randaugment=", "pretrain.random_erasing=0",
            "pretrain.crop_scale_min=0.35"]
SOURCES = {"fractaldb": ("debug-fractaldb", ["data.num_classes=32", "data.num_instances=32"]),
           "visualatom": ("debug-visualatom", ["data.num_classes=32", "data.num_instances=32",
                                               "data.image_size=64"])}


def log(*parts) -> None:
    print(*parts, flush=True)


def pretrain_arm(name: str, root: Path, steps: int, img_size: int, extra: list[str]) -> tuple[str, dict]:
    from fdsl.platform.data.synthesis import generate
    from fdsl.platform.train.pretrain import pretrain

    preset, data_overrides = SOURCES[name]
    data = get_preset(preset, data_overrides)
    start = time.perf_counter()
    generate(data, root / f"data-{name}", log=lambda *a, **k: None)
    generated = time.perf_counter() - start
    experiment = get_preset(preset, data_overrides)
    experiment.pretrain = get_preset("debug-vit", [*PRETRAIN, f"pretrain.max_steps={steps}",
                                                   f"pretrain.img_size={img_size}", *extra]).pretrain
    experiment.validate()
    summary = pretrain(experiment, str(root / f"data-{name}"), root / f"pretrain-{name}")
    info = {"generate_s": round(generated, 1), "pretrain_s": summary["seconds"], "steps": summary["steps"],
            "final_loss": summary["loss"], "images_per_s": summary["images_per_s"],
            "num_images": data.data.num_classes * data.data.num_instances}
    log(f"[{name}] generated {info['num_images']} images in {generated:.1f}s; pre-trained {summary['steps']} "
        f"steps in {summary['seconds']:.0f}s, final loss {summary['loss']:.3f}")
    return summary["model"], info


def ssl_arm(root: Path, seed: int, spc: int, epochs: int, img_size: int) -> tuple[str, dict]:
    from fdsl.platform.train.ssl import ssl

    experiment = get_preset("debug-dino", [f"ssl.samples_per_class={spc}", f"ssl.seed={seed}",
                                           f"ssl.img_size={img_size}", f"ssl.local_img_size={img_size // 2}",
                                           f"ssl.epochs={epochs}", "ssl.global_batch_size=50",
                                           "ssl.threads_per_worker=1", "ssl.warmup_epochs=2"])
    summary = ssl(experiment, "digits", root / f"ssl-{seed}")
    log(f"[dino] seed {seed}: {summary['steps']} steps in {summary['seconds']:.0f}s, loss "
        f"{summary['first_loss']:.3f} -> {summary['final_loss']:.3f}")
    return summary["model"], summary


def finetune_arm(weights: str, out: Path, seed: int, spc: int, epochs: int, img_size: int,
                 extra: list[str], probe: bool) -> dict:
    from fdsl.platform.train.finetune import finetune

    experiment = get_preset("debug-finetune", [f"finetune.img_size={img_size}",
        f"finetune.samples_per_class={spc}", f"finetune.seed={seed}", f"finetune.epochs={epochs}",
        "finetune.global_batch_size=32", "finetune.num_workers=1", "finetune.cpus_per_worker=1",
        "finetune.augment_cpus=0.5", "finetune.eval_every=5",
        f"finetune.loader_probe_images={1024 if probe else 0}",
        "finetune.lr=1e-3", "finetune.warmup_epochs=3", *extra])
    return finetune(experiment, weights, "digits", out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--img-size", type=int, default=16, help="input side of every arm (patch 4)")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--ssl-epochs", type=int, default=15)
    parser.add_argument("--arms", default="scratch,fractaldb,visualatom,dino")
    parser.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra pretrain.* override for the FDSL arms (repeatable)")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra finetune.* override for every arm (repeatable)")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    import ray

    start = time.perf_counter()
    arms = args.arms.split(",")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="fdsl-effect-") as tmp:
        root = Path(args.out or tmp).absolute()
        root.mkdir(parents=True, exist_ok=True)
        weights: dict[str, object] = {"scratch": "scratch"}
        stages: dict[str, dict] = {}
        for name in SOURCES:
            if name in arms:
                weights[name], stages[name] = pretrain_arm(name, root, args.pretrain_steps, args.img_size,
                                                          args.pretrain_set)
        if "dino" in arms:
            weights["dino"] = {}
            for seed in range(args.seeds):
                weights["dino"][seed], stages[f"dino-{seed}"] = ssl_arm(
                    root, seed, args.samples_per_class, args.ssl_epochs, args.img_size)
        results: dict[str, list[dict]] = {arm: [] for arm in arms}
        for seed in range(args.seeds):
            for arm in arms:
                w = weights[arm][seed] if isinstance(weights[arm], dict) else weights[arm]
                r = finetune_arm(w, root / f"finetune-{arm}-{seed}", seed, args.samples_per_class,
                                 args.finetune_epochs, args.img_size, args.finetune_set,
                                 probe=seed == 0)  # the loader alone: once per arm
                results[arm].append(r)
                tp = r["throughput"]
                log(f"[{arm}] seed {seed}: top-1 {r['finetune_top1']:.4f} (best {r['best_top1']:.4f}), "
                    f"{r['wall_seconds']:.0f}s; train {tp['train_images_per_s']:.0f} img/s, loader alone "
                    f"{tp.get('loader_images_per_s', 0):.0f} img/s, data wait "
                    f"{100 * tp['data_wait_fraction']:.1f}% after a {tp['data_startup_s']:.1f}s start")
    ray.shutdown()
    seconds = time.perf_counter() - start

    summary = {}
    log(f"\ndigits, {args.samples_per_class} labelled images per class "
        f"({10 * args.samples_per_class} in all), 359 val images, {args.finetune_epochs} fine-tuning "
        f"epochs, {args.seeds} seeds")
    log(f"{'arm':12s} {'top-1 mean':>10s} {'std':>7s} {'vs scratch':>10s}   per seed")
    base = np.array([r["finetune_top1"] for r in results.get("scratch", [])])
    for arm, runs in results.items():
        top1 = np.array([r["finetune_top1"] for r in runs])
        delta = top1 - base if len(base) == len(top1) and arm != "scratch" else None
        std = float(top1.std(ddof=1)) if len(top1) > 1 else 0.0
        summary[arm] = {"top1_mean": round(float(top1.mean()), 4), "top1_std": round(std, 4),
                        "top1": [round(float(t), 4) for t in top1],
                        "top5_mean": round(float(np.mean([r["finetune_top5"] for r in runs])), 4),
                        "paired_delta_vs_scratch": None if delta is None else round(float(delta.mean()), 4),
                        "wins_vs_scratch": None if delta is None else int((delta > 0).sum()),
                        "loader_to_train_ratio": [r["throughput"]["loader_to_train_ratio"] for r in runs
                                                  if "loader_to_train_ratio" in r["throughput"]],
                        "data_wait_fraction_max": max(r["throughput"]["data_wait_fraction"] for r in runs)}
        s = summary[arm]
        d = "" if delta is None else f"{100 * s['paired_delta_vs_scratch']:+9.1f}pt"
        log(f"{arm:12s} {100 * s['top1_mean']:9.1f}% {100 * s['top1_std']:6.1f}% {d:>10s}   "
            + " ".join(f"{100 * t:.1f}" for t in s["top1"]))
    runs = next(iter(results.values()), [])
    baselines = {}
    for key, label in (("logreg_top1", "logreg (pixels)"), ("knn1_top1", "1-NN (pixels)")):
        top1 = np.array([r["baselines"][key] for r in runs])  # the subset depends on the seed only
        baselines[key] = {"top1_mean": round(float(top1.mean()), 4),
                          "top1": [round(float(t), 4) for t in top1],
                          "top1_std": round(float(top1.std(ddof=1)) if len(top1) > 1 else 0.0, 4)}
        log(f"{label:12s} {100 * top1.mean():9.1f}% {100 * baselines[key]['top1_std']:6.1f}% {'':>10s}   "
            + " ".join(f"{100 * t:.1f}" for t in top1))
    log(f"total {seconds:.0f}s")
    print(json.dumps({"benchmark": "fdsl_effect", "dataset": "digits",
                      "samples_per_class": args.samples_per_class, "seeds": args.seeds,
                      "finetune_epochs": args.finetune_epochs,
                      "pretrain_steps": args.pretrain_steps, "ssl_epochs": args.ssl_epochs,
                      "img_size": args.img_size,
                      "pretrain_set": args.pretrain_set, "finetune_set": args.finetune_set, "arms": summary,
                      "baselines": baselines,
                      "stages": stages, "seconds": round(seconds, 1), "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
