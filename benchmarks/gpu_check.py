"""The GPU check: what one lent GPU does with fdsl's own model, step and data-path code, in minutes.

    python benchmarks/gpu_check.py                 # on a GPU machine (cuda), about 3-5 minutes
    python benchmarks/gpu_check.py --debug         # tiny sizes on the CPU (what the tests run)

Needs torch, timm, numba and pyarrow only (a lent machine has no Ray, DeepSpeed or network): the
model is fdsl's `create_model` of the vit-base-fractaldb-1k preset (ViT-B/16, 224 px, 1,000
classes), trained by fdsl's `TorchEngine` (bf16 autocast, timm's AdamW and the preset's clipping)
on batches through `DeviceBatch` (normalise, erasing, Mixup/CutMix), as the pre-training loop does
in Ray Train's local mode. It measures
  1. training images/s and MFU (FLOPs per image counted by torch's FlopCounterMode on one
     forward + backward; the peak from the device name: H100 / H200 989 bf16 TFLOP/s dense);
  2. `DeviceAugment` images/s: 362-px FractalDB images -> 224-px crops + RandAugment, per sample;
  3. shards -> device images/s: one fdsl shard read and decoded by pyarrow on one core, copied to the
     device, augmented there (the full-size presets' `augment_on=device` path, without Ray Data).
Last line: one JSON object (docs/benchmarks.md records it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from fdsl.platform.data.shards import generator_key, read_shard, write_shard
from fdsl.platform.train.augment import DeviceBatch
from fdsl.platform.train.device_augment import DeviceAugment
from fdsl.platform.train.engine import TorchEngine, create_model, input_normalization
from fdsl.platform.train.optim import create_optimizer
from fdsl.presets import get_preset

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 tensor-core peaks (NVIDIA's data sheets; SXM parts)."""


def synthetic_step(engine, ops, img_size: int, num_classes: int, batch: int, device):
    """(step, images, labels): one training step of `engine` (fdsl's TorchEngine or DeepSpeed's,
    both with backward() and step()) and the batch ops `ops` (DeviceBatch) on a random uint8 batch
    made once on `device`. Also benchmarks/pretrain.py --gpu's step."""
    images = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        x, target = ops.inputs(images, labels)
        loss = ops.loss(engine(x), target)
        engine.backward(loss)
        engine.step()

    return step, images, labels


def _timed(fn, steps: int, sync) -> float:
    """Seconds per call of `fn` over `steps` calls after 2 warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--debug", action="store_true", help="test_vit at 32 px, small batches: a CPU smoke run")
    p.add_argument("--batch", type=int, default=None, help="micro batch of the training step (default 128)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 20)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    experiment = get_preset("vit-base-fractaldb-1k")
    overrides = {"num_workers": 0, "use_gpu": device.type == "cuda", "use_deepspeed": False}
    if args.debug:
        overrides.update(model="test_vit", img_size=32, patch_size=8)
        experiment.data.num_classes, experiment.data.image_size = 10, 64
    batch = args.batch or (8 if args.debug else 128)
    steps = args.steps or (2 if args.debug else 20)
    cfg = experiment.pretrain
    for key, value in overrides.items():
        setattr(cfg, key, value)
    num_classes = experiment.data.num_classes
    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "model": cfg.model, "img_size": cfg.img_size, "micro_batch": batch,
                 "torch": torch.__version__}

    # 1. the training step: fdsl's model, engine (bf16 autocast) and batch ops
    model = create_model(cfg, num_classes)
    mean, std = input_normalization(cfg, model)
    engine = TorchEngine(model, create_optimizer(model, cfg), world=1, clip_grad=cfg.clip_grad,
                         bf16=cfg.precision == "bf16", device=device)
    ops = DeviceBatch(cfg, num_classes, device, mean, std, dtype=torch.float32)
    step, _, _ = synthetic_step(engine, ops, cfg.img_size, num_classes, batch, device)
    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_image = counter.get_total_flops() / batch
    seconds = _timed(step, steps, sync)
    out["train_images_per_s"] = batch / seconds
    out["train_gflop_per_image"] = flops_per_image / 1e9
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in out["device"]), None)
    out["mfu"] = out["train_images_per_s"] * flops_per_image / (peak * 1e12) if peak else None
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2 and 3. the data path: a shard of the preset's own images, decoded, then DeviceAugment
    aug_cfg = SimpleNamespace(**{**cfg.to_dict(), "micro_batch_size": batch})
    augment = DeviceAugment(aug_cfg, device, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "s").mkdir()
        rows = 64 if args.debug else 512
        write_shard(Path(tmp) / "s", 0, generator=generator_key(experiment),
                    synthesis={**experiment.synthesis.to_dict(), "shard_rows": rows})
        shard = Path(tmp) / "s" / "shard-00000.parquet"
        decoded = read_shard(shard)
        loaded = torch.tensor(decoded["image"][:batch]).to(device)
        labels = torch.tensor(decoded["label"][:batch]).to(device)
        seconds = _timed(lambda: augment(loaded, labels), steps, sync)
        out["device_augment_images_per_s"] = len(loaded) * cfg.repeated_aug / seconds
        out["image_size"] = int(decoded["image"].shape[1])

        def shards_to_device():
            data = read_shard(shard)
            for i in range(0, rows, batch):
                x = torch.tensor(data["image"][i:i + batch]).to(device, non_blocking=True)
                augment(x, torch.from_numpy(data["label"][i:i + batch].astype("int64")).to(device))

        seconds = _timed(shards_to_device, 1 if args.debug else 3, sync)
        out["shards_to_device_images_per_s"] = rows * cfg.repeated_aug / seconds
    print(f"gpu_check on {out['device']}: {cfg.model} {cfg.img_size}px bf16, micro batch {batch}: "
          f"{out['train_images_per_s']:.0f} images/s, {out['train_gflop_per_image']:.1f} GFLOP per image, "
          "MFU "
          + (f"{100 * out['mfu']:.1f} %" if out["mfu"] is not None else "n/a (unknown peak)")
          + f"; DeviceAugment {out['device_augment_images_per_s']:.0f} images/s; shards -> device "
          f"{out['shards_to_device_images_per_s']:.0f} images/s")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
