"""What trials share in a sweep folder: data sets, pre-training runs and the scratch arm, each made once.

    datasets/<fingerprint>/   keyed by the hash of what determines the data set's bytes
    pretrains/<fingerprint>/  keyed by the hash of the data set, the pretrain section (seed included)
                              and the fdsl version; `cache.json`, written last, holds the weights' sha256
    scratch/<fingerprint>/    one fine-tuning from scratch per fine-tuning seed and setting

A trial that needs one waits on its file lock; a hit is verified and a torn or damaged entry redone.
The journals (`generations.jsonl`, `pretrainings.jsonl`) count cache misses.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fdsl import __version__
from fdsl.atomic import atomic_write_text, waiting_lock
from fdsl.config import apply_overrides
from fdsl.platform.data.manifest import fingerprint, identity, verify_dataset
from fdsl.platform.data.shards import file_sha256
from fdsl.platform.data.synthesis import generate
from fdsl.platform.train.finetune import finetune
from fdsl.platform.train.pretrain import pretrain
from fdsl.platform.train.run import can_resume
from fdsl.platform.tune.report import TRIAL_FILE
from fdsl.platform.tune.sweep_config import SweepConfig, trial_overrides
from fdsl.schema import read_jsonl

DATASETS = "datasets"
PRETRAINS = "pretrains"
SCRATCH = "scratch"
GENERATIONS = "generations.jsonl"
"""Journal of data sets this sweep generated (one line each): tests count cache hits with it."""
PRETRAININGS = "pretrainings.jsonl"
"""Journal of pre-training runs this sweep made (one line each): cache misses."""
CACHE_FILE = "cache.json"
"""Written last into a cached pre-training run: the sha256 of its weights (a torn run has none)."""


CACHE_WAIT_S = 3 * 24 * 3600.0
"""How long a trial waits on another trial's generation or pre-training of the same cache entry
before it fails naming the holder: a bound for a lock left stale (a node lost while it held the lock
on a network file system), set far above any run's length, not a limit on the run."""


def ensure_dataset(experiment, sweep_dir: Path, wait_s: float = CACHE_WAIT_S) -> tuple[Path, bool]:
    """(folder, cache_hit) of the experiment's data set under `sweep_dir/datasets`.

    Keyed by the fingerprint of what determines the bytes (generator, version, config, layout);
    a hit is verified against its manifest (sizes and sha256 of every shard) and re-rendered where
    it does not match.
    """
    key = fingerprint(identity(experiment))
    folder = sweep_dir / DATASETS / key
    with waiting_lock(sweep_dir / DATASETS / f".{key}.lock", "a sweep trial's data set", wait_s):
        if (folder / "manifest.json").is_file() and verify_dataset(folder).ok:
            return folder, True
        generate(experiment, folder, log=lambda *_: None)
        with open(sweep_dir / GENERATIONS, "a") as journal:
            journal.write(json.dumps({"fingerprint": key, "time": time.time()}) + "\n")
    return folder, False


def count_generations(sweep_dir: str | os.PathLike) -> int:
    """How many data sets the sweep has generated (cache misses)."""
    path = Path(sweep_dir) / GENERATIONS
    return len(read_jsonl(path))


def count_pretrainings(sweep_dir: str | os.PathLike) -> int:
    """How many pre-training runs the sweep has made (cache misses)."""
    path = Path(sweep_dir) / PRETRAININGS
    return len(read_jsonl(path))


def ensure_pretrained(experiment, data_dir: Path, sweep_dir: Path,
                      wait_s: float = CACHE_WAIT_S) -> tuple[Path, bool]:
    """(run folder, cache_hit) of the pre-training of `experiment` on the data set `data_dir`.

    Keyed like the data sets: the hash of the data set's fingerprint, the pretrain section (its seed
    included) and the fdsl version. A hit is verified (cache.json's sha256 of the weights); a run
    that is torn or damaged is redone. Trials that need the same run wait on its lock.
    """
    key = fingerprint({"dataset": data_dir.name, "pretrain": experiment.pretrain.to_dict(),
                       "fdsl": __version__})
    folder = sweep_dir / PRETRAINS / key
    with waiting_lock(sweep_dir / PRETRAINS / f".{key}.lock", "a sweep trial's pre-training", wait_s):
        done = folder / CACHE_FILE
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(done.read_text())["model_sha256"] == file_sha256(folder / "model.safetensors"):
                return folder, True
        # a run an interrupted sweep left behind continues from its newest checkpoint (one without a
        # checkpoint, or a damaged one, is redone)
        resume = can_resume(folder)
        try:
            if not resume:
                shutil.rmtree(folder, ignore_errors=True)
            result = pretrain(experiment, str(data_dir), folder, resume=resume)
        except ValueError:
            if not resume:
                raise
            shutil.rmtree(folder, ignore_errors=True)
            result = pretrain(experiment, str(data_dir), folder)
        atomic_write_text(done, json.dumps({"model_sha256": file_sha256(folder / "model.safetensors"),
                                            "dataset": data_dir.name, "loss": result["loss"],
                                            "steps": result["steps"], "fdsl": __version__}) + "\n")
        with open(sweep_dir / PRETRAININGS, "a") as journal:
            journal.write(json.dumps({"fingerprint": key, "time": time.time()}) + "\n")
    return folder, False


def scratch_experiment(base, params: dict[str, Any]):
    """The experiment of the scratch run that pairs with a trial: the base with its finetune.* values."""
    return apply_overrides(copy.deepcopy(base), trial_overrides(
        {k: v for k, v in params.items() if k.startswith("finetune.")}))


def run_scratch_arm(sweep: SweepConfig, base, sweep_dir: Path) -> list[dict]:
    """The seed design's scratch arm: one fine-tuning from scratch per fine-tuning seed and setting
    (every combination of the space's finetune.* values), each run once and kept in scratch/."""
    space = sweep.design_space()
    axes = [p for p in space if p.startswith("finetune.")]
    grids = [next(iter(space[p].values())) for p in axes]
    records = []
    for values in itertools.product(*grids):
        params = dict(zip(axes, values, strict=True))
        experiment = scratch_experiment(base, params)
        key = fingerprint({"finetune": experiment.finetune.to_dict(),
                           "pretrain": experiment.pretrain.to_dict()})
        folder = sweep_dir / SCRATCH / key
        record_path = folder / TRIAL_FILE
        if record_path.is_file():
            records.append(json.loads(record_path.read_text()))
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        fine = finetune(experiment, "scratch", experiment.finetune.dataset, folder / "finetune")
        record = {"trial": f"scratch-{key[:8]}", "status": "done", "params": params, "weights": "scratch",
                  "metrics": {k: v for k, v in fine.items() if isinstance(v, (int, float))}}
        write_record(folder, record)
        records.append(record)
    return records


def write_record(trial_dir: Path, record: dict) -> None:
    """A trial's (or scratch run's) trial.json, written whole."""
    atomic_write_text(trial_dir / TRIAL_FILE, json.dumps(record, indent=1) + "\n")
