"""The run skeleton the three trainers share: driver steps before and after Ray Train, worker start.

Driver (in order, each trainer calls them):
    refuse_used_folder(out, resume)   a run folder holds one run: experiment.json or train/ mark it
    connect_checked(cfg, section)     join or start Ray; a local Ray must be able to hold the run
    write_experiment(out, exp)        experiment.json: the full config of the run (what resume reads)
    fit(train_func, loop, cfg, out)   TorchTrainer with FailureConfig and checkpoints, then fit()
                                      (num_workers=0: Ray Train's local mode, the loop in this process);
                                      the console follows metrics.jsonl (`progress`: a bar or lines)
Worker (inside `train_func`):
    start_worker(cfg)                 rank, world size, device, threads, the same seed on every rank
    report(metrics, config)           ray.train.report (and Tune's, for a local-mode loop in a trial)
    MetricsLog(out, rank, from_step)  metrics.jsonl (one row per step or evaluation) + events.jsonl

Run folder files, the same names in every trainer:
    experiment.json  metrics.jsonl  events.jsonl  train/ (Ray Train)  model.safetensors + config.json
    metrics.json     (fine-tuning's final summary)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import ray.tune
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from fdsl.atomic import atomic_write_text, check_writable, owned_folder
from fdsl.platform.connect import connect, local_num_cpus, release, starts_local
from fdsl.platform.console import Progress, follow_metrics
from fdsl.platform.interrupt import Interrupted
from fdsl.platform.tracking import live_rows
from fdsl.platform.train.config import EXPERIMENT_FILE
from fdsl.platform.train.memory import check_fits, estimate_bytes
from fdsl.platform.train.plans import PLAN, Memory
from fdsl.platform.train.sections import WorkersSection
from fdsl.platform.train.weights import WEIGHTS_FILE
from fdsl.schema import read_jsonl

REPORT_TO_TUNE = "report_to_tune"
"""Set by `fit` in a local-mode run's loop config: whether the loop reports to Tune itself."""
METRICS_LOG = "metrics.jsonl"
"""One JSON row per optimizer step (pre-training, SSL) or per evaluation (fine-tuning)."""
EVENTS_FILE = "events.jsonl"
"""start / resume / checkpoint / done, with steps and world sizes."""
SUMMARY_FILE = "metrics.json"
"""Fine-tuning's final metrics (top-1, curve, baselines, confusion matrix)."""
CONFUSION_FILE = "confusion.npy"
"""Fine-tuning's confusion matrix of the last evaluation (rows: true class)."""
TRAIN_NAME = "train"
"""Name of the Ray Train run inside the run folder."""


# --- driver -------------------------------------------------------------------------------------
def has_run(out: Path) -> bool:
    """Whether `out` holds a run, of any trainer: one of the files a run writes is there."""
    return any((out / name).exists() for name in (EXPERIMENT_FILE, TRAIN_NAME, SUMMARY_FILE, WEIGHTS_FILE))


def refuse_used_folder(out: str | os.PathLike, *, resumable: bool = False) -> Path:
    """The absolute run folder, or FileExistsError when it holds a run already."""
    out = check_writable(out)
    if has_run(out):
        hint = "choose another --out"
        if resumable:
            hint = "pass --resume to continue it, or " + hint
        raise FileExistsError(f"{out} holds a run already: {hint}")
    return out


@contextlib.contextmanager
def owned_run(out: str | os.PathLike, command: str, *, resume: bool = False, resumable: bool = False):
    """The run folder held by this command for its lifetime (`fdsl.atomic.owned_folder`): a second
    command on it is refused at once, naming the holder. Checked again once held (unless resuming):
    a twin that finished between our first check and our lock left a run there."""
    with owned_folder(out, command):
        if not resume:
            refuse_used_folder(out, resumable=resumable)
        yield Path(out)


