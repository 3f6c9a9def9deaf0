"""What a command shows on the console, and where everything else goes.

The console (stdout) carries a command's progress and its summary; everything else is kept in the
command's output folder, under `logs/`, and the last line of the command says where:

    logs/fdsl.log   this process's log at INFO and above: fdsl's warnings, Ray's driver side (start-up,
                    Ray Data's plans, Ray Train's and Tune's driver messages), Python warnings
    logs/ray/<session>/
                    the session logs of the local Ray the command started: every worker's and actor's
                    stdout and stderr (Ray Train's workers, DeepSpeed, the Tune trials), raylet, GCS,
                    dashboard. A cluster joined by address keeps its own logs on its nodes (`ray logs`).

To get there Ray streams no worker output to the driver (`ray.init(log_to_driver=False)`), Ray's own
console handlers show WARNING and above only, and progress comes from the driver: `Progress` (a tqdm
bar on a terminal, a plain line every `every_s` seconds otherwise), fed by `follow_metrics` from the
run's metrics.jsonl, which rank 0 writes. `--verbose` or FDSL_VERBOSE=1 turns all of it off: Ray's
full output, as Ray prints it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

VERBOSE_ENV = "FDSL_VERBOSE"
LOGS = "logs"
"""The folder of a command's logs inside its output folder."""
DRIVER_LOG = "fdsl.log"
EVERY_S = 10.0
"""A plain progress line at most this often (not on a terminal); the quickstart sets it higher."""
_NOTICES = ("Progress bars disabled", "Token authentication is enabled", "Started a local Ray instance",
            "Stop signal received", "Experiment has been interrupted")
"""Ray's notices about choices fdsl made itself, and Tune's own lines about a stop that fdsl's one
line after Ctrl-C says (with fdsl's command to continue): in the log, not on the console."""


