"""The training engine of pre-training and fine-tuning: DeepSpeed's, or plain torch behind the same calls.

    model = create_model(cfg, num_classes)               # timm's, fresh; input_normalization(cfg, model)
    engine = make_engine(cfg, model, optimizer, world)   # cfg.use_deepspeed picks the kind
    loss = batch_ops.loss(engine(x), target); engine.backward(loss); engine.step()
    engine.save_checkpoint(dir, tag, client_state); _, client = engine.load_checkpoint(dir, tag)

DeepSpeed (ZeRO, bf16 master weights) earns its keep on GPUs and for models that do not fit one
device; for a laptop-size ViT on CPU its start (and first JIT build) costs more than the run, so the
laptop presets train with `TorchEngine`: the model itself (torch DDP with several workers), timm's
optimizer, bf16 through autocast, gradient accumulation and clipping as DeepSpeed does them, and
checkpoints as one tensor file loaded with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch

from fdsl.platform.train.sections import deepspeed_config

STATE_FILE = "torch_state.pt"
"""TorchEngine's checkpoint file inside the checkpoint's tag folder."""


def create_model(cfg, num_classes: int, **kwargs):
    """A freshly initialised timm model of the config (`timm.create_model`, no download)."""
    return timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, img_size=cfg.img_size,
                             patch_size=cfg.patch_size, drop_path_rate=cfg.drop_path_rate, **kwargs)


def input_normalization(cfg, model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel in [0, 1] units: the config's, else the model's timm default."""
    if cfg.norm_mean is not None:
        return (cfg.norm_mean,) * 3, (cfg.norm_std,) * 3
    return (tuple(model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5))),
            tuple(model.pretrained_cfg.get("std", (0.5, 0.5, 0.5))))



class TorchEngine:
    """The part of DeepSpeed's engine the trainers call, for a plain torch model."""

    def __init__(self, model, optimizer, *, world: int, grad_accum_steps: int = 1, clip_grad: float = 0.0,
                 bf16: bool = False, device=None):
        self.module, self.optimizer = model, optimizer
        if world > 1:  # DDP over the Train worker group (Ray only here: benchmarks/gpu_check.py has none)
            import ray.train.torch

            self.net = ray.train.torch.prepare_model(model)
        else:
            self.net = model.to(device)
        self.accum, self.clip, self.micro = grad_accum_steps, clip_grad, 0
        self.autocast = (torch.autocast(device_type=(device.type if device is not None else "cpu"),
                                        dtype=torch.bfloat16) if bf16 else None)
        optimizer.zero_grad(set_to_none=True)

    def __call__(self, x):
        if self.autocast is None:
            return self.net(x)
        with self.autocast:
            return self.net(x)

    def train(self, mode: bool = True):
        self.net.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def backward(self, loss) -> None:
        (loss / self.accum if self.accum > 1 else loss).backward()

    def step(self) -> None:
        """An optimizer step at the end of every `grad_accum_steps` micro batches (as DeepSpeed's)."""
        self.micro += 1
        if self.micro % self.accum:
            return
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save_checkpoint(self, directory: str | Path, tag: str, client_state: dict[str, Any]) -> None:
        folder = Path(directory) / tag
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "client": client_state}, folder / STATE_FILE)

    def load_checkpoint(self, directory: str | Path, tag: str) -> tuple[str, dict[str, Any]]:
        """(path, client_state) of a checkpoint `save_checkpoint` wrote; tensors only (`weights_only`)."""
        path = Path(directory) / tag / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent}: no {STATE_FILE} (a checkpoint of a DeepSpeed run? "
                                    "resume it with use_deepspeed=true)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return str(path), state["client"]


def make_engine(cfg, model, optimizer, world: int, device):
    """(engine, optimizer): DeepSpeed's with `cfg.use_deepspeed`, else a `TorchEngine`."""
    if cfg.use_deepspeed:
        import deepspeed


        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")
        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                       config=deepspeed_config(cfg))
        return engine, optimizer
    return TorchEngine(model, optimizer, world=world, grad_accum_steps=cfg.grad_accum_steps,
                       clip_grad=cfg.clip_grad, bf16=cfg.precision == "bf16", device=device), optimizer