def connect_checked(cfg: WorkersSection, section: str, address: str | None = None,
                    memory: Memory | None = None) -> None:
    """Join or start Ray (`fdsl.platform.connect.connect`); a local Ray started here must hold the run.

    `memory` ({"shape": model shape, "views": image sizes per sample}): before a local Ray starts,
    the run's estimated memory (`fdsl.platform.train.memory`) and its CPUs must fit this machine.

    Only a local Ray this call starts is checked: it never grows, so a run it cannot hold would wait
    for resources forever. A cluster joined by address or as a Ray job may autoscale (its GPU pool
    can sit at 0 nodes until the trainers ask), and a Ray already running in this process belongs to
    the caller (a test, a Tune trial): those are not refused. ValueError naming `section` when the
    local Ray is too small.
    """
    if not starts_local(address):
        connect(address)
        return
    if memory:
        _check_memory(cfg, section, memory)
    have, need_cpu = local_num_cpus(), cfg.cpus_needed()
    if have < need_cpu:  # refused before the command runs anything on its local Ray
        raise ValueError(f"{section}.num_workers: {cfg.num_workers} workers x {cfg.cpus_per_worker} CPUs + "
                         f"{cfg.augment_cpus} for augmentation need {need_cpu:g} CPUs, this machine's "
                         f"local Ray has {have:g}; lower num_workers, cpus_per_worker or "
                         "augment_cpus, or pass --address of a larger cluster")
    connect(address)
    have = ray.cluster_resources()
    if cfg.use_gpu and have.get("GPU", 0) < cfg.num_workers:
        raise ValueError(f"{section}.use_gpu: {cfg.num_workers} GPU workers requested, this machine's local "
                         f"Ray has {have.get('GPU', 0):g} GPUs; set use_gpu=false or fewer num_workers, or "
                         "pass --address of a cluster with GPUs")


def _check_memory(cfg: WorkersSection, section: str, memory: Memory) -> None:
    shape, views = memory.shape, memory.views
    processes = max(cfg.num_workers, 1)
    need = estimate_bytes(shape, cfg.micro_batch_size, views, processes, memory.stream_rows)
    crops = f"{len(views)} views of {'/'.join(str(v) for v in sorted(set(views), reverse=True))} px" \
        if len(views) > 1 else f"{views[0]} px"
    model = f"a {shape['params'] / 1e6:.1f}M-parameter ViT, depth {shape['depth']}"
    check_fits(section, need, f"{processes} x micro batch {cfg.micro_batch_size} of {model}, at {crops}",
               f"lower {section}.global_batch_size, {section}.img_size or {section}.num_workers, or pair the "
               "data preset with a section sized for a laptop (the laptop-* or debug-* presets)")