def verbose() -> bool:
    """Whether the user asked for Ray's full console output (`--verbose` or FDSL_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --- the command's log -------------------------------------------------------------------------
class CommandLog:
    """The log of one command: records go to a temporary file while it runs; `close` moves them into
    OUT/logs/fdsl.log (appended: a resumed run keeps the first run's log) and copies the session logs
    of the local Ray the command started, once the command got as far as Ray. A command that failed
    before (bad input) leaves no trace in OUT."""

    def __init__(self, out: str | os.PathLike | None, title: str):
        self.out = Path(out).absolute() if out else None
        self.title = title
        self.ray_logs: Path | None = None  # set by `ray_started`: a local Ray's session logs
        self.used_ray = False
        fd, name = tempfile.mkstemp(prefix="fdsl-", suffix=".log")
        os.close(fd)
        self.tmp = Path(name)
        self.handler = logging.FileHandler(self.tmp)
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    @property
    def folder(self) -> Path | None:
        """OUT/logs, where this command's logs land (None without an output folder)."""
        return self.out / LOGS if self.out else None

    def close(self) -> Path | None:
        """Move the log into OUT/logs (when the command used Ray and OUT exists); the folder or None."""
        for logger in _loggers():
            with contextlib.suppress(ValueError):
                logger.removeHandler(self.handler)
        self.handler.close()
        try:
            if not (self.used_ray and self.folder and self.out.is_dir()):
                return None
            self.folder.mkdir(exist_ok=True)
            with open(self.folder / DRIVER_LOG, "a") as log:
                log.write(f"=== {self.title} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
                log.write(self.tmp.read_text(errors="replace"))
            if self.ray_logs and self.ray_logs.is_dir():
                shutil.copytree(self.ray_logs, self.folder / "ray" / self.ray_logs.parent.name,
                                ignore_dangling_symlinks=True, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.sock", "sockets"))
            return self.folder
        except (OSError, shutil.Error) as err:  # a full disk here never changes the command's status
            print(f"fdsl: warning: the command's logs were not all copied into {self.folder} ({err}); "
                  f"Ray's own copy stays in {self.ray_logs or 'its session folder'}", file=sys.stderr)
            return self.folder if self.folder.is_dir() else None
        finally:
            self.tmp.unlink(missing_ok=True)


_current: CommandLog | None = None


@contextlib.contextmanager
def command_log(out: str | os.PathLike | None, title: str):
    """The CommandLog of the command that runs inside; it is closed (moved into OUT/logs) at the end."""
    global _current
    log = CommandLog(out, title)
    previous, _current = _current, log
    root = logging.getLogger()
    level, added = root.level, []
    if not verbose():
        console = logging.StreamHandler(sys.stderr)  # what Python's last resort would print
        console.setLevel(logging.WARNING)
        added = [log.handler, console]
        for handler in added:
            root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        logging.captureWarnings(True)  # warnings: shown once (on the console handler) and in the log
    try:
        yield log
    finally:
        _current = previous
        for handler in added:
            root.removeHandler(handler)
        root.setLevel(level)
        if added:
            logging.captureWarnings(False)
        log.close()


def current_log() -> CommandLog | None:
    """The log of the running command (None outside the CLI, e.g. in a test calling the API)."""
    return _current


# --- Ray's side --------------------------------------------------------------------------------
def before_ray_init() -> dict:
    """Called by `connect` before `ray.init`: Ray's console handlers at WARNING (its records also go
    to the command's log); returns the keyword arguments of ray.init that keep workers' output
    off the console."""
    if verbose():
        return {"log_to_driver": True}
    quiet_ray()
    return {"log_to_driver": False}


def ray_connected(local_logs: Path | None) -> None:
    """Called by `connect` once Ray runs: the command's log copies `local_logs` (a local Ray's)."""
    quiet_ray()
    if _current is not None:
        _current.used_ray = True
        _current.ray_logs = local_logs


def quiet_ray() -> None:
    """Ray's and Ray Data's console handlers print WARNING and above, without the notices about
    choices fdsl made; the command's log gets every record. No-op with --verbose."""
    if verbose():
        return
    for logger in _loggers():
        for handler in logger.handlers:  # console handlers; Ray's session-file handlers keep everything
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.WARNING))
                if not any(isinstance(f, _DropNotices) for f in handler.filters):
                    handler.addFilter(_DropNotices())
        if _current is not None and logger.name != "root" and _current.handler not in logger.handlers:
            logger.addHandler(_current.handler)  # these loggers do not propagate to the root


def quiet_data() -> None:
    """Ray Data without progress bars (one bar per pass per worker otherwise: fdsl prints its own
    progress, also with --verbose) and, unless --verbose, without its execution plans and
    per-dataset start/finish lines on the console (`quiet_ray`); its full log stays in Ray's
    session folder (`logs/ray-data/`)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    quiet_ray()
    # Ray Data's own use of its deprecated option, once per process: nothing a user can change
    warnings.filterwarnings("ignore", message=r".*ExecutionOptions\.exclude_resources.*")


@contextlib.contextmanager
def tune_output():
    """Ray Tune without its console output (the experiment box, result paths, status tables: Tune
    prints them itself at verbose=0 with its new output engine); fdsl's SweepProgress shows the
    sweep instead. Errors are still raised and logged. No-op with --verbose."""
    key, before = "RAY_AIR_NEW_OUTPUT", os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose():
        os.environ[key] = "0"  # the legacy reporter, silent at verbose=0
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _loggers() -> list[logging.Logger]:
    """The loggers with console handlers of their own: the root, Ray's, Ray Data's (no propagation)."""
    names = [n for n in ("ray", "ray.data") if n in logging.Logger.manager.loggerDict]
    return [logging.getLogger(), *(logging.getLogger(n) for n in names)]


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOTICES)


# --- progress ----------------------------------------------------------------------------------
class Progress:
    """Progress of one long step: a tqdm bar on a terminal (stderr), else a plain line on stdout at
    most every `every_s` seconds and at the end, e.g.
    `pretrain: step 300/3000 (10%), loss 2.41, lr 0.0019, 1650 images/s, ETA 1m52s`."""

    def __init__(self, name: str, total: int, unit: str = "step", every_s: float | None = None,
                 terminal: bool | None = None):
        self.name, self.total, self.unit = name, max(int(total), 1), unit
        self.every_s = EVERY_S if every_s is None else every_s
        self.start = self.shown = time.perf_counter()
        self.done, self.closed = 0, False
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=name, unit=unit, file=sys.stderr, dynamic_ncols=True,
                            leave=True)

    def update(self, done: int, text: str = "", force: bool = False) -> None:
        """`done` of `total` units; `text`: what to show beside (loss, top-1, ...); `force`: a plain
        line now, whatever the time since the last."""
        if self.closed:
            return
        done = min(int(done), self.total)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if text:
                self.bar.set_postfix_str(text, refresh=True)
            self.done = done
            return
        now = time.perf_counter()
        if done == self.total and self.done == self.total:
            return  # the final line once
        self.done = done
        if done < self.total and not force and now - self.shown < self.every_s:
            return  # the first line too: a short step prints its final line only
        self.shown, elapsed = now, now - self.start
        when = f"ETA {_duration(elapsed * (self.total - done) / max(done, 1))}" if done < self.total \
            else f"done in {_duration(elapsed)}"
        print(f"{self.name}: {self.unit} {done}/{self.total} ({100 * done // self.total}%)"
              + (f", {text}" if text else "") + f", {when}", flush=True)

    def close(self) -> None:
        if self.bar is not None and not self.closed:
            self.bar.close()
        self.closed = True


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextlib.contextmanager
def follow_metrics(path: Path, progress: Progress, describe: Callable[[dict], tuple[int, str]],
                   poll_s: float = 1.0, on_rows: Callable[[list[dict]], None] | None = None):
    """While the body runs, follow the JSON rows appended to `path` (a run's metrics.jsonl, written
    by rank 0 wherever it runs, the run folder being shared) and show the newest one:
    `describe(row) -> (units done, text)`; `on_rows(rows)` gets every new row (MLflow's live
    metrics). A restarted worker group rewrites the file: followed anew."""
    stop = threading.Event()

    def follow():
        offset, pending = 0, ""
        while True:
            stopping = stop.wait(poll_s)
            try:
                size = path.stat().st_size
                if size < offset:  # rewritten by a restart
                    offset, pending = 0, ""
                with open(path) as f:
                    f.seek(offset)
                    chunk = f.read()
                    offset = f.tell()
            except OSError:
                chunk = ""
            lines = (pending + chunk).split("\n")
            pending = lines.pop()
            rows = []
            for line in lines:
                with contextlib.suppress(json.JSONDecodeError):  # a torn line: the next row will do
                    rows.append(json.loads(line))
            rows = [r for r in rows if isinstance(r, dict)]
            if rows:
                progress.update(*describe(rows[-1]))
                if on_rows is not None:
                    on_rows(rows)
            if stopping:
                return

    thread = threading.Thread(target=follow, name=f"fdsl-progress-{progress.name}", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join(timeout=5 * poll_s)
        progress.close()
