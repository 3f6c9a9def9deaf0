"""The quickstart clears only a folder it made itself."""

from __future__ import annotations

from conftest import run_fdsl

from fdsl.quickstart import MARKER, claim_folder


def test_a_folder_with_other_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "pretrain").mkdir()
    planted = tmp_path / "pretrain" / "my-notes.txt"
    planted.write_text("keep me")
    res = run_fdsl("quickstart", "--out", str(tmp_path))
    assert res.returncode == 2 and "holds files the quickstart did not write" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and planted.read_text() == "keep me"
    assert not (tmp_path / MARKER).exists()


def test_new_and_own_folders_are_claimed(tmp_path):
    out = claim_folder(tmp_path / "new")
    assert (out / MARKER).is_file()
    (out / "pretrain").mkdir()
    assert claim_folder(out) == out  # a folder an earlier quickstart made
