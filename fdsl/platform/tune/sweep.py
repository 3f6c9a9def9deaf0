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
import copy
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from fdsl.atomic import atomic_write_text, check_writable
from fdsl.platform.console import tune_output
from fdsl.platform.tune.report import SWEEP_FILE, TRIAL_FILE, TRIALS, write_report
from fdsl.platform.tune.sweep_config import WEIGHTS_AXIS, SweepConfig, trial_overrides

DATASETS = "datasets"
PRETRAINS = "pretrains"
SCRATCH = "scratch"
TUNE_NAME = "tune"
GENERATIONS = "generations.jsonl"
"""Journal of data sets this sweep generated (one line each): tests count cache hits with it."""
PRETRAININGS = "pretrainings.jsonl"
"""Journal of pre-training runs this sweep made (one line each): cache misses."""
CACHE_FILE = "cache.json"
"""Written last into a cached pre-training run: the sha256 of its weights (a torn run has none)."""
COMPLETIONS = "completions.jsonl"
BASE_FILE = "base-experiment.json"
"""The experiment every trial starts from (the sweep's base preset with its fixed overrides)."""
"""Journal of trials that ran to completion (one line each): a resumed sweep must not add twins."""


# --- the data-set cache ---------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive file lock: trials that need the same data set wait for one generation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_dataset(experiment, sweep_dir: Path) -> tuple[Path, bool]:
    """(folder, cache_hit) of the experiment's data set under `sweep_dir/datasets`.

    Keyed by the fingerprint of what determines the bytes (generator, version, config, layout);
    a hit is verified against its manifest (sizes and sha256 of every shard) and re-rendered where
    it does not match.
    """
    from fdsl.platform.data.manifest import fingerprint, identity, verify_dataset
    from fdsl.platform.data.synthesis import generate

    key = fingerprint(identity(experiment))
    folder = sweep_dir / DATASETS / key
    with _locked(sweep_dir / DATASETS / f".{key}.lock"):
        if (folder / "manifest.json").is_file() and verify_dataset(folder).ok:
            return folder, True
        generate(experiment, folder, log=lambda *_: None)
        with open(sweep_dir / GENERATIONS, "a") as journal:
            journal.write(json.dumps({"fingerprint": key, "time": time.time()}) + "\n")
    return folder, False


def count_generations(sweep_dir: str | os.PathLike) -> int:
    """How many data sets the sweep has generated (cache misses)."""
    path = Path(sweep_dir) / GENERATIONS
    return len(path.read_text().splitlines()) if path.is_file() else 0


def count_pretrainings(sweep_dir: str | os.PathLike) -> int:
    """How many pre-training runs the sweep has made (cache misses)."""
    path = Path(sweep_dir) / PRETRAININGS
    return len(path.read_text().splitlines()) if path.is_file() else 0


def ensure_pretrained(experiment, data_dir: Path, sweep_dir: Path) -> tuple[Path, bool]:
    """(run folder, cache_hit) of the pre-training of `experiment` on the data set `data_dir`.

    Keyed like the data sets: the hash of the data set's fingerprint, the pretrain section (its seed
    included) and the fdsl version. A hit is verified (cache.json's sha256 of the weights); a run
    that is torn or damaged is redone. Trials that need the same run wait on its lock.
    """
    from fdsl import __version__
    from fdsl.platform.data.manifest import fingerprint
    from fdsl.platform.data.shards import file_sha256
    from fdsl.platform.train.pretrain import pretrain

    key = fingerprint({"dataset": data_dir.name, "pretrain": experiment.pretrain.to_dict(),
                       "fdsl": __version__})
    folder = sweep_dir / PRETRAINS / key
    with _locked(sweep_dir / PRETRAINS / f".{key}.lock"):
        done = folder / CACHE_FILE
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(done.read_text())["model_sha256"] == file_sha256(folder / "model.safetensors"):
                return folder, True
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
    from fdsl.config import apply_overrides

    return apply_overrides(copy.deepcopy(base), trial_overrides(
        {k: v for k, v in params.items() if k.startswith("finetune.")}))


def run_scratch_arm(sweep: SweepConfig, base, sweep_dir: Path) -> list[dict]:
    """The seed design's scratch arm: one fine-tuning from scratch per fine-tuning seed and setting
    (every combination of the space's finetune.* values), each run once and kept in scratch/."""
    import itertools

    from fdsl.platform.data.manifest import fingerprint
    from fdsl.platform.train.finetune import finetune

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
        _write_record(folder, record)
        records.append(record)
    return records