def write_experiment(out: Path, experiment) -> None:
    """Create the run folder and write experiment.json into it."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EXPERIMENT_FILE, json.dumps(experiment.to_dict(), indent=2) + "\n")


def fit(train_func, plan, cfg: WorkersSection, out: Path, datasets: dict, *,
        split: Sequence[str] = ("train",), preserve_order: bool = True, keep_checkpoints: int | None = None,
        callbacks: Sequence[Any] = (),
        progress: tuple[str, int, Callable[[dict], tuple[int, str]]] | None = None):
    """Run `train_func` on a TorchTrainer of `cfg`'s workers into `out/train`; returns Ray's Result.

    Every worker gets `{"plan": plan}` (a frozen dataclass of `plans`, sent as it is).

    Worker groups restart up to `cfg.max_failures` times (from the latest checkpoint, if the trainer
    reports any); `split` datasets are split over the workers, in order with `preserve_order` (the
    rows are seeded: their order makes a one-worker run reproducible); `callbacks` go to the
    RunConfig (e.g. Tune's `TuneReportCallback()`); `progress` = (name, total steps, describe): the
    console shows the newest row of metrics.jsonl, `describe(row) -> (step, text)` (console.Progress).
    """
    loop_config: dict[str, Any] = {PLAN: plan}
    if cfg.local_mode:  # Ray Train runs no controller, so no RunConfig callback: the loop reports to Tune
        loop_config[REPORT_TO_TUNE] = _local_tune_callbacks(callbacks)
        callbacks = ()
        # local mode logs "Running in local mode" and every report at INFO: metrics.jsonl has them
        logging.getLogger("ray.train.v2").setLevel(logging.WARNING)
        for ds in datasets.values():  # the loop iterates them itself: DataConfig's options do not apply
            ds.context.execution_options.preserve_order = preserve_order
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = preserve_order
    trainer = TorchTrainer(
        train_func, train_loop_config=loop_config,
        dataset_config=DataConfig(datasets_to_split=list(split), execution_options=ingest),
        scaling_config=cfg.scaling_config(),
        run_config=RunConfig(name=TRAIN_NAME, storage_path=str(out), callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints)),
        datasets=datasets)
    try:
        if progress is None:
            return _fit(trainer, cfg.local_mode)
        name, total, describe = progress
        with follow_metrics(out / METRICS_LOG, Progress(name, total), describe, on_rows=live_rows(out)):
            return _fit(trainer, cfg.local_mode)
    except BaseException:
        set_aside_failed_run(out)
        raise


def _fit(trainer: TorchTrainer, local_mode: bool):
    """`trainer.fit()`; a worker group's from a thread of its own, so that Ray Train installs no
    SIGINT handler of its own (it does in the main thread, and then exits 0 on Ctrl-C) and the
    command's (`fdsl.platform.interrupt`) stays. On `Interrupted` (or a notebook's
    KeyboardInterrupt), this command's Ray connection ends (the controller and workers it owns
    stop) before anything in the run folder is touched. A local-mode loop runs here, in this
    thread: the signal reaches it directly."""
    if local_mode:
        return trainer.fit()
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = trainer.fit()
        except BaseException as err:  # handed to the calling thread
            box["error"] = err

    thread = threading.Thread(target=target, name="fdsl-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except (Interrupted, KeyboardInterrupt):  # KeyboardInterrupt: a notebook's stop, outside the CLI
        release()  # the workers stop writing into the run folder
        thread.join(30.0)
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _local_tune_callbacks(callbacks: Sequence[Any]) -> bool:
    """Whether a local-mode run forwards its reports to Tune: callbacks may only be Tune's
    TuneReportCallback there (TypeError otherwise: the run would silently skip them)."""
    if not callbacks:
        return False  # no Tune import on the path of every local-mode run

    others = [type(c).__name__ for c in callbacks if not isinstance(c, TuneReportCallback)]
    if others:
        raise TypeError(f"callbacks {others}: a local-mode run (num_workers=0) runs no Ray Train controller "
                        "to call them; only TuneReportCallback is supported there")
    return True


def report(metrics: dict, config: dict, **kwargs) -> None:
    """`ray.train.report` from the training loop of a worker group. A local-mode loop (`fit` set
    config[REPORT_TO_TUNE]) reports to Tune directly when it runs in a Tune trial with a
    TuneReportCallback, as that callback does for workers, and else to nobody: Ray Train keeps
    only its last report there (fdsl reads its metrics files), and refuses `ray.train.report`
    inside a Tune trial."""
    if REPORT_TO_TUNE not in config:
        ray.train.report(metrics, **kwargs)
    elif config[REPORT_TO_TUNE]:
        ray.tune.report(metrics)


def can_resume(out: Path) -> bool:
    """Whether `--resume` continues run folder `out`: it holds a run (experiment.json) and a
    checkpoint folder, listed in Ray's snapshot or not yet (a stop between a checkpoint's write and
    the snapshot that lists it: the resume's `checkpoints.repair_checkpoints` keeps it when it is complete,
    else the run starts from step 0)."""
    return (out / EXPERIMENT_FILE).is_file() and any((out / TRAIN_NAME).glob("checkpoint_*"))


def set_aside_failed_run(out: Path) -> Path | None:
    """After a failed fit: unless the run left a checkpoint to resume from (`can_resume`), move what
    it wrote into `out/failed-<time>/` (kept for a look) so that the corrected command can use `out`
    again; returns that folder (None when the run stays in place for `--resume`)."""
    if can_resume(out):
        return None
    names = [n for n in (EXPERIMENT_FILE, TRAIN_NAME, METRICS_LOG, EVENTS_FILE, SUMMARY_FILE, WEIGHTS_FILE)
             if (out / n).exists()]
    if not names:
        return None
    aside = out / time.strftime("failed-%Y%m%d-%H%M%S")
    aside.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(out / name, aside / name)
    return aside


# --- worker -------------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start_worker(cfg: WorkersSection) -> tuple[int, int, Any]:
    """Inside a Train worker: (rank, world size, torch device); applies threads_per_worker, makes the
    GPU current with use_gpu, and seeds every rank alike (the same initial model everywhere)."""
    if cfg.threads_per_worker:
        torch.set_num_threads(cfg.threads_per_worker)
    seed_all(cfg.seed)
    if cfg.local_mode:  # the calling process, on its CPU (ray.train.get_context is refused in Tune)
        return 0, 1, torch.device("cpu")
    device = ray.train.torch.get_device()
    if cfg.use_gpu:
        torch.cuda.set_device(device)
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), device


def epoch_due(step: int, total: int, batch: int, num_images: int, every: int = 1) -> int | None:
    """The epoch (passes over `num_images`) completed by `step` when a report is due, else None.

    Due after every `every`-th completed epoch, and at the last step always; a step of more images
    than the set may complete several epochs at once.
    """
    epoch, before = step * batch // num_images, (step - 1) * batch // num_images
    if step == total or epoch // every > before // every:
        return epoch
    return None


class MetricsLog:
    """metrics.jsonl and events.jsonl of a run folder, written by rank 0 only.

    A restarted worker group continuing from step `from_step` drops the rows after it, so the log
    stays one row per step (`from_step=0`: the log starts anew)."""

    def __init__(self, run_dir: str | None, rank: int, from_step: int = 0):
        self.dir = Path(run_dir) if run_dir and rank == 0 else None
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / METRICS_LOG
        if path.exists():  # a torn last line (the crash that restarts us) is dropped with a warning
            kept = [row for row in read_jsonl(path)
                    if isinstance(row.get("step"), int) and row["step"] <= from_step]
            atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))

    def metrics(self, row: dict) -> None:
        if self.dir is not None:
            with open(self.dir / METRICS_LOG, "a") as f:
                f.write(json.dumps(row) + "\n")

    def event(self, name: str, **fields) -> None:
        if self.dir is not None:
            with open(self.dir / EVENTS_FILE, "a") as f:
                f.write(json.dumps({"event": name, "time": round(time.time(), 3), **fields}) + "\n")


def step_text(row: dict) -> tuple[int, str]:
    """The console's progress for a step row of metrics.jsonl (pre-training, SSL)."""
    return row["step"], f"loss {row['loss']:.3f}, lr {row['lr']:.2g}, {row['images_per_s']:.0f} images/s"


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's metrics.jsonl (any trainer); a torn line is skipped with a warning."""
    return read_jsonl(Path(run_dir) / METRICS_LOG)


