"""Ctrl-C and SIGTERM: one contract for every command that runs on Ray.

While a command runs (`catching`), SIGINT (a terminal's Ctrl-C, sent to the whole process group)
and SIGTERM (what `kill`, a batch scheduler or a spot preemption sends) end it the same way:

1. The first signal raises `Interrupted` in the main thread, wherever it is (after the import it
   arrived in, if any: see `_handler`), or, inside a
   `graceful(stop)` block, calls `stop()` instead, which asks the running work to wind down
   (a sweep: Tune's own stop, which saves its state one last time). Further signals are ignored
   while the command winds down: a second Ctrl-C can no longer tear what is being saved.
2. `fdsl.cli` then prints one line saying what was kept and the exact command that continues it,
   copies the logs and ends the process with 130 (SIGINT) or 143 (SIGTERM) at once
   (`fdsl.resume.end_stopped`): the local Ray this command started ends with it (Ray's kernel
   fate-sharing); a cluster it joined keeps running, and the run's actors and workers, owned by
   this driver, end there.

Ray's own handlers would get in the way, so they are kept out: `ray.init` installs a SIGTERM
handler (`reinstall` puts ours back after it), Ray Train's `fit()` installs a SIGINT handler when it
runs in the main thread (`fdsl.platform.train.run.fit` runs it in a thread of its own) and Tune one
for SIGINT (TUNE_DISABLE_SIGINT_HANDLER=1; Tune's SIGUSR1 stop is what `graceful` uses for sweeps).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict = {"active": False, "received": None, "stop": None, "deferred": None}

IMPORT_FRAMES = "<frozen importlib._bootstrap"
"""Frames of Python's import machinery: a signal that arrives while a module's code runs under them
waits until the import is done (see `_handler`)."""


class Interrupted(BaseException):
    """A command stopped by SIGINT or SIGTERM (a BaseException, like KeyboardInterrupt: no
    `except Exception` on the way up may swallow it)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(self.name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM: 128 + the signal's number, as a shell reports it."""
        return 128 + self.signum


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(IMPORT_FRAMES):
            return True
        frame = frame.f_back
    return False


def _resend_after_import() -> None:
    """Send the deferred signal to the main thread whenever it is out of every import, until the
    handler has taken it (a thread of its own; resending is harmless: one signal is handled)."""
    main = threading.main_thread().ident
    while _state["active"] and (signum := _state["deferred"]) is not None:
        if not _importing(sys._current_frames().get(main)):
            signal.pthread_kill(main, signum)
        time.sleep(0.05)


def _handler(signum, frame) -> None:
    if _state["received"] is not None:
        return  # already winding down: nothing may tear what is being saved
    if _importing(frame):
        # An exception raised inside an import leaves half-initialised modules behind (torch's
        # `sympy.logic` missing, say), and what runs next fails on them: the signal comes back once
        # the import is done (imports take seconds at most).
        if _state["deferred"] is None:
            _state["deferred"] = signum
            threading.Thread(target=_resend_after_import, daemon=True, name="fdsl-resend").start()
        return
    _state["deferred"] = None
    _state["received"] = signum
    if _state["stop"] is not None and _state["stop"]():
        return  # the work winds down; its caller raises Interrupted once it has
    raise Interrupted(signum)


def received() -> int | None:
    """The signal that interrupted this command (None: none came)."""
    return _state["received"]


def reinstall() -> None:
    """Put this contract's handlers back (after `ray.init`, which installs its own for SIGTERM); only
    inside `catching`, and only from the main thread (where Python runs signal handlers)."""
    if _state["active"] and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """The contract for the command run inside; the handlers before it are restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a command run from a thread (a notebook's executor): signals are its caller's
        return
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    tune_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _state.update(active=True, received=None, stop=None, deferred=None)
    reinstall()
    try:
        yield
    finally:
        _state.update(active=False, stop=None, deferred=None)
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if tune_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_env


@contextlib.contextmanager
def graceful(stop: Callable[[], bool]) -> Iterator[None]:
    """Inside: the first signal calls `stop()` (which must return at once, True when it took the
    stop) instead of raising; the caller checks `received()` once the work has wound down and raises
    `Interrupted` itself. When `stop()` returns False the signal raises as outside."""
    _state["stop"] = stop
    try:
        yield
    finally:
        _state["stop"] = None


def tune_stop() -> bool:
    """Ask a running Tune experiment to stop as Tune's own Ctrl-C does (save its state, end the
    trials): Tune listens for SIGUSR1 for this while it runs. False before Tune listens (SIGUSR1
    would end the process): the signal then raises."""
    if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False
    os.kill(os.getpid(), signal.SIGUSR1)
    return True
