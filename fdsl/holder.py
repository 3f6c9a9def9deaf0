"""A command's own local Ray, started in a process of its own while the command imports.

A command that starts a local Ray (no --address, not inside a Ray job, no `fdsl up` to join) used to
start it in `connect`, after its imports: on 2 cores, 3-5 s of Ray's start after 5-8 s of torch,
timm, Ray and scikit-learn, one after the other. The `fdsl` command (`fdsl.cli.entry`) now starts it
as soon as the command's preset is checked, in a **holder** process (`python -m fdsl.jobs.up hold`:
`connect.hold_local`, the same holder as `fdsl up`'s, so the Ray is the one `connect` would have
started: dashboard on 127.0.0.1, the same settings). `connect` joins it when the command gets there
(`take`) and counts it as the command's own local Ray.

The holder keeps its Ray until its stdin closes, then stops it:
- when the command's process ends, however it ends: the pipe closes with it, also on SIGKILL. The
  command does not wait for Ray's stop (about 1 s) before the shell gets its prompt back;
- at `stop(wait=True)` (`connect.release`), which waits: a stopped run's workers must stop writing
  into its folder before the command prints the line that resumes it.

The holder runs in a session of its own: Ctrl-C in the terminal goes to the command, which stops its
run as before; Ray's processes are the holder's children, so the command's process tree holds them.
Its stderr (Ray's start-up lines) goes to the command's log, or to the console with --verbose.

This module imports the standard library only: the CLI imports it before torch and Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HOLD = [sys.executable, "-m", "fdsl.jobs.up", "hold"]
"""The holder's command line (`--num-cpus N` may follow)."""

_held: dict = {}
_stopped: list[subprocess.Popen] = []  # holders told to stop, kept so that no Popen is collected running


def start(num_cpus: int | None, log: Path | None = None) -> None:
    """Start a holder of a new local Ray of `num_cpus` CPUs (None: Ray's own count), its stderr
    appended to `log` (None: this process's stderr). A holder started before is stopped."""
    stop(wait=False)
    err = open(log, "ab") if log is not None else None  # noqa: SIM115 (the child keeps its own copy)
    try:
        proc = subprocess.Popen(HOLD + ([] if num_cpus is None else ["--num-cpus", str(num_cpus)]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
    finally:
        if err is not None:
            err.close()
    _held.update(proc=proc, num_cpus=num_cpus, log=log)


def take(num_cpus: int | None) -> dict | None:
    """The local Ray a holder started for this command, once it is up (`hold_local`'s line: its GCS
    address, auth mode, CPUs, logs), for `connect` to join; None when none was started for
    `num_cpus` (one started for other CPUs is stopped). RuntimeError when its Ray did not start."""
    proc = _held.get("proc")
    if proc is None or _held.get("taken"):
        return None
    if num_cpus != _held["num_cpus"]:
        stop(wait=False)
        return None
    line = proc.stdout.readline()
    if not line:
        code, log = proc.wait(), _held["log"]
        stop(wait=False)
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log and log.is_file() else []
        raise RuntimeError(f"the local Ray did not start (its holder ended with exit {code})"
                           + (": " + " | ".join(tail) if tail else ""))
    _held["taken"] = True
    return json.loads(line)


def holding() -> bool:
    """Whether a holder started by `start` runs (until `stop`)."""
    return "proc" in _held


def stop(wait: bool = True, timeout_s: float = 60.0) -> None:
    """Tell the holder to stop its Ray (close its stdin); with `wait`, until it has. No-op without one."""
    proc = _held.pop("proc", None)
    _held.clear()
    if proc is None:
        return
    proc.stdin.close()
    proc.stdout.close()
    if not wait:
        _stopped.append(proc)
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # its Ray's processes are its children: they go with it
        proc.kill()
        proc.wait()