# --- one trial --------------------------------------------------------------------------------------
def _preview(experiment, path: Path) -> None:
    from fdsl.generators import build_generator
    from fdsl.preview import render_grid, save_grid

    gen = build_generator(experiment.generator, experiment.data)
    classes, instances, images = render_grid(gen, 4, 4)
    title = f"{experiment.generator} {gen.num_classes}x{gen.num_instances}"
    save_grid(path, classes, instances, images, title)


def _write_record(trial_dir: Path, record: dict) -> None:
    atomic_write_text(trial_dir / TRIAL_FILE, json.dumps(record, indent=1) + "\n")


def _curves(pretrain_dir: Path | None, finetune_metrics: dict | None) -> dict[str, list]:
    from fdsl.platform.train.run import read_metrics

    curves = {}
    if pretrain_dir is not None:  # a fine-tuning sweep pre-trains nothing: no empty panel
        curves["pretrain_loss"] = [[r["step"], r["loss"]] for r in read_metrics(pretrain_dir) if "loss" in r]
    if finetune_metrics:
        curves["finetune_top1"] = [[e["epoch"], e["finetune_top1"]]
                                   for e in finetune_metrics.get("curve", [])]
    return curves


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: data set (cached) -> pre-train -> fine-tune; reports per fine-tune epoch."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from fdsl.config import apply_overrides
    from fdsl.experiment import Experiment
    from fdsl.platform.train.finetune import finetune, read_finetune_metrics

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
    weights = params.get(WEIGHTS_AXIS) or config.get("weights") or ""
    if weights:  # a fine-tuning sweep: these weights (the sweep's, or the trial's on a weights axis)
        record["weights"] = weights
    else:
        _preview(experiment, trial_dir / "preview.png")
        record["preview"] = "preview.png"
        data_dir, hit = ensure_dataset(experiment, sweep_dir)
        record["dataset"] = {"fingerprint": data_dir.name, "dir": str(data_dir), "cache_hit": hit}
        _write_record(trial_dir, record)
        run_dir, hit = ensure_pretrained(experiment, data_dir, sweep_dir)
        record["pretrain"] = {"fingerprint": run_dir.name, "dir": str(run_dir), "cache_hit": hit}
        record["metrics"]["pretrain_loss"] = json.loads((run_dir / CACHE_FILE).read_text())["loss"]
        record["curves"] = _curves(run_dir, None)
        weights = str(run_dir / "model.safetensors")
    _write_record(trial_dir, record)

    fine = finetune(experiment, weights, experiment.finetune.dataset, trial_dir / "finetune",
                    callbacks=[TuneReportCallback()])
    record["metrics"].update({k: v for k, v in fine.items() if isinstance(v, (int, float))})
    pretrain_dir = Path(record["pretrain"]["dir"]) if "pretrain" in record else None
    record["curves"] = _curves(pretrain_dir, read_finetune_metrics(trial_dir / "finetune"))
    record["status"] = "done"
    _write_record(trial_dir, record)
    with open(sweep_dir / COMPLETIONS, "a") as journal:
        journal.write(json.dumps({"trial": name, "params": params, "time": time.time()}) + "\n")


# --- the sweep -------------------------------------------------------------------------------------
def _tune_space(sweep: SweepConfig) -> dict[str, Any]:
    from ray import tune

    makers = {"grid": tune.grid_search, "choice": tune.choice,
              "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
              "randint": lambda v: tune.randint(*v)}
    if sweep.search == "random":  # random search samples a grid's values instead of enumerating them
        makers["grid"] = tune.choice
    return {param: makers[kind](values) for param, spec in sweep.design_space().items()
            for kind, values in spec.items()}


def _tuner(sweep: SweepConfig, sweep_dir: Path, trainable, epochs: float):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from fdsl.platform.tune.progress import SweepProgress, expected_trials
    from fdsl.platform.tune.seal import SealCallback

    # max_t beyond the number of reports: a trial must end on its own, never be cut at its last
    # report while its trainer still holds CPUs (see RAY_NOTES on 2-CPU machines)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=int(epochs) + 1,
                               grace_period=sweep.grace_period, reduction_factor=2)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    if sweep.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

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
            callbacks=[SweepProgress(expected_trials(sweep), sweep.metric, sweep.mode), SealCallback()]))


