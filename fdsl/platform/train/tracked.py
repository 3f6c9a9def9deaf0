"""A training run in MLflow (`fdsl.platform.tracking`), from its run folder's own files.

    @tracked("pretrain")      on each trainer's driver function: once its first metrics row is
                              written, the run is opened (params: the flattened experiment, fdsl's
                              version and commit, the data set's fingerprint; tags: kind, preset,
                              family, seed, weights source) and fed the rows as the console sees
                              them; at the end the rest of metrics.jsonl, the final figures
                              (metrics.json, knn.json), the plots and experiment.json, then FINISHED
                              (KILLED on a stop, FAILED on an error). `--resume` continues its run.
    track_run(out, exp)       the same from a finished run folder (`fdsl track`): runs made before
                              tracking existed, or while the server was down

Nothing here decides whether to track (`tracking.active_uri`) or talks to MLflow directly.
"""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import threading
from pathlib import Path

from fdsl import __version__
from fdsl.platform import tracking
from fdsl.platform.data.manifest import fingerprint, identity
from fdsl.platform.train.config import EXPERIMENT_FILE
from fdsl.platform.train.evaluators import KNN_FILE
from fdsl.platform.train.plots import CONFUSION_PNG, CURVES_PNG
from fdsl.platform.train.run import METRICS_LOG, SUMMARY_FILE
from fdsl.platform.train.weights import WEIGHTS_FILE
from fdsl.schema import read_jsonl

SOURCES = {"pretrain": "data", "finetune": "weights"}
"""The argument of a trainer that names what it trained from (a tag of its run); fine-tuning and
SSL also tag their target set (`fdsl.target`)."""
FINAL_FILES = {"finetune": SUMMARY_FILE, "ssl": KNN_FILE}
"""The file of a finished run's final figures (pre-training's are its last metrics row)."""


@functools.cache
def fdsl_commit() -> str | None:
    """The git commit of fdsl's source, when it runs from a checkout (else None)."""
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def describe(kind: str, experiment, source: str | None) -> tuple[dict, dict]:
    """(params, tags) of a run of `kind`: the flattened experiment, fdsl's version and commit, and
    for a run on formula images the data set's fingerprint (as `fdsl generate` writes it)."""
    params = {**experiment.to_dict(), "fdsl.version": __version__, "fdsl.commit": fdsl_commit()}
    if kind == "pretrain":
        params["data.fingerprint"] = fingerprint(identity(experiment))
    section = getattr(experiment, kind)
    tags = {"fdsl.kind": kind, "fdsl.preset": experiment.name, "fdsl.family": experiment.generator,
            "fdsl.seed": str(section.seed)}
    if kind == "pretrain":
        tags["fdsl.data_seed"] = str(experiment.data.seed)
    else:  # the trainer has set its --dataset into the experiment by the time a run is logged
        tags["fdsl.target"] = section.dataset
    if source is not None:
        tags[f"fdsl.{SOURCES[kind]}"] = str(source)
    return params, {k: v for k, v in tags.items() if v is not None}


def finish(tracker: tracking.Tracker, out: Path, kind: str) -> None:
    """Log what the run folder holds beyond the rows already logged, then mark the run FINISHED."""
    tracker.rows(read_jsonl(out / METRICS_LOG))
    final = out / FINAL_FILES[kind] if kind in FINAL_FILES else None
    if final is not None and final.is_file():
        figures = json.loads(final.read_text())
        figures.pop("curve", None)  # the rows have it, step by step
        figures.pop("confusion", None)
        tracker.metrics(figures, step=int(max(tracker.last_step, 0)))
    names = (EXPERIMENT_FILE, CURVES_PNG, CONFUSION_PNG, SUMMARY_FILE, KNN_FILE)
    tracker.artifacts(out / name for name in names)
    tracker.tags({"fdsl.model": str(out / WEIGHTS_FILE)})
    tracker.close()


def tracked(kind: str):
    """Decorator of a trainer's driver function `(experiment, ..., out, ..., resume=...)`: its run
    is logged to MLflow when tracking is on (see the module's docstring)."""
    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            uri = tracking.active_uri()
            if uri is None:
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            given = bound.arguments
            out = Path(given["out"]).absolute()
            tracker, lock = tracking.Tracker(uri, out, f"fdsl {kind}"), threading.Lock()

            def opened() -> bool:  # at the first row: a run that fails its checks is never logged
                with lock:
                    if tracker.run_id is None and not tracker.failed:
                        params, tags = describe(kind, given["experiment"], given.get(SOURCES.get(kind, "")))
                        tracker.open(out.name, tags, reuse=bool(given.get("resume")))
                        tracker.params(params)
                return tracker.run_id is not None

            def feed(rows: list[dict]) -> None:
                if opened():
                    tracker.rows(rows)

            try:
                with tracking.following(out, feed):
                    result = fn(*args, **kwargs)
            except BaseException as err:
                if tracker.run_id is not None:
                    tracker.rows(read_jsonl(out / METRICS_LOG))
                    tracker.close(tracking.end_status(err))
                raise
            if opened():
                finish(tracker, out, kind)
            return result

        return run

    return wrap


def run_kind(out: Path) -> str:
    """The trainer that made the finished run folder `out`; ValueError when it is none of them."""
    if not (out / EXPERIMENT_FILE).is_file() or not (out / WEIGHTS_FILE).is_file():
        raise ValueError(f"{out}: not a finished fdsl run folder (it needs {EXPERIMENT_FILE} and "
                         f"{WEIGHTS_FILE}); a stopped run is finished with --resume first")
    for kind, name in FINAL_FILES.items():
        if (out / name).is_file():
            return kind
    return "pretrain"


def track_run(out: Path, experiment, kind: str) -> tuple[str, str | None]:
    """Log the finished run folder `out` (made by `kind` from `experiment`, its experiment.json) to
    the active store; returns ("logged", run id), ("kept", None): logged and finished before,
    nothing done, or ("failed", None): the store failed (one warning said so)."""
    uri = tracking.active_uri()
    if uri is None:
        raise ValueError("tracking is off (FDSL_TRACKING=0): nothing to log to")
    source = None
    if kind == "finetune":
        source = json.loads((out / SUMMARY_FILE).read_text()).get("weights")
    params, tags = describe(kind, experiment, source)
    tracker = tracking.Tracker(uri, out, "fdsl track")
    if tracker.open(out.name, tags, reuse=True, skip_finished=True) is None:
        return ("failed", None) if tracker.failed else ("kept", None)
    tracker.params(params)
    finish(tracker, out, kind)
    return ("failed", None) if tracker.failed else ("logged", tracker.run_id)
