"""The quickstart clears only a folder it made itself; its index page shows every picture."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import run_fdsl
from PIL import Image

from fdsl.platform.train.plots import Panel, save_confusion_png, save_curves
from fdsl.quickstart import COMPARISON, MARKER, claim_folder, save_comparison, write_index

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_index_page_shows_every_picture_in_chromium(tmp_path):
    """index.html of a quickstart folder (its pictures drawn by the same functions as in a run):
    every image it shows decodes in headless Chromium, and it links the sweep report."""
    out = tmp_path / "qs"
    summary = {"preset": "laptop-visualatom", "target": "digits", "samples_per_class": 10, "seeds": [0, 1],
               "seconds": 240.0, "fdsl_top1": [0.85, 0.79], "scratch_top1": [0.66, 0.70], "effect": 0.14,
               "logreg_top1": [0.90, 0.86], "knn1_top1": [0.93, 0.90],
               "report": str(out / "sweep" / "report.html")}
    rows = [{"step": s, "epoch": s, "loss": 3.0 / s, "lr": 1e-3, "finetune_top1": 0.1 * s,
             "train_loss": 2.0 / s} for s in range(1, 8)]
    for run in ("pretrain", "finetune-fdsl-0", "finetune-scratch-0"):
        (out / run).mkdir(parents=True)
        save_curves(rows, out / run / "curves.png", run, [Panel("loss", ["loss"], {"chance": 3.0})])
    for run in ("finetune-fdsl-0", "finetune-scratch-0"):
        save_confusion_png(np.eye(3, dtype=np.int64) * 5, out / run / "confusion.png", run, ["a", "b", "c"])
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(out / "preview.png")
    (out / "sweep").mkdir()
    (out / "sweep" / "report.html").write_text("<html>report</html>")
    save_comparison(summary, out / COMPARISON)
    page = write_index(out, summary)
    html = page.read_text()
    assert html.count("<img ") == 7 and "href='sweep/report.html'" in html and "+14.0 points" in html
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--allow-file-access-from-files",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    assert loaded and int(loaded.group(1)) == 7, dom.stdout[:800]
