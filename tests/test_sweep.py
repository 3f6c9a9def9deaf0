"""Sweeps: bad spaces fail before any trial; a real ASHA sweep on local Ray, killed and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from fdsl.platform.tune.cache import count_generations
from fdsl.platform.tune.report import collect_trials
from fdsl.platform.tune.sweep import COMPLETIONS, describe_best
from fdsl.sweeps import SweepConfig, check_sweep, get_sweep, sweep_names


def test_shipped_sweeps_validate():
    assert {"debug-variety", "fractaldb-variety", "visualatom-variety", "finetune-grid"} <= set(sweep_names())
    for name in sweep_names():
        check_sweep(get_sweep(name))


@pytest.mark.parametrize("space,search,message", [
    ({"data.no_such_field": {"grid": [1]}}, "grid", r"space\.data\.no_such_field: unknown parameter"),
    ({"finetune.lr": {"grid": []}}, "grid", r"space\.finetune\.lr: empty grid"),
    ({"finetune.lr": {"loguniform": [0.1, 0.01]}}, "random", r"space\.finetune\.lr: empty range"),
    ({"data.num_classes": {"grid": [4, 0]}}, "grid",
     r"space\.data\.num_classes: value 0 is rejected: data\.num_classes: got 0"),
    ({"data.fill_rate": {"grid": [0.95]}}, "grid", r"space\.data\.fill_rate: value 0\.95 is rejected"),
    ({"finetune.lr": {"uniform": [0.001, 0.01]}}, "grid", r"needs search=random or optuna"),
])
def test_bad_spaces_fail_before_any_trial(space, search, message):
    with pytest.raises(ValueError, match=message):
        check_sweep(SweepConfig(base="debug-finetune", space=space, search=search))


def test_bad_sweep_at_the_cli_exits_2(tmp_path):
    from conftest import run_fdsl

    res = run_fdsl("sweep", "no-such-sweep", "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "sweep: got 'no-such-sweep'" in res.stderr
    res = run_fdsl("sweep", "debug-variety", "--out", str(tmp_path / "s"), "--set", "num_samples=0")
    assert res.returncode == 2 and "num_samples: got 0" in res.stderr
    res = run_fdsl("sweep", "debug-variety", "--out", str(tmp_path / "s"), "--set", "metric=nosuch")
    assert res.returncode == 2 and "metric: got 'nosuch', expected one of ['finetune_top1'" in res.stderr
    assert not (tmp_path / "s").exists()  # nothing started


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fdsl.cli", "sweep", "debug-variety", "--out", str(out), *extra]


def _done_trials(out: Path) -> int:
    path = out / COMPLETIONS
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_summary_line_rounds_the_best_metric():
    summary = {"metric": "finetune_top1", "best_metric": 0.16991643454038996, "best_params": {"lr": 0.003}}
    assert describe_best(summary) == "best finetune_top1 0.170 with {'lr': 0.003}"
    assert describe_best({**summary, "best_metric": None}) == "no trial finished"


@pytest.mark.slow
@pytest.mark.drill  # a kill-and-resume drill: make test-drills (docs/reliability.md)
@pytest.mark.timeout(2400)  # 4 trials of pre-training + fine-tuning on 2 CPUs, run twice in part
def test_asha_sweep_killed_and_resumed(tmp_path):
    """debug-variety: 4 trials (2 data sets x 2 fine-tune lr), ASHA, on the 2 CPUs of this machine.

    The first run is killed (the whole process group: driver, Ray and trials) once a trial has
    finished; `--resume` finishes the rest. No trial runs twice to completion, each data set is
    generated once (the other trial with its parameters is a cache hit), and the report covers
    every trial.
    """
    out = tmp_path / "sweep"
    env = {**os.environ, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"}
    first = subprocess.Popen(_sweep_cmd(out), cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and _done_trials(out) < 1:
        time.sleep(2)
    if first.poll() is None:
        os.killpg(first.pid, signal.SIGKILL)
    log = first.communicate(timeout=60)[0]
    assert _done_trials(out) >= 1, log[-4000:]
    done_before = _done_trials(out)

    resumed = subprocess.run(_sweep_cmd(out, "--resume"), cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    shown = (resumed.stdout + resumed.stderr).splitlines()  # the console: progress, summary, logs
    assert any(line.startswith("sweep: trial 4/4 (100%)") for line in shown), shown
    assert shown[-1].startswith(f"logs: {out / 'logs'}/") and len(shown) <= 20, shown
    assert not [line for line in shown if "(run_trial" in line or "Configuration for experiment" in line]

    completions = [json.loads(line)["trial"] for line in (out / COMPLETIONS).read_text().splitlines()]
    assert len(completions) == len(set(completions)), f"a trial ran twice to completion: {completions}"
    assert len(completions) >= done_before
    trials = collect_trials(out)
    assert len(trials) == 4
    assert {t["status"] for t in trials} <= {"done", "stopped"}
    assert {(t["params"]["data.num_classes"], t["params"]["finetune.lr"]) for t in trials} == {
        (4, 0.001), (4, 0.003), (8, 0.001), (8, 0.003)}
    fingerprints = {t["dataset"]["fingerprint"] for t in trials}
    assert len(fingerprints) == 2
    assert sum(t["dataset"]["cache_hit"] for t in trials) >= 1
    # one generation per data set (a generation the kill interrupted is finished under the same key)
    assert 2 <= count_generations(out) <= 3
    finished = [t for t in trials if t["status"] == "done"]
    assert finished and all(0.0 <= t["metrics"]["finetune_top1"] <= 1.0 for t in finished)
    csv_rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 4
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 + 4
    # re-writing the report of a finished sweep is quick and recomputes nothing
    start = time.perf_counter()
    again = subprocess.run([sys.executable, "-m", "fdsl.cli", "report", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "report.html" in again.stdout
    assert time.perf_counter() - start < 60
    assert _done_trials(out) == len(completions)


@pytest.mark.slow
def test_dataset_cache_hit_is_counted_once(ray_local, tmp_path):
    """Two experiments with the same data parameters share one generation; the hit is verified."""
    from fdsl.platform.tune.cache import ensure_dataset
    from fdsl.presets import get_preset

    a = get_preset("debug-finetune", ["data.num_classes=4", "data.num_instances=4", "finetune.lr=0.001"])
    b = get_preset("debug-finetune", ["data.num_classes=4", "data.num_instances=4", "finetune.lr=0.01"])
    first, hit_a = ensure_dataset(a, tmp_path)
    second, hit_b = ensure_dataset(b, tmp_path)
    assert (hit_a, hit_b) == (False, True) and first == second
    assert count_generations(tmp_path) == 1
    shard = sorted(first.glob("shard-*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])  # a corrupt cache entry is repaired, not trusted
    third, hit_c = ensure_dataset(a, tmp_path)
    assert third == first and hit_c is False and count_generations(tmp_path) == 2


@pytest.mark.slow
def test_finetuning_sweep_ranks_settings_over_seeds_in_local_mode(ray_local, tmp_path):
    """weights=scratch: trials only fine-tune (no data set, no pre-training), in Ray Train's local mode
    inside each Tune trial, whose loop reports every evaluation to Tune itself; the summary ranks the
    two lr settings by their mean over the two seeds."""
    from fdsl.platform.tune.sweep import run_sweep

    sweep = SweepConfig(base="debug-finetune", weights="scratch",
                        overrides=["finetune.num_workers=0", "finetune.epochs=2",
                                   "finetune.samples_per_class=5", "finetune.loader_probe_images=0",
                                   "finetune.augment_cpus=0.5"],
                        space={"finetune.lr": {"grid": [1e-3, 3e-3]}, "finetune.seed": {"grid": [0, 1]}})
    summary = run_sweep(sweep, "seeds", tmp_path / "s", check_sweep(sweep))
    assert (summary["trials"], summary["errors"], summary["generations"]) == (4, 0, 0)
    assert summary["best_metric"] is not None  # Tune saw the metric: the local loop reported it
    reports = [len(p.read_text().splitlines()) for p in (tmp_path / "s" / "tune").glob("*/result.json")]
    assert reports == [2, 2, 2, 2]  # one per evaluation (2 epochs)
    trials = collect_trials(tmp_path / "s")
    assert all(t["status"] == "done" and t["weights"] == "scratch" and "dataset" not in t for t in trials)
    settings = summary["settings"]
    assert sorted(s["params"]["finetune.lr"] for s in settings) == [1e-3, 3e-3]
    assert all(s["n"] == 2 for s in settings) and settings[0]["mean"] >= settings[1]["mean"]
    assert describe_best(summary).startswith("best setting {'finetune.lr'")
    _resume_refuses_what_the_sweep_did_not_write(sweep, tmp_path / "s", tmp_path / "ran")


def _resume_refuses_what_the_sweep_did_not_write(sweep, out: Path, marker: Path) -> None:
    """`--resume` lets Tune unpickle only files whose sha256 the sweep recorded and signed: its own
    state resumes (nothing re-runs); a crafted tuner.pkl, a planted pickle, an edited experiment
    state or a re-signed seal are refused before Tune reads anything, and run nothing."""
    import pickle

    from fdsl.platform.tune.seal import SEAL_FILE, check_seal
    from fdsl.platform.tune.sweep import run_sweep

    tune_dir = out / "tune"
    assert check_seal(tune_dir) >= 3  # tuner.pkl, the experiment state, the searcher's state
    again = run_sweep(sweep, "seeds", out, check_sweep(sweep), resume=True)
    assert (again["trials"], again["errors"]) == (4, 0)
    assert len((out / COMPLETIONS).read_text().splitlines()) == 4  # nothing ran twice

    class Crafted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    def refused(match: str) -> None:
        with pytest.raises(ValueError, match=match):
            run_sweep(sweep, "seeds", out, check_sweep(sweep), resume=True)
        assert not marker.exists()

    tuner = tune_dir / "tuner.pkl"
    original = tuner.read_bytes()
    tuner.write_bytes(pickle.dumps(Crafted()))
    refused(r"tuner\.pkl is not a file this sweep wrote")
    tuner.write_bytes(original)
    (tune_dir / "searcher-state-x.pkl").write_bytes(pickle.dumps(Crafted()))
    refused(r"searcher-state-x\.pkl is not a file this sweep wrote")
    (tune_dir / "searcher-state-x.pkl").unlink()
    state = sorted(tune_dir.glob("experiment_state-*.json"))[-1]
    state.write_text(state.read_text() + " ")  # still valid JSON, another sha256
    refused(r"experiment_state-.*\.json is not a file this sweep wrote")
    seal = json.loads((out / SEAL_FILE).read_text())  # whoever edits files can edit the seal, not sign it
    seal["files"][state.name].append(hashlib.sha256(state.read_bytes()).hexdigest())
    (out / SEAL_FILE).write_text(json.dumps(seal))
    refused("tune-seal.json is missing, damaged or signed by another key")


def test_a_finetuning_sweep_takes_finetune_fields_only():
    sweep = SweepConfig(base="debug-finetune", weights="scratch", space={"data.num_classes": {"grid": [4]}})
    with pytest.raises(ValueError, match=r"space\.data\.num_classes: a sweep with weights='scratch' only"):
        check_sweep(sweep)