def eval_text(row: dict) -> tuple[int, str]:
    """The console's progress of an evaluation row of metrics.jsonl."""
    return row["step"], (f"epoch {row['epoch']}, val top-1 {row['finetune_top1']:.3f}, "
                         f"train loss {row['train_loss']:.3f}")


def read_finetune_metrics(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a finished fine-tuning run."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {SUMMARY_FILE} (the fine-tuning run did not finish)")
    return json.loads(path.read_text())


def write_finetune_summary(out: Path, curve: list[dict], last_eval: dict, extra: dict, **fields) -> None:
    """metrics.json (and confusion.npy) of a finished fine-tuning run, from rank 0: the last
    evaluation's figures, the best top-1, `fields`, the throughput of the last row with the
    driver's loader-alone probe (`extra["throughput_probe"]`), the curve, the confusion matrix (up to
    100 classes) and the rest of `extra` (weights, head, baselines)."""
    np.save(out / CONFUSION_FILE, last_eval["confusion"])
    final, extra = curve[-1], dict(extra)
    tp = {k: final[k] for k in ("train_images_per_s", "images_per_s", "data_wait_fraction", "data_startup_s")}
    tp.update(extra.pop("throughput_probe", {}))
    if tp.get("loader_images_per_s"):
        tp["loader_to_train_ratio"] = round(tp["loader_images_per_s"] / max(tp["train_images_per_s"], 1e-9),
                                            2)
    metrics = {"finetune_top1": final["finetune_top1"], "finetune_top5": final["finetune_top5"],
               "finetune_loss": final["finetune_loss"], "best_top1": max(r["finetune_top1"] for r in curve),
               **fields, "throughput": tp, "curve": curve}
    if len(last_eval["confusion"]) <= 100:
        metrics["confusion"] = last_eval["confusion"].tolist()
    atomic_write_text(out / SUMMARY_FILE, json.dumps(metrics | extra, indent=2) + "\n")


def finetune_summary(metrics: dict, out: Path) -> dict:
    """What `finetune` returns: the figures of metrics.json a caller (a sweep trial, the quickstart)
    keeps, with the baselines also as flat numbers (a trial record keeps the numeric ones)."""
    keys = ("finetune_top1", "finetune_top5", "finetune_loss", "best_top1", "epochs", "num_train", "head",
            "throughput", "wall_seconds", "baselines")
    base = metrics.get("baselines", {})
    return {"run_dir": str(out), "model": str(out / WEIGHTS_FILE),
            **{k: metrics[k] for k in keys if k in metrics},
            **{f"baseline_{k}": base[k] for k in ("logreg_top1", "knn1_top1") if k in base}}
