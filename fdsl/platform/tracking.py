"""Where fdsl's runs are logged: MLflow, on by default, in a local SQLite store beside the runs.

    configure(uri, enabled)   the command's choice (--tracking-uri, --no-tracking); else
                              MLFLOW_TRACKING_URI, else sqlite:///<cwd>/runs/mlflow.db (no server)
    active_uri()              the store this process logs to, or None: tracking off (--no-tracking,
                              FDSL_TRACKING=0) or this process a Ray actor (a Tune trial: the sweep's
                              driver logs its trials, so only the driver ever talks to MLflow)
    Tracker(uri, out)         one MLflow run; every call guarded: the first failure (a server down
                              or gone mid-run, a locked database) prints one warning line and turns
                              the tracker off; the run goes on, and its folder, the source of truth,
                              can be logged later with `fdsl track`
    parent(name, out, ...)    runs started inside are nested under this one (a sweep's trials, the
                              quickstart's runs)
    live_rows(out)            the metrics rows a running trainer's console follower sees, logged as
                              they come (`fdsl.platform.train.run.fit`)

MLflow's client (`MlflowClient`, one per run, an explicit run id) is used rather than its fluent
API: nothing process-global, so a notebook's own MLflow runs and fdsl's do not mix. Runs are found
again by their tag `fdsl.run_dir`: a resumed run and `fdsl track` continue the run they logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fdsl.platform.interrupt import Interrupted
from fdsl.schema import flatten

OFF_ENV = "FDSL_TRACKING"
"""Set to 0 / off / false / no: no tracking (the test suite sets it; tracking tests turn it on)."""
DEFAULT_STORE = Path("runs") / "mlflow.db"
"""The default store, relative to the working directory (as MLflow's own ./mlruns is)."""
DEFAULT_EXPERIMENT = "fdsl"
"""The MLflow experiment fdsl logs to unless MLFLOW_EXPERIMENT_NAME names another."""
RUN_DIR_TAG = "fdsl.run_dir"
"""The run folder a run was logged from: how a resumed run or `fdsl track` finds its run."""
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's tag for a nested run (the UI shows it under its parent)."""
TIMEOUT_S = "10"
"""Seconds an HTTP call to a tracking server may take (MLFLOW_HTTP_REQUEST_TIMEOUT unless set);
with no retries: a server that is down costs one warning, not minutes of back-off."""

_settings: dict = {"uri": None, "enabled": True}
_parents: list[str] = []
_live: dict[Path, Callable[[list[dict]], None]] = {}


def configure(uri: str | None = None, *, enabled: bool = True) -> None:
    """This process's tracking: `uri` (None: MLFLOW_TRACKING_URI or the default store), or off."""
    _settings.update(uri=uri, enabled=enabled)


def default_uri() -> str:
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE).absolute()}"


