"""A sweep in MLflow (`fdsl.platform.tracking`): a parent run, its trials nested under it.

    tracked_sweep(dir, ...)   the sweep's parent run (params: the sweep and its base experiment;
                              at the end the report, trials.csv and settings.json)
    TrialTracking()           a Tune callback in the sweep's driver: one nested run per trial
                              (params: the trial's axes and seeds; each reported evaluation's
                              figures at its epoch; at the end its trial.json figures, preview and
                              fine-tuning plots). Trials never talk to MLflow themselves: on a
                              cluster only the driver needs to reach the tracking server
    track_sweep(dir)          the same from a finished sweep folder (`fdsl track`)

Ray's own `MLflowLoggerCallback` logs every result key through MLflow's process-global fluent
API and raises when the server is down (ending the sweep); this callback logs fdsl's figures
through `tracking.Tracker`, whose first failure is one warning line.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from fdsl.platform import tracking
from fdsl.platform.train.plots import CONFUSION_PNG, CURVES_PNG
from fdsl.platform.train.run import METRICS_LOG
from fdsl.platform.tune.report import SETTINGS_FILE, SWEEP_FILE, TRIAL_FILE, TRIALS
from fdsl.schema import read_jsonl

REPORT_FILES = ("report.html", "report.md", "trials.csv", SETTINGS_FILE, SWEEP_FILE)


def _trial_tags(sweep_dir: Path) -> dict[str, str]:
    return {"fdsl.kind": "trial", "fdsl.sweep": sweep_dir.name}


def _open_trial(sweep_dir: Path, name: str, params: dict, *, skip_finished: bool = False):
    uri = tracking.active_uri()
    if uri is None:
        return None
    tracker = tracking.Tracker(uri, sweep_dir / TRIALS / name, "fdsl sweep")
    if tracker.open(name, _trial_tags(sweep_dir), reuse=True, skip_finished=skip_finished) is None:
        return None
    tracker.params(params)
    return tracker


def _end_trial(tracker: tracking.Tracker, trial_dir: Path, failed: bool) -> None:
    """The trial's final figures (trial.json), its preview and fine-tuning plots, then its status."""
    record = {}
    if (trial_dir / TRIAL_FILE).is_file():
        record = json.loads((trial_dir / TRIAL_FILE).read_text())
        tracker.metrics(record.get("metrics", {}), step=int(max(tracker.last_step, 0)))
        tracker.tags({"fdsl.trial_status": record.get("status", "unknown")})
    tracker.artifacts([trial_dir / TRIAL_FILE, trial_dir / "preview.png",
                       trial_dir / "finetune" / CURVES_PNG, trial_dir / "finetune" / CONFUSION_PNG])
    tracker.close("FAILED" if failed or record.get("status") == "error" else "FINISHED")


class TrialTracking(tune.Callback):
    """One nested MLflow run per trial, logged from the sweep's driver (see the module's docstring)."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir = Path(sweep_dir)
        self._runs: dict[str, tracking.Tracker | None] = {}

    def __getstate__(self):  # Tune saves its callbacks with its state: not the live clients
        return {**self.__dict__, "_runs": {}}

    def _tracker(self, trial):
        name = str(trial)
        if name not in self._runs:  # a restored sweep opens its trials' runs again, and continues them
            self._runs[name] = _open_trial(self.sweep_dir, name, trial.config.get("params", {}))
        return self._runs[name]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._tracker(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tracker = self._tracker(trial)
        if tracker is not None:
            figures = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS}
            tracker.rows([{"step": result.get("training_iteration"), **figures}])  # a fine-tuning row's step

    def _end(self, trial, failed: bool) -> None:
        tracker = self._tracker(trial)
        if tracker is not None:
            _end_trial(tracker, self.sweep_dir / TRIALS / str(trial), failed)
        self._runs.pop(str(trial), None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, failed=True)


@contextlib.contextmanager
def tracked_sweep(sweep_dir: Path, name: str, sweep: dict, base: dict, *, skip_finished: bool = False):
    """The sweep's parent run while the body runs (continued by a resumed sweep); the report's
    files are logged to it at the end."""
    with tracking.parent(name, sweep_dir, {"fdsl.kind": "sweep", "fdsl.sweep": name},
                         {"sweep": sweep, **base}, skip_finished=skip_finished) as tracker:
        yield tracker
        if tracker is not None:
            tracker.artifacts(sweep_dir / f for f in REPORT_FILES)


def track_sweep(sweep_dir: Path, name: str, sweep: dict, base: dict) -> tuple[str, int]:
    """Log a finished sweep folder: its parent run and a nested run per trial (trial.json); trials
    logged before are kept. Returns ("logged" / "kept": logged and finished before / "failed") and
    the count of trials logged."""
    if tracking.active_uri() is None:
        raise ValueError("tracking is off (FDSL_TRACKING=0): nothing to log to")
    logged = 0
    with tracked_sweep(sweep_dir, name, sweep, base, skip_finished=True) as parent:
        if parent is None or parent.failed:
            return ("kept" if parent is None else "failed"), 0
        for path in sorted((sweep_dir / TRIALS).glob(f"*/{TRIAL_FILE}")):
            record = json.loads(path.read_text())
            tracker = _open_trial(sweep_dir, path.parent.name, record.get("params", {}), skip_finished=True)
            if tracker is None:
                continue
            tracker.rows(read_jsonl(path.parent / "finetune" / METRICS_LOG))
            _end_trial(tracker, path.parent, failed=False)
            logged += not tracker.failed
        return ("failed" if parent.failed else "logged"), logged
