"""The weights contract: `model.safetensors` + `config.json`, written once and read once.

Every trainer exports through `export_weights` (fp32 tensors, ZeRO partitions gathered, written
atomically by rank 0) and every reader loads through `load_pretrained` (timm's own pretrained-file
path, so another head or input size is timm's job). `check_buildable` is the one "can timm build
it" check, on the meta device before any worker starts. `resolve_weights` turns fine-tuning's
`--weights` (a run, `scratch`, `timm:<name>`) into a plain description the workers rebuild from.

config.json: architecture, img_size, patch_size, num_classes (0: no head), in_chans, mean, std,
interpolation, plus what made the weights (the trainer's section, step, source), and timm's Hub
keys (`model_args`, `pretrained_cfg`): `timm.create_model("local-dir:RUN", pretrained=True)` loads
a run folder as it is.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

import timm
import torch
import torch.hub
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import HF_HUB_CACHE
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from fdsl.atomic import atomic_path, atomic_write_text
from fdsl.platform.train.memory import vit_shape
from fdsl.platform.train.plans import Weights

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def gathered_state(module, rank: int = 0) -> dict | None:
    """The module's tensors as contiguous fp32 CPU tensors, ZeRO partitions gathered (a collective:
    every rank calls it, in the same order); the dict on rank 0, None elsewhere."""
    safe_get_full_fp32_param = None
    if "deepspeed" in sys.modules:  # only a DeepSpeed run can hold ZeRO partitions (no import otherwise)
        from deepspeed.utils import safe_get_full_fp32_param
    params = dict(module.named_parameters())
    state = {}
    for name, tensor in module.state_dict().items():
        if name in params and safe_get_full_fp32_param is not None:
            full = safe_get_full_fp32_param(params[name])
            tensor = params[name] if full is None else full
        if rank == 0:
            tensor = tensor.detach().cpu()
            state[name] = (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
    return state if rank == 0 else None


def export_weights(module, out: str | os.PathLike, config: dict[str, Any], rank: int = 0) -> None:
    """Write `model.safetensors` (the module's gathered fp32 tensors) and `config.json` into `out`.

    `config` holds at least architecture, img_size, patch_size, num_classes, mean and std. Every
    rank calls this (the gather is a collective); rank 0 writes.
    """
    state = gathered_state(module, rank)
    if rank != 0:
        return
    out = Path(out)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    meta = {"in_chans": 3, "interpolation": "bicubic", **config}
    meta["mean"], meta["std"] = list(meta["mean"]), list(meta["std"])
    meta.update(hub_config(meta))
    atomic_write_text(out / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")


def hub_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The keys of timm's Hugging Face Hub `config.json` for fdsl's weights config `meta`, so that
    `timm.create_model("local-dir:RUN", pretrained=True)` (and `hf-hub:` after an upload) builds
    the model and loads the weights: `model_args` rebuild the architecture at the weights' input
    and patch size, `pretrained_cfg` carries the normalisation and input size. fdsl's own keys stay
    beside them (`load_pretrained` reads those, in every run folder old or new)."""
    size = int(meta["img_size"])
    args = {"img_size": size, **({"patch_size": int(meta["patch_size"])} if meta.get("patch_size") else {})}
    return {"architecture": meta["architecture"], "num_classes": int(meta["num_classes"]), "model_args": args,
            "pretrained_cfg": {"input_size": [int(meta.get("in_chans", 3)), size, size],
                               "mean": list(meta["mean"]), "std": list(meta["std"]),
                               "interpolation": meta.get("interpolation", "bicubic"), "crop_pct": 1.0,
                               "num_classes": int(meta["num_classes"]), "fixed_input_size": True}}


def load_pretrained(run_or_file: str | os.PathLike, num_classes: int | None = None, **kwargs):
    """The exported model of a run as a timm model, through timm's own pretrained-file path.

    `num_classes` other than the weights' gives a freshly initialised head (fine-tuning);
    `img_size=` another input size (the position embedding is resampled by timm's loader).
    """
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


def check_known(section: str, arch: str) -> str:
    """The timm architecture of `arch` (a name, or name.pretrained_tag), or ValueError naming
    `section`.model with the closest names timm knows."""
    base = arch.split(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3) or ["vit_tiny_patch16_224"]
        raise ValueError(f"{section}.model: got {arch!r}, expected a timm model name such as "
                         f"{', '.join(close)} (see timm.list_models())")
    return base


def check_buildable(section: str, arch: str, build=None, **kwargs) -> dict[str, int]:
    """Fail early (ValueError naming `section`.model) on a model timm does not know or cannot build
    with `kwargs`; returns its shape (`memory.vit_shape`: parameters, width, depth, heads, patch).
    `build(arch, **kwargs)` defaults to `timm.create_model(arch, pretrained=False, **kwargs)`; it
    runs on the meta device (no memory)."""
    base = check_known(section, arch)
    build = build or (lambda name, **kw: timm.create_model(name, pretrained=False, **kw))
    try:
        with torch.device("meta"):
            model = build(base, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        shown = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k in ("img_size", "patch_size"))
        raise ValueError(f"{section}.model: timm cannot build {arch!r} with {shown}: {err}") from None

    return vit_shape(model)


# --- fine-tuning's --weights ---------------------------------------------------------------------
def _timm_local_file(name: str) -> str:
    """The local file of timm's pretrained weights `name` (HF hub cache or torch hub dir), or ValueError."""
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
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return found
        looked.append(f"{HF_HUB_CACHE} ({repo})")
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        looked.append(str(path))
        if path.is_file():
            return str(path)
    raise ValueError(f"--weights: timm:{name} has no local copy of its pretrained weights (looked in "
                     f"{'; '.join(looked) or 'nowhere: no source known'}) and nothing downloads here; "
                     "copy the file into that cache, or fine-tune a `fdsl pretrain` run or scratch")


def resolve_weights(weights: str, cfg, pretrain_cfg) -> Weights:
    """Check `--weights` on the driver and describe it for the workers (`plans.Weights`)."""
    if weights == "scratch":
        mean = getattr(pretrain_cfg, "norm_mean", None)  # as pre-training normalises, for a fair scratch arm
        std = getattr(pretrain_cfg, "norm_std", None)
        return Weights(kind="scratch", source=weights, architecture=cfg.model or pretrain_cfg.model,
                       img_size=cfg.img_size or pretrain_cfg.img_size,
                       patch_size=cfg.patch_size or pretrain_cfg.patch_size,
                       mean=None if mean is None else [mean] * 3, std=None if std is None else [std] * 3)
    if weights.startswith("timm:"):
        name = weights[len("timm:"):]
        file = _timm_local_file(name)

        size = cfg.img_size or get_pretrained_cfg(name).input_size[-1]
        return Weights(kind="timm", source=weights, file=file, architecture=name, img_size=size,
                       patch_size=None)
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
    return Weights(kind="run", source=weights, file=str(file.absolute()), num_classes=num_classes,
                   architecture=arch, img_size=cfg.img_size or size, weights_img_size=size, patch_size=patch,
                   mean=config.get("mean"), std=config.get("std"))


def check_model_of(spec: Weights, num_classes: int) -> dict[str, int]:
    """The model timm builds for `spec` (ValueError if it cannot): its shape, for the memory check."""
    kwargs = {"img_size": spec.img_size}
    if spec.patch_size:
        kwargs["patch_size"] = spec.patch_size
    return check_buildable("finetune", spec.architecture, num_classes=num_classes, **kwargs)


def check_weights_fit(spec: Weights, num_classes: int) -> int:
    """Every tensor of the model a run's weights build (the head aside, when it is replaced) must be
    in the file under its name and with its shape: ValueError naming the first that is missing or
    mismatched. Returns how many tensors the file provides. On the driver, on the meta device.

    timm's loader is not strict about a replaced head, and a file whose names match nothing (e.g.
    saved under a `backbone.` prefix) would otherwise fine-tune from scratch without a word.
    """
    kwargs = {"img_size": spec.weights_img_size or spec.img_size}
    if spec.patch_size:
        kwargs["patch_size"] = spec.patch_size
    head_classes = spec.num_classes
    with torch.device("meta"):
        model = timm.create_model(spec.architecture, pretrained=False, num_classes=head_classes, **kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if head_classes != num_classes:  # a new head: its tensors do not come from the file
        classifier = model.pretrained_cfg.get("classifier") or "head"
        names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
        expected = {k: v for k, v in expected.items() if not any(k.startswith(n + ".") for n in names)}
    with safe_open(spec.file, framework="pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    for name, shape in expected.items():
        if name not in have:
            close = sorted(have)[:3]
            raise ValueError(f"--weights: {spec.file} has no tensor {name!r} of {spec.architecture} "
                             f"(it holds {len(have)} tensors, e.g. {close}); save the weights under the "
                             "model's own names, as `fdsl pretrain` does")
        if have[name] != shape:
            raise ValueError(f"--weights: tensor {name!r} of {spec.file} has shape {list(have[name])}, "
                             f"{spec.architecture} at img_size {kwargs['img_size']} needs {list(shape)}")
    return len(expected)


def _check_safetensors(file: Path) -> None:
    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{file}: not a readable safetensors file ({err})") from None


def build_model(spec: Weights, num_classes: int, drop_path_rate: float = 0.0):
    """The model of a resolved weights spec with a `num_classes` head (new if the counts differ)."""
    if spec.kind == "scratch":
        return timm.create_model(spec.architecture, pretrained=False, num_classes=num_classes,
                                 img_size=spec.img_size, patch_size=spec.patch_size,
                                 drop_path_rate=drop_path_rate)
    if spec.kind == "timm":
        return timm.create_model(spec.architecture, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=spec.file), num_classes=num_classes,
                                 img_size=spec.img_size, drop_path_rate=drop_path_rate)
    return load_pretrained(spec.file, num_classes=num_classes, img_size=spec.img_size,
                           drop_path_rate=drop_path_rate)


def head_info(spec: Weights, num_classes: int) -> dict[str, Any]:
    """Whether fine-tuning starts with a new classifier head, and why."""
    have = spec.num_classes
    if spec.kind == "scratch":
        reason = "scratch: every weight is new"
    elif spec.kind == "timm":
        reason = "timm weights: head replaced for the target classes"
    elif have == num_classes:
        reason = "class counts match: the pre-trained head is kept"
    else:
        reason = (f"the weights have a {have}-class head, the target has {num_classes} classes: "
                  "new head" if have else f"the weights have no head: new {num_classes}-class head")
    new = spec.kind != "run" or have != num_classes
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
