"""Pre-training checkpoints: what goes into one (DeepSpeed's state, each rank's RNG, the step and
schedule) and the checks a `--resume` makes before any worker loads one.

DeepSpeed loads its checkpoint files with pickle: `check_checkpoints` scans every file's opcodes
first (torch's `get_unsafe_globals_in_checkpoint`) and refuses anything beyond torch's weights-only
types and `CHECKPOINT_GLOBALS`.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch

from fdsl.atomic import atomic_write_text
from fdsl.platform.train.config import EXPERIMENT_FILE
from fdsl.platform.train.engine import STATE_FILE
from fdsl.platform.train.run import METRICS_LOG, TRAIN_NAME
from fdsl.schema import flatten, read_jsonl

CKPT_TAG = "state"
"""The engine's tag (sub-folder) of the state inside each Ray checkpoint folder."""
KEEP_CHECKPOINTS = 2
"""Checkpoints a fine-tuning or SSL run keeps (pre-training: `pretrain.keep_checkpoints`)."""
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train's list of a run's checkpoints (in `train/`), which a resume loads them by."""
TORN = "torn"
"""`train/torn/`: checkpoint folders whose write was cut (Ctrl-C, a kill, a full disk), set aside
by a resume; never loaded, kept for a look."""
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


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def save_checkpoint(cfg, run_dir: str | None, write_state: Callable[[Path], None], step: int, rank: int,
                    metrics: dict, keep: int) -> bool:
    """A training loop's checkpoint: `write_state(folder)` writes the trainer's state into a folder
    (the engine's files, or a trainer's own `STATE_FILE` under `CKPT_TAG`), this rank's RNG beside it.
    Returns whether `metrics` went to Ray Train with it (else the caller reports them).

    Worker runs: every rank reports its folder to Ray Train with `metrics` (one merged
    `train/checkpoint_N`, listed in Ray's snapshot). Local mode (`cfg.local_mode`; Ray Train keeps no
    checkpoints there; none without a `run_dir`): written under a staging name and renamed whole into
    `train/checkpoint_N`, then listed in a snapshot of Ray's schema (rewritten atomically) and the
    oldest beyond `keep` deleted. A stop at any moment leaves the previous checkpoint as it was."""
    if not cfg.local_mode:
        with tempfile.TemporaryDirectory(prefix="fdsl-ckpt-") as d:
            write_state(Path(d))
            save_rng(Path(d), rank)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=checkpoint_name(step))
        return True
    if not run_dir:
        return False
    train = Path(run_dir) / TRAIN_NAME
    final = train / checkpoint_name(step)
    staging = train / f".{final.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_state(staging)
    save_rng(staging, 0)
    shutil.rmtree(final, ignore_errors=True)  # a step written again after a resume from an older one
    os.replace(staging, final)
    folders = sorted(p for p in train.glob("checkpoint_*") if p.is_dir())
    _write_snapshot(Path(run_dir), folders[-keep:])
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return False


def restore_checkpoint(cfg, run_dir: str | None, read_state: Callable[[Path], dict | None], rank: int,
                       world: int) -> dict | None:
    """The client state of the run's newest checkpoint, once `read_state(folder)` has loaded the
    trainer's state from it (returning the client state) and this rank's RNG is restored; None: a new
    run. Worker runs: the checkpoint Ray Train hands the worker group; local mode: the newest one
    Ray's snapshot in `run_dir` lists (`save_checkpoint` wrote it)."""
    if cfg.local_mode:
        step = newest_checkpoint_step(Path(run_dir)) if run_dir else None
        checkpoint = None if step is None else \
            ray.train.Checkpoint.from_directory(str(Path(run_dir) / TRAIN_NAME / checkpoint_name(step)))
    else:
        checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        client = read_state(Path(d))
        if client is None or client["world_size"] != world:
            raise RuntimeError(f"checkpoint {checkpoint.path} was written by "
                               f"{client and client['world_size']} workers, this run has {world}")
        load_rng(Path(d), rank)
    return client


def drop_checkpoints(out: Path) -> None:
    """After a fine-tuning or SSL run finished: its checkpoints (`train/`) go, they resume nothing now."""
    shutil.rmtree(out / TRAIN_NAME, ignore_errors=True)


def save_state(folder: Path, client: dict, **state) -> None:
    """A trainer's own checkpoint file (trainers without an engine, e.g. SSL): `state` (models',
    optimizers' state dicts) and the client state, read back by `load_state` with weights_only."""
    (folder / CKPT_TAG).mkdir(parents=True, exist_ok=True)
    torch.save({**state, "client": client}, folder / CKPT_TAG / STATE_FILE)


def load_state(folder: Path) -> dict:
    """What `save_state` wrote (tensors only, on the CPU)."""
    return torch.load(folder / CKPT_TAG / STATE_FILE, map_location="cpu", weights_only=True)


