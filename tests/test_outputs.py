"""Output that cannot be written is the user's to fix: one line naming the path, exit 2, nothing left."""

from __future__ import annotations

import os
import subprocess

import pytest

from fdsl.cli import main

COMMANDS = {
    "preview": lambda out: ["preview", "debug-fractaldb", "--out", str(out / "p.png")],
    "generate": lambda out: ["generate", "debug-fractaldb", "--out", str(out / "data")],
    "pretrain": lambda out: ["pretrain", "debug-vit", "--data", "stream", "--out", str(out / "run")],
    "finetune": lambda out: ["finetune", "debug-finetune", "--weights", "scratch", "--out", str(out / "ft")],
    "ssl": lambda out: ["ssl", "debug-dino", "--out", str(out / "ssl")],
    "sweep": lambda out: ["sweep", "debug-variety", "--out", str(out / "sweep")],
    "quickstart": lambda out: ["quickstart", "--out", str(out / "qs")],
}


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only file system (a tmpfs mounted ro): what a full or read-only share looks like."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system needs root")
    mount = tmp_path_factory.mktemp("ro")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_read_only_out_is_one_line(command, read_only, capsys):
    assert main(COMMANDS[command](read_only)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "read-only or no permission" in err or "cannot write" in err, err
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_file_where_a_folder_is_expected_is_one_line(command, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    assert main(COMMANDS[command](blocker)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "is a file" in err or "not a folder" in err, err
    assert blocker.read_text() == "a file"
