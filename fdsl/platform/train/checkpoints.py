"""Pre-training checkpoints: what goes into one (DeepSpeed's state, each rank's RNG, the step and
schedule) and the checks a `--resume` makes before any worker loads one.

DeepSpeed loads its checkpoint files with pickle: `check_checkpoints` scans every file's opcodes
first (torch's `get_unsafe_globals_in_checkpoint`) and refuses anything beyond torch's weights-only
types and `CHECKPOINT_GLOBALS`.
"""

from __future__ import annotations

import importlib
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import ray.train
import torch

from fdsl.platform.train.config import EXPERIMENT_FILE
from fdsl.platform.train.engine import STATE_FILE
from fdsl.platform.train.run import TRAIN_NAME

CKPT_TAG = "state"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train's list of a run's checkpoints (in `train/`), which a resume loads them by."""
"""The engine's tag (sub-folder) of the state inside each Ray checkpoint folder."""
RESUME_FIXED = ("model", "img_size", "patch_size", "num_workers", "use_deepspeed", "zero_stage",
                "precision", "global_batch_size", "grad_accum_steps", "optimizer")
"""Pre-training fields a resumed run must keep (the checkpoint's shapes and partitions depend on them)."""


def save_rng(directory: Path, rank: int) -> None:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    torch.save(state, directory / f"rng-rank{rank}.pt")


def load_rng(directory: Path, rank: int) -> None:
    state = torch.load(directory / f"rng-rank{rank}.pt", weights_only=True)
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(engine, scheduler, plan: dict, step: int, rank: int, world: int, metrics: dict) -> None:
    """DeepSpeed state + this rank's RNG, reported to Ray Train from every rank (one merged folder)."""
    with tempfile.TemporaryDirectory(prefix="fdsl-ckpt-") as d:
        engine.save_checkpoint(d, tag=CKPT_TAG, client_state={
            "step": step, "scheduler": scheduler.state_dict(), "schedule": plan, "world_size": world})
        save_rng(Path(d), rank)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{step:09d}")


def check_resume(out: Path, experiment) -> None:
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
    checkpoint's client state must hold what the loop reads, and Ray's checkpoint snapshot may name
    only this run's checkpoint folders (never a path elsewhere). Returns the number of files checked."""
    _check_snapshot(out / TRAIN_NAME)
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


def _check_snapshot(train: Path) -> None:
    """Every checkpoint Ray's snapshot names is a checkpoint folder of this run: a crafted name
    (`../x`, an absolute path) would make Ray load files the scan above never looked at."""
    path = train / SNAPSHOT_FILE
    if not path.is_file():
        return
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"--resume: {path} is not Ray Train's checkpoint snapshot (not JSON); start the "
                         "run anew in another --out") from None
    for name in _dir_names(state):
        if not (isinstance(name, str) and Path(name).name == name and name.startswith("checkpoint_")
                and (train / name).is_dir()):
            raise ValueError(f"--resume: {path} names checkpoint {name!r}, not a checkpoint folder of this "
                             "run; refusing to load it: start the run anew in another --out")


def _dir_names(node):
    """The checkpoint folder names anywhere in a checkpoint snapshot."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "checkpoint_dir_name":
                yield value
            elif key.endswith("_dir_names") and isinstance(value, list):
                yield from value
            else:
                yield from _dir_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dir_names(item)


def _check_client_state(folder: Path, named: dict[Path, list[str]]) -> None:
    """The client state of a checkpoint (DeepSpeed's model states or the torch engine's file): a dict
    with an int step and world size and a dict scheduler state; ValueError naming the file otherwise.
    `named`: the globals `check_checkpoints` found (and allowed) in each file."""
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
    module, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module), name)
