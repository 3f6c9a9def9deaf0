"""A command's own local Ray, started by a holder process while the command imports (`fdsl.holder`).

The real `fdsl` command, as a new process: its holder ends with it when it is refused after the
holder started, and when it is killed outright; a finished command's Ray is checked by the console
tests (`_assert_logs`: joined, and gone after the command).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT, gone_within, processes_of, run_fdsl

pytestmark = pytest.mark.slow


def holders_since(t0: float, parent: int | None = None) -> list[psutil.Process]:
    """Holder processes (`python -m fdsl.jobs.up hold`) started after `t0`, of `parent` if given."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if ["fdsl.jobs.up", "hold"] in (cmdline[i:i + 2] for i in range(len(cmdline))) \
                and proc.info["create_time"] >= t0 - 1 and parent in (None, proc.info["ppid"]):
            found.append(proc)
    return found


def running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_command_refused_after_its_ray_started_leaves_nothing_running(tmp_path):
    """Weights that do not exist are found after the imports, when the holder already starts Ray:
    one line, exit 2, no folder, and the holder with its Ray gone soon after."""
    t0 = time.time()
    res = run_fdsl("finetune", "debug-finetune", "--weights", str(tmp_path / "nope"), "--dataset", "digits",
                   "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "not a finished run" in res.stderr and not (tmp_path / "out").exists()
    assert gone_within(lambda: [p.pid for p in holders_since(t0) if running(p)]) == [], \
        "the holder outlived its command"


def test_a_killed_command_takes_its_local_ray_with_it(tmp_path):
    """SIGKILL on the command (no handler runs): its holder's stdin closes, and the holder stops the
    Ray: every process naming its session folder ends."""
    command = [sys.executable, "-m", "fdsl.cli", "finetune", "laptop-visualatom", "--weights", "scratch",
               "--dataset", "digits", "--samples-per-class", "10", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        sessions = []
        deadline = time.monotonic() + 120
        while not sessions and proc.poll() is None and time.monotonic() < deadline:
            for held in holders_since(0, parent=proc.pid):  # its raylet names the session folder
                for child in held.children(recursive=True):
                    args = child.cmdline()
                    sessions += [a.partition("=")[2] for a in args if a.startswith("--session_dir=")]
            time.sleep(0.2)
        assert sessions, f"no local Ray of the command was seen: {proc.poll()} {proc.stderr.read()}"
        holder = holders_since(0, parent=proc.pid)[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left = gone_within(lambda: processes_of(sessions[0]) + ([holder.pid] if running(holder) else []))
        assert left == [], "the killed command's holder or Ray's processes outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
