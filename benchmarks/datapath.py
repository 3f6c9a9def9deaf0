"""The data path's cost per 224-px training image, four ways, on the same images, one core.

    .venv/bin/python benchmarks/datapath.py [--preset fractaldb-1k] [--images 256] [--families ...]

(a) anchor: the official FDSL repositories' path: a PNG ImageFolder, timm's `create_transform` (DeiT:
    RandomResizedCrop, RandAugment rand-m9-mstd0.5-inc1, ToTensor, normalise, random erasing 0.25),
    torch's DataLoader in this process (num_workers=0: one core);
(b) fdsl's CPU path (`augment_on=cpu`): shards -> decode -> `augment_batch` (timm's transform per
    image, uint8 out; erasing, normalisation on the device);
(c) fdsl's device path (`augment_on=device`): shards -> decode on the CPU; `DeviceAugment` on the
    training device (crop, RandAugment: measured here on CPU torch, one thread, unless --device);
(d) streaming (`--data stream`): render each family's images at its full-size preset's settings
    (the CPU part) -> the same device part. The CPU part is what the stream's Ray Data tasks run:
    `render_batch` on batches of consecutive (class-major) rows, so what a family's images share is
    shared as in a real stream (FractalDB's four flips of one render, the renders of one orbit);
    each class's system is found once per worker process and is not in the figure. `alone`: one
    image rendered by itself (nothing shared), for comparison.

The same rendered images feed (a), (b) and (c) (a `--preset` data set of --images rows, written as
one fdsl shard and as PNG files). Ray Data's scheduling is not in these figures: per-image work only.
CPU cores a GPU needs = its training images/s x the CPU ms per image / 1000, at two assumed speeds:
ViT-B/16 3,770 images/s (an H100 at 40 % MFU of 989 bf16 TFLOP/s, 105 GFLOP per training image:
3 x 35 GFLOP forward) and ViT-Ti/16 26,000 images/s (20 % MFU, 7.5 GFLOP per image; small models
use a GPU less well). A lent GPU replaces these by measurement (benchmarks/pretrain.py --gpu).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from fdsl.generators import build_generator
from fdsl.platform.data.shards import generator_key, plan_of, read_shard, render_batch, write_shard
from fdsl.platform.train.augment import augment_batch, with_zero_bit_posterize
from fdsl.platform.train.device_augment import DeviceAugment
from fdsl.presets import get_preset

GPU_IMAGES_PER_S = {"vit_base_patch16_224": 3770.0, "vit_tiny_patch16_224": 26000.0}
FAMILIES = ("fractaldb-1k", "exfractaldb-1k", "rcdb-1k", "visualatom-1k", "onepfrac-1k")
GOALS = {"shards_cpu_ms": 0.3, "anchor_ratio": 10.0, "stream_ms": 2.0}


def best_of(fn, repeats: int = 3) -> float:
    """The best wall time of `fn()` over `repeats` runs after one warm-up (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stream_batches(experiment, batches: int) -> int:
    """The stream's own work, timed by the caller (returns the images rendered): `render_batch`,
    what each Ray Data task of `--data stream` runs, on `batches` batches of `synthesis.batch_size`
    consecutive rows, spread evenly over the data set. Rows are class-major, so a batch holds what
    the stream shares: the flips of one FractalDB render, the renders of one orbit. The classes'
    systems are cached by the first (warm-up) call, as a worker caches them for the rest of the run."""
    plan, size = plan_of(experiment), experiment.synthesis.batch_size
    key = generator_key(experiment)
    starts = [k * max(0, plan.num_rows - size) // max(1, batches - 1) for k in range(batches)]
    for start in starts:
        rows = np.arange(start, min(start + size, plan.num_rows), dtype=np.int64)
        render_batch({"id": rows}, generator=key, num_instances=plan.num_instances)
    return sum(min(size, plan.num_rows - s) for s in starts)


def write_images(experiment, root: Path, count: int) -> Path:
    """One fdsl shard of the first `count` rows and the same images as a PNG ImageFolder."""
    (root / "shards").mkdir(parents=True)
    write_shard(root / "shards", 0, generator=generator_key(experiment),
                synthesis={**experiment.synthesis.to_dict(), "shard_rows": count})
    rows = read_shard(root / "shards" / "shard-00000.parquet")
    for i, (image, label) in enumerate(zip(rows["image"], rows["label"], strict=True)):
        folder = root / "png" / f"{int(label):05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").save(folder / f"{i:06d}.png")
    return root / "shards" / "shard-00000.parquet"


def anchor(root: Path, cfg, count: int) -> float:
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    # timm's posterize fails at RandAugment's top magnitude (0 bits) on Pillow >= 12: fdsl's fix
    transform = with_zero_bit_posterize(create_transform(
        input_size=(3, cfg.img_size, cfg.img_size), is_training=True, auto_augment=cfg.randaugment,
        interpolation="bicubic", re_prob=0.25, scale=(cfg.crop_scale_min, 1.0), hflip=cfg.hflip))
    loader = torch.utils.data.DataLoader(ImageFolder(str(root / "png"), transform=transform), batch_size=64,
                                         num_workers=0)
    return best_of(lambda: [b for b in loader]) / count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fractaldb-1k", help="the data set of (a)-(c) (a full-size preset)")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--families", nargs="*", default=list(FAMILIES), help="full-size presets of (d)")
    p.add_argument("--stream-batches", type=int, default=4, help="render batches per family in (d)")
    p.add_argument("--device", default="cpu", help="the device of the device part (cuda when lent)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # per core
    experiment = get_preset(args.preset)
    cfg = experiment.pretrain
    n = args.images
    results: dict = {"preset": args.preset, "images": n, "img_size": cfg.img_size,
                     "image_size": experiment.data.image_size, "device": args.device,
                     "randaugment": cfg.randaugment}
    on_device = DeviceAugment(SimpleNamespace(**{**cfg.to_dict(), "repeated_aug": 1}), args.device, seed=0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def device_part(images: np.ndarray) -> float:
        batch, labels = torch.tensor(images), torch.zeros(len(images), dtype=torch.int64)

        def run():
            for i in range(0, len(batch), 64):
                on_device(batch[i:i + 64], labels[i:i + 64])
            sync()
        return best_of(run) / len(images)

    with tempfile.TemporaryDirectory() as tmp:
        print(f"rendering {n} {args.preset} images ({experiment.data.image_size} px) ...", file=sys.stderr)
        shard = write_images(experiment, Path(tmp), n)
        rows = read_shard(shard)
        a = anchor(Path(tmp), cfg, n)
        augment = dict(img_size=cfg.img_size, randaugment=cfg.randaugment, crop_scale_min=cfg.crop_scale_min,
                       hflip=cfg.hflip, repeats=1)
        b = best_of(lambda: augment_batch(read_shard(shard), **augment)) / n
        c_cpu = best_of(lambda: read_shard(shard)) / n
        c_dev = device_part(rows["image"])
    results["ms_per_image"] = {"a_anchor_png_timm": a * 1e3, "b_shards_cpu_augment": b * 1e3,
                               "c_shards_decode_cpu": c_cpu * 1e3, "c_device_augment": c_dev * 1e3}
    streams = {}
    for family in args.families:
        exp = get_preset(family)
        gen = build_generator(exp.generator, exp.data)
        ids = list(range(min(32, exp.data.num_classes)))
        [gen.render(c, 0) for c in ids]  # each class's system: found once per worker process
        alone = best_of(lambda g=gen, i=ids: [g.render(c, 0) for c in i], repeats=2) / len(ids)
        rendered = {}  # best_of's warm-up call caches the classes' systems
        stream = best_of(lambda e=exp, r=rendered: r.update(n=stream_batches(e, args.stream_batches)),
                         repeats=2)
        stream /= rendered["n"]
        sample = np.stack([gen.render(c, 0) for c in ids[:8]])
        streams[family] = {"render_ms": stream * 1e3, "render_alone_ms": alone * 1e3,
                           "device_augment_ms": device_part(sample) * 1e3, "image_size": exp.data.image_size}
    results["stream"] = streams
    cores = {model: {"a_anchor": ips * a, "b_cpu_augment": ips * b, "c_shards_device": ips * c_cpu,
                     **{f"d_stream_{f}": ips * s["render_ms"] / 1e3 for f, s in streams.items()}}
             for model, ips in GPU_IMAGES_PER_S.items()}
    results["cpu_cores_per_gpu"] = cores
    results["assumed_gpu_images_per_s"] = GPU_IMAGES_PER_S
    results["ratio_anchor_to_shards_cpu"] = a / c_cpu
    results["ratio_cpu_augment_to_shards_cpu"] = b / c_cpu
    results["goals"] = {"shards_cpu_ms<=0.3": c_cpu * 1e3 <= GOALS["shards_cpu_ms"],
                        "anchor/shards_cpu>=10": a / c_cpu >= GOALS["anchor_ratio"],
                        "stream_ms<=2 every family": all(s["render_ms"] <= GOALS["stream_ms"]
                                                         for s in streams.values())}
    ms = results["ms_per_image"]
    print(f"\nper {cfg.img_size}-px training image, one core ({args.preset}, {n} images of "
          f"{experiment.data.image_size} px; device part on {args.device}):")
    print(f"  (a) anchor: PNG + timm DeiT transform + DataLoader   {ms['a_anchor_png_timm']:8.3f} ms CPU")
    print(f"  (b) fdsl CPU path: shards -> decode -> timm per image {ms['b_shards_cpu_augment']:8.3f} ms CPU")
    print(f"  (c) fdsl device path: shards -> decode               {ms['c_shards_decode_cpu']:8.3f} ms CPU "
          f"+ {ms['c_device_augment']:.3f} ms device work ({args.device})  -> anchor / (c) CPU = "
          f"{results['ratio_anchor_to_shards_cpu']:.0f}x")
    for family, s in streams.items():
        print(f"  (d) stream {family:15s} render {s['image_size']:4d} px     {s['render_ms']:8.3f} ms CPU "
              f"+ {s['device_augment_ms']:.3f} ms device work (alone: {s['render_alone_ms']:.3f} ms)")
    for model, per in cores.items():
        print(f"  CPU cores per GPU at {model} ({GPU_IMAGES_PER_S[model]:.0f} images/s, assumed): "
              + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    print(f"  goals: {results['goals']}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