def chosen_uri() -> str:
    """The store configured for this process (whether or not tracking is on)."""
    return _settings["uri"] or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def active_uri() -> str | None:
    """The store this process logs to, or None (see the module's docstring)."""
    if not _settings["enabled"] or os.environ.get(OFF_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    if "ray" in sys.modules:  # a Tune trial (an actor): its sweep's driver logs it
        import ray

        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            return None
    return chosen_uri()


def numbers(d: dict) -> dict[str, float]:
    """The numeric leaves of a (nested) dict as dotted keys: what MLflow takes as metrics."""
    return {k: float(v) for k, v in flatten(d).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v}


class Tracker:
    """One MLflow run of the run folder `out` (see the module's docstring)."""

    def __init__(self, uri: str, out: str | os.PathLike, what: str):
        self.uri, self.out, self.what = uri, Path(out).absolute(), what
        self.run_id: str | None = None
        self.failed = False
        self.last_step: float = float("-inf")
        self.row_keys: set[str] = set()
        """Metrics logged step by step: a run's final figures do not log them once more."""
        self._lock = threading.Lock()
        self._client = None

    def _call(self, fn, *args, **kwargs):
        """`fn(client, ...)` unless a call failed before; a failure: one warning line, then off."""
        with self._lock:
            if self.failed:
                return None
            try:
                if self._client is None:
                    self._client = _client(self.uri)
                return fn(self._client, *args, **kwargs)
            except Exception as err:  # any failure of the store: the run goes on without it
                self.failed = True
                reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
                print(f"fdsl: warning: MLflow tracking at {self.uri} stopped ({reason}); the run goes on, "
                      f"its folder keeps everything: log it later with `fdsl track {self.out}`",
                      file=sys.stderr, flush=True)
                return None

    def open(self, name: str, tags: dict[str, str], *, reuse: bool,
             skip_finished: bool = False) -> str | None:
        """Start a new run, or with `reuse` continue the newest run logged from this folder unless
        it finished (then a new one; with `skip_finished` none: None, nothing to log)."""
        def start(client):
            experiment = _experiment_id(client, self.uri)
            found = client.search_runs([experiment], _tag_filter(RUN_DIR_TAG, str(self.out)), max_results=1,
                                       order_by=["attributes.start_time DESC"]) if reuse else []
            if found and found[0].info.status == "FINISHED" and skip_finished:
                return None
            if found and found[0].info.status != "FINISHED":
                run = found[0]
                client.update_run(run.info.run_id, status="RUNNING")
                key = next(iter(run.data.metrics), None)
                self.row_keys.update(run.data.metrics)
                if key is not None:
                    self.last_step = max(m.step for m in client.get_metric_history(run.info.run_id, key))
                return run.info.run_id
            all_tags = {**tags, RUN_DIR_TAG: str(self.out)}
            if _parents:
                all_tags[PARENT_TAG] = _parents[-1]
            return client.create_run(experiment, tags=all_tags, run_name=name).info.run_id

        self.run_id = self._call(start)
        return self.run_id

    def params(self, params: dict) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        def log(client):
            have = client.get_run(self.run_id).data.params  # a continued run keeps its params
            items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH])
                     for k, v in flatten(params).items() if k not in have]
            for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

        if self.run_id:
            self._call(log)

    def tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            self._call(lambda c: [c.set_tag(self.run_id, k, str(v)) for k, v in tags.items()])

    def rows(self, rows: Iterable[dict]) -> None:
        """Rows of metrics.jsonl (one per step or evaluation): each numeric value at the row's
        `step` (else `epoch`); rows at or before the last step logged are skipped (a restarted
        worker group rewrites its file, a resumed run keeps the rows before its checkpoint)."""
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        metrics, now, last = [], int(time.time() * 1000), self.last_step
        for row in rows:
            step = row.get("step", row.get("epoch"))
            if not isinstance(step, int | float) or step <= last:
                continue
            last = step
            stamp = int(row["time"] * 1000) if isinstance(row.get("time"), int | float) else now
            metrics += [Metric(k, v, stamp, int(step)) for k, v in numbers(row).items()
                        if k not in ("time", "step")]
        if not metrics or not self.run_id:
            return

        def log(client):
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                client.log_batch(self.run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
            self.last_step = last
            self.row_keys.update(m.key for m in metrics)

        self._call(log)

    def metrics(self, values: dict, step: int = 0) -> None:
        """The numeric leaves of `values` at `step` (a run's final figures), but those its rows
        logged already."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(step)) for k, v in numbers(values).items() if k not in self.row_keys]
        if metrics and self.run_id:
            self._call(lambda c: c.log_batch(self.run_id, metrics=metrics))

    def artifacts(self, paths: Iterable[Path]) -> None:
        if self.run_id:
            for path in paths:
                if path.is_file():
                    self._call(lambda c, p=path: c.log_artifact(self.run_id, str(p)))

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._call(lambda c: c.set_terminated(self.run_id, status))


def _client(uri: str):
    """An MlflowClient for `uri`: an HTTP server without retries and with a short timeout (unless
    the environment sets them), a SQLite file's folder created, MLflow's and alembic's INFO quiet."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", TIMEOUT_S)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" lines
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from mlflow.tracking import MlflowClient

    for name in ("alembic", "mlflow"):  # after the import: MLflow sets its logger's level then
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, uri: str) -> str:
    """The experiment runs go to (MLFLOW_EXPERIMENT_NAME or "fdsl"), created if new; a SQLite
    store keeps its artifacts beside its database (mlartifacts/), not in the working directory."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").absolute().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _tag_filter(tag: str, value: str) -> str:
    return f"tags.`{tag}` = '{value.replace(chr(39), chr(92) + chr(39))}'"


@contextlib.contextmanager
def parent(name: str, out: str | os.PathLike, tags: dict[str, str], params: dict | None = None, *,
           skip_finished: bool = False):
    """A parent run for the runs started inside (nested in the UI), continuing an unfinished one of
    `out`; yields its Tracker, or None when tracking is off (or, with `skip_finished`, when `out`'s
    run finished before). Ended FINISHED, or KILLED / FAILED when the body raises."""
    uri = active_uri()
    tracker = Tracker(uri, out, name) if uri else None
    if tracker is not None and tracker.open(Path(out).name, tags, reuse=True, skip_finished=skip_finished) \
            is None and not tracker.failed:
        tracker = None  # finished before: skipped
    if tracker is None or tracker.run_id is None:  # off, skipped, or the store failed (one warning)
        yield tracker
        return
    tracker.params(params or {})
    _parents.append(tracker.run_id)
    try:
        yield tracker
    except BaseException as err:
        tracker.close(end_status(err))
        raise
    finally:
        _parents.remove(tracker.run_id)
    tracker.close()


def end_status(err: BaseException) -> str:
    """MLflow's status of a run that ended with `err`: KILLED for a stop (Ctrl-C, SIGTERM)."""
    return "KILLED" if isinstance(err, Interrupted | KeyboardInterrupt) else "FAILED"


@contextlib.contextmanager
def following(out: Path, feed: Callable[[list[dict]], None]):
    """While the body runs, `live_rows(out)` is `feed`."""
    _live[out.absolute()] = feed
    try:
        yield
    finally:
        _live.pop(out.absolute(), None)


def live_rows(out: Path) -> Callable[[list[dict]], None] | None:
    """What a trainer's metrics follower gives its new rows to, or None (the run is not tracked)."""
    return _live.get(Path(out).absolute())
