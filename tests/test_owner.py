"""One owner per folder: a second command on a folder another fdsl command holds is refused at once."""

from __future__ import annotations

import json
import os
import socket

import pytest

from fdsl.atomic import owned_folder
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