def repair_checkpoints(out: Path, world: int) -> list[str]:
    """Before a resume loads anything: set aside a checkpoint whose write was cut, and make Ray's
    snapshot name only complete checkpoints; returns one line per change, for the console.

    Ray Train copies a checkpoint into `train/checkpoint_N`, then lists it in its snapshot, which it
    rewrites in place. A stop during the copy leaves a folder the snapshot does not list (set aside:
    it was never committed); a stop during the rewrite leaves a snapshot that is not JSON: it is
    written again from the checkpoint folders, the newest one set aside when its files are cut short
    (`world` ranks' RNG files, every `.pt` file readable). The run then resumes from the newest
    complete checkpoint, or from step 0 when none is left. A checkpoint the snapshot lists is left
    to `check_checkpoints`, which refuses what is damaged or crafted."""
    train = out / TRAIN_NAME
    folders = sorted(p for p in train.glob("checkpoint_*") if p.is_dir())
    snapshot = train / SNAPSHOT_FILE
    notes: list[str] = []
    for staging in sorted(train.glob(".checkpoint_*.staging")):  # a local-mode write that was cut
        shutil.rmtree(staging)
        notes.append(f"{staging.name}: a checkpoint write that was cut (never renamed into place); removed")
    state = _read_snapshot(snapshot)
    if state is not None:
        _check_snapshot(train)  # a crafted name is refused before anything moves
        listed = set(_dir_names(state))
        for folder in folders:
            if folder.name not in listed:
                notes.append(_set_aside(folder, "its write was cut (Ray's snapshot never listed it)"))
        return notes
    if folders and (problem := _cut_short(folders[-1], world)):
        notes.append(_set_aside(folders[-1], problem))
        folders = folders[:-1]
    if not snapshot.exists() and not folders:
        return notes
    if folders:
        _write_snapshot(out, folders)
        notes.append(f"{snapshot} rewritten from the checkpoint folders (its write was cut): resuming from "
                     f"{folders[-1].name}")
    else:
        snapshot.unlink()
        notes.append(f"{snapshot} removed (its write was cut) and no complete checkpoint is left: the run "
                     "starts again from step 0")
    return notes


def _read_snapshot(path: Path) -> dict | None:
    """Ray's snapshot, or None when there is none or its write was cut (not JSON)."""
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def _cut_short(folder: Path, world: int) -> str | None:
    """Why a checkpoint folder's write looks cut short, or None."""
    missing = [name for name in (f"rng-rank{r}.pt" for r in range(world)) if not (folder / name).is_file()]
    if missing:
        return f"{missing[0]} is missing"
    for path in sorted(p for p in folder.rglob("*.pt") if p.is_file()):
        try:
            torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (ValueError, RuntimeError, OSError, EOFError):
            return f"{path.relative_to(folder)} is cut short"
    return None


def _set_aside(folder: Path, why: str) -> str:
    aside = folder.parent / TORN / folder.name
    aside.parent.mkdir(exist_ok=True)
    os.replace(folder, aside)
    return f"{folder.name}: {why}; set aside in {aside.parent}"


def _write_snapshot(out: Path, folders: list[Path]) -> None:
    """Ray Train's snapshot (its schema in Ray 2.60) listing `folders`, with each checkpoint's row of
    metrics.jsonl as its metrics."""
    rows = {r["step"]: r for r in read_jsonl(out / METRICS_LOG) if isinstance(r.get("step"), int)}
    results = []
    for folder in folders:
        step = int(folder.name.rpartition("_")[2])
        results.append({"version": 0, "checkpoint_dir_name": folder.name,
                        "metrics": rows.get(step, {"step": step})})
    state = {"ray_version": ray.__version__, "checkpoint_results": results,
             "checkpoint_report_indices": list(range(len(results))), "latest_checkpoint_result": results[-1],
             "pending_training_results": [], "pending_validation_specs": [],
             "current_report_index": len(results), "validated_checkpoint_dir_names": [],
             "timed_out_validation_checkpoint_dir_names": [], "failed_validation_checkpoint_dir_names": []}
    atomic_write_text(out / TRAIN_NAME / SNAPSHOT_FILE, json.dumps(state, indent=2) + "\n")


def newest_checkpoint_step(out: Path) -> int | None:
    """The step of the newest checkpoint Ray's snapshot lists in run folder `out` (None: none)."""
    state = _read_snapshot(out / TRAIN_NAME / SNAPSHOT_FILE)
    steps = [int(n.rpartition("_")[2]) for n in _dir_names(state or {})
             if isinstance(n, str) and n.rpartition("_")[2].isdigit()]
    return max(steps, default=None)


def check_same_run(out: str | os.PathLike, experiment, finished: str) -> Path:
    """The absolute run folder a `--resume` of fine-tuning or SSL continues: it holds a run of this
    very experiment (only pre-training may extend itself) that has not written `finished` yet."""
    out = Path(out).absolute()
    path = out / EXPERIMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no run to resume ({EXPERIMENT_FILE} missing); start it without "
                                "--resume")
    if (out / finished).exists():
        raise FileExistsError(f"{out}: the run is finished ({finished} is there); nothing to resume")
    saved, want = flatten(json.loads(path.read_text())), flatten(experiment.to_dict())
    for key in sorted(saved.keys() | want.keys()):
        if saved.get(key) != want.get(key):
            raise ValueError(f"{key}: got {want.get(key)!r}, expected {saved.get(key)!r} as in the run being "
                             f"resumed ({path}); resume with the run's own settings, or start a new run")
    return out


def resume_checked(out: Path, world: int, command: str) -> int:
    """Before a `--resume` loads anything (the folder held): cut writes repaired (`repair_checkpoints`,
    one stderr line each), crafted files refused (`check_checkpoints`); returns the step of the
    newest checkpoint (0: none, the run starts from its beginning)."""
    for note in repair_checkpoints(out, world):
        print(f"{command}: {note}", file=sys.stderr)
    check_checkpoints(out)
    return newest_checkpoint_step(out) or 0


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
    state = _read_snapshot(path)
    if state is None:  # after `repair_checkpoints` only a file that appeared since can be unreadable
        raise ValueError(f"--resume: {path} is not Ray Train's checkpoint snapshot (not a JSON object); "
                         "start the run anew in another --out")
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
