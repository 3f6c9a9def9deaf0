"""One owner per folder: a second command on a folder another fdsl command holds is refused at once."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

import pytest

from fdsl.atomic import owned_folder, waiting_lock
from fdsl.cli import main

COMMANDS = {
    "finetune": lambda out: ["finetune", "debug-finetune", "--weights", "scratch", "--out", str(out)],
    "ssl": lambda out: ["ssl", "debug-dino", "--dataset", "digits", "--out", str(out)],
    "pretrain": lambda out: ["pretrain", "debug-vit", "--data", "stream", "--out", str(out)],
    "generate": lambda out: ["generate", "debug-fractaldb", "--out", str(out)],
    "sweep": lambda out: ["sweep", "debug-variety", "--out", str(out)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_held_folder_is_refused_naming_its_holder(command, tmp_path, capsys):
    out = tmp_path / "run"
    with owned_folder(out, "fdsl pretrain (the first one)"):
        assert main(COMMANDS[command](out)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "in use by another fdsl command" in err
        assert f"pid {os.getpid()} on {socket.gethostname()}" in err and "the first one" in err
        holder = json.loads((out / ".lock").read_text())
        assert holder["pid"] == os.getpid()  # the refused command left the holder's line as it was
    # the refused command wrote nothing of its own (a sweep checks its config files first); the
    # holder created the folder and left it empty: gone with it
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left in ([], [".lock", "base-experiment.json", "sweep.json"]), left


def test_a_folder_is_free_again_once_its_holder_is_gone(tmp_path):
    with owned_folder(tmp_path / "a", "one"):
        pass
    with owned_folder(tmp_path / "a", "two"):  # released: the next command takes it
        assert json.loads((tmp_path / "a" / ".lock").read_text())["command"] == "two"


def test_a_cache_entry_lock_is_waited_for_then_names_its_holder(tmp_path):
    """A sweep's cache entry: a second trial waits for the first's lock, up to its timeout, then
    fails naming the holder (a lock left stale on a network file system never hangs a sweep)."""
    path = tmp_path / "datasets" / ".abc.lock"
    path.parent.mkdir()
    with open(path, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        held.write(json.dumps({"pid": 4242, "host": "node-7", "command": "a trial", "since": "then"}) + "\n")
        held.flush()
        start = time.monotonic()
        expected = r"held by pid 4242 on node-7, `a trial` since then after 1 s; if that process is gone"
        with pytest.raises(TimeoutError, match=expected), waiting_lock(path, "another trial", wait_s=1.0):
            pass
        assert 1.0 <= time.monotonic() - start < 3.0
    with waiting_lock(path, "another trial", wait_s=1.0):  # released: taken at once
        assert json.loads(path.read_text())["command"] == "another trial"
