"""Ray Tune sweeps over data-set variety and fine-tuning settings.

    fdsl sweep debug-variety --out runs/sweeps/debug          # run (or finish, with --resume)
    fdsl report runs/sweeps/debug                              # re-write the report, no recompute

A trial = (generate or reuse its data set) -> pre-train -> fine-tune (with the sweep's `weights`:
fine-tune those only), reporting the fine-tune top-1 after every epoch (Ray Train V2's
TuneReportCallback), so ASHA can stop weak trials early.

Sweep folder:
    sweep.json               the sweep config (a resumed sweep must match it)
    datasets/<fingerprint>/  data sets, cached by the hash of what determines their bytes
    pretrains/<fingerprint>/ pre-training runs, cached by the hash of their data set, pretrain section
                             (seed included) and fdsl version: trials that differ only in fine-tuning
                             share one run
    scratch/<fingerprint>/   the seed design's scratch arm: one fine-tuning from scratch per
                             fine-tuning seed and setting, shared by every trial it pairs with
    trials/<trial>/          trial.json (params, metrics, curves), preview.png, finetune/
    tune/                    Ray Tune's experiment state (what `--resume` restores)
    tune-seal.json           sha256 of each file in tune/ that Tune may unpickle, signed (seal.py)
    report.md, report.html, trials.csv, plots/
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray.tune
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from fdsl.atomic import atomic_write_text, check_writable, owned_folder
from fdsl.config import apply_overrides
from fdsl.experiment import Experiment
from fdsl.generators import build_generator
from fdsl.platform import interrupt
from fdsl.platform.connect import connect
from fdsl.platform.console import tune_output
from fdsl.platform.data.targets import load_target
from fdsl.platform.train.finetune import finetune
from fdsl.platform.train.run import read_finetune_metrics, read_metrics
from fdsl.platform.train.weights import resolve_weights
from fdsl.platform.tune.cache import (
    CACHE_FILE,
    count_generations,
    count_pretrainings,
    ensure_dataset,
    ensure_pretrained,
    run_scratch_arm,
    write_record,
)
from fdsl.platform.tune.progress import SweepProgress, expected_trials
from fdsl.platform.tune.report import SWEEP_FILE, TRIAL_FILE, TRIALS, write_report
from fdsl.platform.tune.seal import SealCallback, check_seal
from fdsl.platform.tune.sweep_config import (
    PRETRAIN_SEED,
    WEIGHTS_AXIS,
    SweepConfig,
    seeded_weights,
    trial_overrides,
)
from fdsl.platform.tune.tracked import TrialTracking, tracked_sweep
from fdsl.preview import render_grid, save_grid
from fdsl.schema import load_json

TUNE_NAME = "tune"
COMPLETIONS = "completions.jsonl"
"""Journal of trials that ran to completion (one line each): a resumed sweep must not add twins."""
BASE_FILE = "base-experiment.json"
"""The experiment every trial starts from (the sweep's base preset with its fixed overrides)."""


# --- one trial --------------------------------------------------------------------------------------
def _preview(experiment, path: Path) -> None:
    gen = build_generator(experiment.generator, experiment.data)
    classes, instances, images = render_grid(gen, 4, 4)
    title = f"{experiment.generator} {gen.num_classes}x{gen.num_instances}"
    save_grid(path, classes, instances, images, title)


def _curves(pretrain_dir: Path | None, finetune_metrics: dict | None) -> dict[str, list]:
    curves = {}
    if pretrain_dir is not None:  # a fine-tuning sweep pre-trains nothing: no empty panel
        curves["pretrain_loss"] = [[r["step"], r["loss"]] for r in read_metrics(pretrain_dir) if "loss" in r]
    if finetune_metrics:
        curves["finetune_top1"] = [[e["epoch"], e["finetune_top1"]]
                                   for e in finetune_metrics.get("curve", [])]
    return curves


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: data set (cached) -> pre-train -> fine-tune; reports per fine-tune epoch."""
    sweep_dir = Path(config["sweep_dir"])
    params = config["params"]
    name = ray.tune.get_context().get_trial_name()
    trial_dir = sweep_dir / TRIALS / name
    trial_dir.mkdir(parents=True, exist_ok=True)
    attempts = 1
    if (trial_dir / TRIAL_FILE).is_file():
        done = json.loads((trial_dir / TRIAL_FILE).read_text())
        if done.get("status") == "done":  # finished before a crash that Tune's state did not see
            ray.tune.report({k: v for k, v in done["metrics"].items() if isinstance(v, (int, float))})
            return
        # an attempt of this trial that died (its node or the sweep's driver was lost, or it
        # raised): its partial fine-tuning is this trial's own, and it starts over (a torn cached
        # pre-training run is redone by the cache)
        attempts = int(done.get("attempts", 1)) + 1
        shutil.rmtree(trial_dir / "finetune", ignore_errors=True)
    base = Experiment.from_dict(json.loads((sweep_dir / BASE_FILE).read_text()))
    experiment = apply_overrides(base, trial_overrides(params, designed=bool(config.get("designed"))))
    record = {"trial": name, "status": "running", "params": params, "metrics": {}, "curves": {},
              "attempts": attempts}
    weights = seeded_weights(params.get(WEIGHTS_AXIS) or config.get("weights") or "", params)
    if weights:  # a fine-tuning sweep: these weights (the sweep's, or the trial's on a weights axis)
        record["weights"] = weights
    else:
        _preview(experiment, trial_dir / "preview.png")
        record["preview"] = "preview.png"
        data_dir, hit = ensure_dataset(experiment, sweep_dir)
        record["dataset"] = {"fingerprint": data_dir.name, "dir": str(data_dir), "cache_hit": hit}
        write_record(trial_dir, record)
        run_dir, hit = ensure_pretrained(experiment, data_dir, sweep_dir)
        record["pretrain"] = {"fingerprint": run_dir.name, "dir": str(run_dir), "cache_hit": hit}
        record["metrics"]["pretrain_loss"] = json.loads((run_dir / CACHE_FILE).read_text())["loss"]
        record["curves"] = _curves(run_dir, None)
        weights = str(run_dir / "model.safetensors")
    write_record(trial_dir, record)

    fine = finetune(experiment, weights, experiment.finetune.dataset, trial_dir / "finetune",
                    callbacks=[TuneReportCallback()])
    record["metrics"].update({k: v for k, v in fine.items() if isinstance(v, (int, float))})
    pretrain_dir = Path(record["pretrain"]["dir"]) if "pretrain" in record else None
    record["curves"] = _curves(pretrain_dir, read_finetune_metrics(trial_dir / "finetune"))
    record["status"] = "done"
    write_record(trial_dir, record)
    with open(sweep_dir / COMPLETIONS, "a") as journal:
        journal.write(json.dumps({"trial": name, "params": params, "time": time.time()}) + "\n")


# --- the sweep -------------------------------------------------------------------------------------
def _tune_space(sweep: SweepConfig) -> dict[str, Any]:
    makers = {"grid": tune.grid_search, "choice": tune.choice,
              "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
              "randint": lambda v: tune.randint(*v)}
    if sweep.search == "random":  # random search samples a grid's values instead of enumerating them
        makers["grid"] = tune.choice
    return {param: makers[kind](values) for param, spec in sweep.design_space().items()
            for kind, values in spec.items()}


def _tuner(sweep: SweepConfig, sweep_dir: Path, trainable, epochs: float):
    # max_t beyond the number of reports: a trial must end on its own, never be cut at its last
    # report while its trainer still holds CPUs (see RAY_NOTES on 2-CPU machines)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=int(epochs) + 1,
                               grace_period=sweep.grace_period, reduction_factor=2)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    if sweep.search == "optuna":
        search, limit = OptunaSearch(seed=sweep.seed), sweep.max_concurrent_trials  # Tune wraps it
    elif sweep.search == "random":
        # a generator instance ignores TuneConfig.max_concurrent_trials: it takes its own limit,
        # which its saved state keeps for a restore
        search = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials)
        limit = None
    else:  # grid: Tune builds the generator from TuneConfig, whose limit a restore keeps
        search, limit = None, sweep.max_concurrent_trials
    return tune.Tuner(
        trainable,
        param_space={"params": _tune_space(sweep), "sweep_dir": str(sweep_dir), "weights": sweep.weights,
                     "designed": sweep.designed},
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                                    search_alg=search, scheduler=scheduler, max_concurrent_trials=limit,
                                    # the next trial runs in the same process: torch, timm and fdsl
                                    # stay imported (~7 s a trial on 2 cores); every run seeds itself
                                    reuse_actors=True),
        # verbose=0: no status tables every 30 s and per trial (report.md has them); SweepProgress
        # prints trials done / running / pending instead; errors are still raised and logged
        run_config=tune.RunConfig(
            name=TUNE_NAME, storage_path=str(sweep_dir), verbose=0,
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            callbacks=[SweepProgress(expected_trials(sweep), sweep.metric, sweep.mode), SealCallback(),
                       TrialTracking(sweep_dir)]))


def _prepare(sweep: SweepConfig, name: str, sweep_dir: Path, resume: bool, base) -> None:
    saved = sweep_dir / SWEEP_FILE
    wanted = {"name": name, **sweep.to_dict()}
    if saved.is_file():
        have = load_json(saved, {}, "use a new --out folder (a damaged sweep.json cannot be resumed)")
        if have != wanted:
            raise ValueError(f"{sweep_dir}: holds sweep {have.get('name')!r} with another config; "
                             "use a new --out folder (a sweep is resumed only with its own config)")
        if not resume and (sweep_dir / TUNE_NAME).exists():
            raise ValueError(f"{sweep_dir}: a sweep already ran here; add --resume to finish it, or "
                             "`fdsl report` to re-write its report")
    elif resume:
        raise FileNotFoundError(f"{saved} not found: nothing to resume in {sweep_dir}")
    if resume:  # before Ray runs anything and before we write: Tune unpickles these, only ours may be there

        check_seal(sweep_dir / TUNE_NAME)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / BASE_FILE, json.dumps(base.to_dict(), indent=2) + "\n")
    atomic_write_text(saved, json.dumps(wanted, indent=2) + "\n")


def _finalise_records(sweep_dir: Path, results) -> None:
    """Mark trials whose trial.json still says 'running': stopped early by ASHA, or failed."""
    by_dir = {Path(r.path).name: r for r in results if r.path}
    for path in sorted((sweep_dir / TRIALS).glob(f"*/{TRIAL_FILE}")):
        record = json.loads(path.read_text())
        if record.get("status") != "running":
            continue
        # Tune's trial folder is "<trial name>_<index>_<params>_<time>"
        match = [r for d, r in by_dir.items() if d == record["trial"] or d.startswith(record["trial"] + "_")]
        result = match[0] if match else None
        record["status"] = "error" if result is None or result.error else "stopped"
        metrics = (result.metrics or {}) if result else {}
        for key in ("finetune_top1", "finetune_top5", "finetune_loss", "epoch"):
            if isinstance(metrics.get(key), (int, float)):
                record["metrics"][key] = metrics[key]
        write_record(path.parent, record)


def run_sweep(sweep: SweepConfig, name: str, out: str | os.PathLike, base, *, resume: bool = False,
              address: str | None = None) -> dict:
    """Run (or with `resume`, finish) a sweep into `out`, then write its report; returns a summary.

    `base` is the experiment every trial starts from (`fdsl.sweeps.check_sweep(sweep)` gives it).
    """
    sweep.validate()  # every parameter against the base experiment: nothing starts on a bad space
    sweep.check_space(base)
    if sweep.finetunes_only:  # trials run in their own folders: run folders named absolutely, checked now

        def absolute(w: str) -> str:
            return w if w == "scratch" or w.startswith("timm:") else str(Path(w).resolve())

        if sweep.weights:
            sweep.weights = absolute(sweep.weights)
        else:  # a weights axis
            kind, values = next(iter(sweep.space[WEIGHTS_AXIS].items()))
            sweep.space[WEIGHTS_AXIS] = {kind: [absolute(w) for w in values]}
            for claim in sweep.hypotheses:  # they name the axis' values as the space did
                for side in ("better", "worse"):
                    if WEIGHTS_AXIS in (claim.get(side) or {}):
                        claim[side] = {**claim[side], WEIGHTS_AXIS: absolute(claim[side][WEIGHTS_AXIS])}
        seeds = next(iter(sweep.design_space().get(PRETRAIN_SEED, {"grid": [0]}).values()))
        for w in sweep.weight_sources():  # every run each {seed} names
            for seed in seeds:
                resolve_weights(seeded_weights(w, {PRETRAIN_SEED: seed}), base.finetune, base.pretrain)
    if sweep.designed:  # every target a trial fine-tunes on must load before anything runs
        spec = sweep.design_space().get("finetune.dataset", {"grid": [base.finetune.dataset]})
        for target in next(iter(spec.values())):
            load_target(target)
    sweep_dir = check_writable(out).resolve()
    _prepare(sweep, name, sweep_dir, resume, base)
    with owned_folder(sweep_dir, "fdsl sweep"):  # one sweep process per folder, resumes included
        tune_path = sweep_dir / TUNE_NAME
        connect(address)  # a local Ray of its own unless --address or a Ray job says otherwise
        # a trial waits on its trainers' workers; a local-mode trainer (num_workers=0) trains in the trial
        local = base.finetune.local_mode or (not sweep.finetunes_only and base.pretrain.local_mode)
        resources = {"cpu": base.finetune.cpus_per_worker if local else 0.1}
        if sweep.trial_resource:
            resources[sweep.trial_resource] = 1
        trainable = tune.with_resources(run_trial, resources)
        with tracked_sweep(sweep_dir, name, sweep.to_dict(), base.to_dict()):  # MLflow: trials nested
            start = time.perf_counter()
            if sweep.designed:  # the scratch arm first: every trial's effect is paired with it
                run_scratch_arm(sweep, base, sweep_dir)
            if resume and tune.Tuner.can_restore(str(tune_path)):
                tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_errored=True)
            else:
                tuner = _tuner(sweep, sweep_dir, trainable, base.finetune.epochs)
            with tune_output(), interrupt.graceful(interrupt.tune_stop):
                results = tuner.fit()
            if interrupt.received() is not None:  # Tune stopped its trials and saved its state: not final
                raise interrupt.Interrupted(interrupt.received())
            _finalise_records(sweep_dir, results)
            paths = write_report(sweep_dir)
            best = None
            with contextlib.suppress(RuntimeError):
                best = results.get_best_result(metric=sweep.metric, mode=sweep.mode)
            made = {"generations": count_generations(sweep_dir),
                    "pretrainings": count_pretrainings(sweep_dir)}
            return {"sweep_dir": str(sweep_dir), "trials": len(results), "errors": results.num_errors,
                    "seconds": round(time.perf_counter() - start, 1), **made,
                    "metric": sweep.metric, "best_params": best.config["params"] if best else None,
                    "best_metric": (best.metrics or {}).get(sweep.metric) if best else None,
                    "settings": json.loads(paths["settings"].read_text()), "report": str(paths["html"])}


def describe_best(summary: dict) -> str:
    """One phrase for people: `best finetune_top1 0.170 with {...}`, or that no trial finished."""
    if summary.get("settings"):  # a seed was swept: the best mean, with its spread
        top = summary["settings"][0]
        return (f"best setting {top['params']}: {summary['metric']} {top['mean']:.3f} +- {top['std']:.3f} "
                f"over {top['n']} seeds")
    if summary["best_metric"] is None:
        return "no trial finished"
    return f"best {summary['metric']} {summary['best_metric']:.3f} with {summary['best_params']}"
