"""Sweep reports from trial records: CSV rows, markdown, self-contained HTML rendered in Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from fdsl.platform.tune.report import collect_trials, curve_label, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_sweep(root, n=4):
    (root / "sweep.json").write_text(json.dumps({"name": "t", "base": "debug-vit", "metric": "finetune_top1",
                                                 "mode": "max", "search": "grid", "scheduler": "asha"}))
    for k in range(n):
        d = root / "trials" / f"trial_{k:03d}"
        d.mkdir(parents=True)
        Image.fromarray(np.full((32, 32), 40 * k, np.uint8)).save(d / "preview.png")
        record = {"trial": d.name, "status": "done" if k != 2 else "stopped",
                  "params": {"data.num_classes": 4 * (k + 1), "pretrain.lr": 10.0 ** -(k + 2)},
                  "metrics": {"finetune_top1": 0.5 + 0.1 * k, "pretrain_loss": 2.0 - 0.2 * k},
                  "curves": {"pretrain_loss": [[s, 2.5 - 0.01 * s * k] for s in range(10)],
                             "finetune_top1": [[e, 0.3 + 0.05 * e] for e in range(4)]},
                  "dataset": {"fingerprint": f"fp{k % 2}"}, "preview": "preview.png"}
        (d / "trial.json").write_text(json.dumps(record))


def test_report_files(tmp_path):
    make_sweep(tmp_path)
    start = time.perf_counter()
    paths = write_report(tmp_path)
    assert time.perf_counter() - start < 30  # no recomputation; generous for a loaded machine
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and rows[0]["trial"] == "trial_003"  # best first
    assert {"data.num_classes", "pretrain.lr", "finetune_top1", "pretrain_loss"} <= set(rows[0])
    md = paths["md"].read_text()
    assert "## Best trial" in md and "`trial_003`" in md and "plots/metric_vs_params.png" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 2 + 4  # two plots, four thumbnails
    assert "src='plots/" not in html  # self-contained
    assert paths["plot_metric_vs_params"].stat().st_size > 1000
    assert len(collect_trials(tmp_path)) == 4


def test_curve_labels_name_what_each_trial_swept(tmp_path):
    make_sweep(tmp_path)
    trials = collect_trials(tmp_path)
    assert curve_label(trials[3], ["data.num_classes", "pretrain.lr"]) == "003 num_classes=16 lr=1e-05"
    assert curve_label(trials[0], []) == "000"


def test_report_of_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder made by `fdsl sweep`"):
        write_report(tmp_path / "nothing")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_html_renders_its_plots_in_chromium(tmp_path):
    make_sweep(tmp_path)
    paths = write_report(tmp_path)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = paths["html"].resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    assert loaded and int(loaded.group(1)) == 6, dom.stdout[:500]
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # a page with tables and plots, not a blank one


def test_csv_cells_never_start_a_formula(tmp_path):
    """A trial string that a spreadsheet would run as a formula is written as text (CSV injection)."""
    make_sweep(tmp_path, n=2)
    path = tmp_path / "trials" / "trial_000" / "trial.json"
    record = json.loads(path.read_text())
    record["params"]["finetune.randaugment"] = "=HYPERLINK(\"http://x\")"
    record["dataset"]["fingerprint"] = "@SUM(A1)"
    path.write_text(json.dumps(record))
    paths = write_report(tmp_path)
    cells = [c for row in csv.reader(paths["csv"].open()) for c in row]
    assert "'=HYPERLINK(\"http://x\")" in cells and "'@SUM(A1)" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "@")]


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: {k: v for k, v in r.items() if k != "trial"}, "field 'trial' is missing"),
    (lambda r: {**r, "params": [1]}, "field 'params' is list, expected an object"),
    (lambda r: {**r, "curves": {"pretrain_loss": [[1]]}}, "curves.pretrain_loss' is not a list of"),
    (lambda r: {**r, "curves": {"pretrain_loss": 3}}, "curves.pretrain_loss' is not a list of"),
    (lambda r: [r], "got list, expected a JSON object"),
])
def test_damaged_trial_records_are_one_line(tmp_path, change, message):
    from conftest import run_fdsl

    make_sweep(tmp_path, n=2)
    path = tmp_path / "trials" / "trial_001" / "trial.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    res = run_fdsl("report", str(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "trial_001/trial.json" in res.stderr


def test_a_preview_outside_the_trial_is_not_embedded(tmp_path):
    make_sweep(tmp_path, n=2)
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(secret)
    path = tmp_path / "trials" / "trial_000" / "trial.json"
    record = json.loads(path.read_text())
    record["preview"] = "../../secret.png"
    path.write_text(json.dumps(record))
    html = write_report(tmp_path)["html"].read_text()
    own = (tmp_path / "trials" / "trial_001" / "preview.png").read_bytes()
    import base64

    assert base64.b64encode(secret.read_bytes()).decode() not in html
    assert base64.b64encode(own).decode() in html


def test_settings_are_ranked_by_their_mean_over_seeds(tmp_path):
    """lr 1e-3 wins one seed by far but loses on average: the report ranks settings by the mean over
    the swept seed (with its spread), and leaves out a trial that did not finish."""
    from fdsl.platform.tune.report import rank_settings

    make_sweep(tmp_path, n=0)
    scores = {(1e-3, 0): 0.90, (1e-3, 1): 0.30, (3e-3, 0): 0.70, (3e-3, 1): 0.66, (3e-3, 2): 0.10}
    for k, ((lr, seed), top1) in enumerate(scores.items()):
        d = tmp_path / "trials" / f"trial_{k:03d}"
        d.mkdir(parents=True)
        (d / "trial.json").write_text(json.dumps({
            "trial": d.name, "status": "stopped" if seed == 2 else "done",
            "params": {"finetune.lr": lr, "finetune.seed": seed}, "metrics": {"finetune_top1": top1}}))
    paths = write_report(tmp_path)
    settings = json.loads(paths["settings"].read_text())
    assert [s["params"] for s in settings] == [{"finetune.lr": 3e-3}, {"finetune.lr": 1e-3}]
    assert settings[0]["n"] == 2 and settings[0]["mean"] == pytest.approx(0.68)
    assert settings[0]["std"] == pytest.approx(np.std([0.70, 0.66], ddof=1))
    assert "Settings ranked by mean finetune_top1 over seeds (finetune.seed)" in paths["md"].read_text()
    assert "id='settings'" in paths["html"].read_text()
    assert rank_settings(collect_trials(tmp_path), ["finetune.lr"], "finetune_top1", "max") == []