def _prepare(sweep: SweepConfig, name: str, sweep_dir: Path, resume: bool, base) -> None:
    saved = sweep_dir / SWEEP_FILE
    wanted = {"name": name, **sweep.to_dict()}
    if saved.is_file():
        have = json.loads(saved.read_text())
        if have != wanted:
            raise ValueError(f"{sweep_dir}: holds sweep {have.get('name')!r} with another config; "
                             "use a new --out folder (a sweep is resumed only with its own config)")
        if not resume and (sweep_dir / TUNE_NAME).exists():
            raise ValueError(f"{sweep_dir}: a sweep already ran here; add --resume to finish it, or "
                             "`fdsl report` to re-write its report")
    elif resume:
        raise FileNotFoundError(f"{saved} not found: nothing to resume in {sweep_dir}")
    if resume:  # before Ray starts and before we write: Tune unpickles these files, only ours may be there
        from fdsl.platform.tune.seal import check_seal

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
        _write_record(path.parent, record)


def run_sweep(sweep: SweepConfig, name: str, out: str | os.PathLike, base, *, resume: bool = False,
              address: str | None = None) -> dict:
    """Run (or with `resume`, finish) a sweep into `out`, then write its report; returns a summary.

    `base` is the experiment every trial starts from (`fdsl.sweeps.check_sweep(sweep)` gives it).
    """
    from ray import tune

    from fdsl.platform.connect import connect

    sweep.validate()  # every parameter against the base experiment: nothing starts on a bad space
    sweep.check_space(base)
    if sweep.finetunes_only:  # trials run in their own folders: run folders named absolutely, checked now
        from fdsl.platform.train.weights import resolve_weights

        def absolute(w: str) -> str:
            return w if w == "scratch" or w.startswith("timm:") else str(Path(w).resolve())

        if sweep.weights:
            sweep.weights = absolute(sweep.weights)
            resolve_weights(sweep.weights, base.finetune, base.pretrain)
        else:  # a weights axis
            kind, values = next(iter(sweep.space[WEIGHTS_AXIS].items()))
            sweep.space[WEIGHTS_AXIS] = {kind: [absolute(w) for w in values]}
            for w in sweep.space[WEIGHTS_AXIS][kind]:
                resolve_weights(w, base.finetune, base.pretrain)
    if sweep.designed:  # every target a trial fine-tunes on must load before anything runs
        from fdsl.platform.data.targets import load_target

        spec = sweep.design_space().get("finetune.dataset", {"grid": [base.finetune.dataset]})
        for target in next(iter(spec.values())):
            load_target(target)
    sweep_dir = check_writable(out).resolve()
    _prepare(sweep, name, sweep_dir, resume, base)
    tune_path = sweep_dir / TUNE_NAME
    connect(address)  # a local Ray of its own unless --address or a Ray job says otherwise
    # a trial waits on its trainers' workers; a local-mode trainer (num_workers=0) trains in the trial
    local = base.finetune.local_mode or (not sweep.finetunes_only and base.pretrain.local_mode)
    resources = {"cpu": base.finetune.cpus_per_worker if local else 0.1}
    if sweep.trial_resource:
        resources[sweep.trial_resource] = 1
    trainable = tune.with_resources(run_trial, resources)
    start = time.perf_counter()
    if sweep.designed:  # the scratch arm first: every trial's effect is paired with it
        run_scratch_arm(sweep, base, sweep_dir)
    if resume and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(str(tune_path), trainable=trainable, resume_errored=True)
    else:
        tuner = _tuner(sweep, sweep_dir, trainable, base.finetune.epochs)
    with tune_output():
        results = tuner.fit()
    _finalise_records(sweep_dir, results)
    paths = write_report(sweep_dir)
    best = None
    with contextlib.suppress(RuntimeError):
        best = results.get_best_result(metric=sweep.metric, mode=sweep.mode)
    return {"sweep_dir": str(sweep_dir), "trials": len(results), "errors": results.num_errors,
            "seconds": round(time.perf_counter() - start, 1), "generations": count_generations(sweep_dir),
            "pretrainings": count_pretrainings(sweep_dir),
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
