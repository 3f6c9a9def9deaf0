"""The quickstart: a small replication of the FDSL effect on a local Ray, what `make quickstart` runs.

    generate laptop-visualatom -> preview -> pre-train the tiny ViT on it
    -> fine-tune on digits (10 labelled images per class) from those weights and from scratch,
       paired seeds 0 and 1 -> a fine-tuning sweep (lr x the same 2 seeds) -> its report

Everything lands in one folder (default runs/quickstart): the runs, `summary.json` (per step its
seconds and result; `fdsl_top1` and `scratch_top1`, one value per seed; `effect`, their mean
difference), `comparison.png` (FDSL vs scratch per seed, beside the raw-pixel baselines), the sweep
report and `index.html`, one page showing all of it with the data preview and the runs' curves.
The end prints a table and where the page is.

Run again, the same command continues a quickstart that was stopped (Ctrl-C, SIGTERM, a crash): the
data set is verified against its manifest, the finished runs are kept, and the run it stopped in
continues from its newest checkpoint (the sweep with `--resume`'s restore). After a quickstart that
finished (`summary.json` there), it verifies the data set and runs the training steps anew.
"""

from __future__ import annotations

import json
import shutil
import time
from html import escape
from pathlib import Path

import numpy as np
import ray

from fdsl.atomic import atomic_write_text, check_writable, owned_folder
from fdsl.figures import plt, save_figure
from fdsl.platform import console, tracking
from fdsl.platform.connect import connect
from fdsl.platform.data.synthesis import generate
from fdsl.platform.interrupt import Interrupted
from fdsl.platform.train.finetune import finetune
from fdsl.platform.train.pretrain import pretrain, pretrain_summary
from fdsl.platform.train.run import SUMMARY_FILE, can_resume, finetune_summary, read_finetune_metrics
from fdsl.platform.train.weights import WEIGHTS_FILE
from fdsl.platform.tune.report import SWEEP_FILE
from fdsl.platform.tune.sweep import describe_best, run_sweep
from fdsl.presets import get_preset
from fdsl.preview import preview_dataset
from fdsl.sweeps import check_sweep, get_sweep

QUICKSTART_PRESET = "laptop-visualatom"
QUICKSTART_SWEEP = "quickstart"
SEEDS = (0, 1)
"""Paired fine-tuning seeds: each fixes the labelled subset, the new head, data order and augmentation."""
SUMMARY = "summary.json"
COMPARISON = "comparison.png"
INDEX = "index.html"
MARKER = ".fdsl-quickstart"
"""Written into the folder the quickstart creates; it only ever clears a folder that holds it."""


def claim_folder(out: Path) -> Path:
    """The quickstart's folder: created (with its marker), or one a quickstart made before;
    FileExistsError for a folder with other content (nothing in it is touched)."""
    out = check_writable(out).resolve()
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FileExistsError(f"--out: {out} holds files the quickstart did not write; it clears its "
                              "own folder before each run, so choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `fdsl quickstart`; it may clear this folder's run sub-folders\n")
    return out


def run_quickstart(out: str | Path, *, num_cpus: int | None = None, log=print) -> dict:
    """Run every step into `out`; writes and returns `summary.json`'s content, prints the table."""
    out = claim_folder(out)
    started_here = connect(None, num_cpus)  # one local Ray for every step
    every_s, console.EVERY_S = console.EVERY_S, max(console.EVERY_S, 30.0)  # 8 steps: fewer lines each
    steps: list[dict] = []
    results: dict[str, dict] = {}
    total_steps = 4 + 2 * len(SEEDS)

    def step(name: str, fn):
        log(f"== quickstart {len(steps) + 1}/{total_steps}: {name}")
        start = time.perf_counter()
        value = fn()
        results[name] = value if isinstance(value, dict) else {"path": str(value)}
        kept = "kept from the stopped run: " if isinstance(value, dict) and value.get("kept") else ""
        steps.append({"name": name, "seconds": round(time.perf_counter() - start, 1),
                      "result": kept + _describe(name, value)})
        return value

    tags, params = {"fdsl.kind": "quickstart", "fdsl.preset": QUICKSTART_PRESET}, {"seeds": list(SEEDS)}
    with tracking.parent("quickstart", out, tags, params) as parent:  # MLflow: its runs nested under one
        with owned_folder(out, "fdsl quickstart"):  # one quickstart per folder
            try:
                data = out / "data"
                step("generate", lambda: generate(get_preset(QUICKSTART_PRESET), data).manifest)
                step("preview", lambda: preview_dataset(data, out / "preview.png"))
                runs = [f"finetune-{arm}-{s}" for arm in ("fdsl", "scratch") for s in SEEDS]
                if (out / SUMMARY).is_file():  # a finished quickstart: its training steps run anew
                    for stale in ("pretrain", "sweep", *runs):
                        shutil.rmtree(out / stale, ignore_errors=True)
                    (out / SUMMARY).unlink()
                pre = step("pretrain", lambda: _pretrain_step(out / "pretrain", data))
                for seed in SEEDS:
                    tune = get_preset(QUICKSTART_PRESET, [f"finetune.seed={seed}"])
                    for arm, weights in (("fdsl", pre["model"]), ("scratch", "scratch")):
                        name = f"finetune-{arm}-{seed}"
                        step(name, lambda t=tune, w=weights, n=name: _finetune_step(t, w, out / n))
                sweep = get_sweep(QUICKSTART_SWEEP)
                sweep.weights = str(out / "pretrain")  # a fine-tuning sweep of the weights just pre-trained
                resume = (out / "sweep" / SWEEP_FILE).is_file()  # a sweep the last quickstart stopped
                if not resume:
                    shutil.rmtree(out / "sweep", ignore_errors=True)
                step("sweep", lambda: run_sweep(sweep, QUICKSTART_SWEEP, out / "sweep", check_sweep(sweep),
                                                resume=resume))
            except Interrupted:  # the command's line comes first; fdsl.cli then stops this Ray
                raise
            except BaseException:
                if started_here:
                    ray.shutdown()
                raise
            else:
                if started_here:
                    ray.shutdown()
            finally:
                console.EVERY_S = every_s
        summary = _summary(steps, results)

        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
        save_comparison(summary, out / COMPARISON)
        index = write_index(out, summary)
        log(_table(steps, summary["seconds"]))
        fdsl, scratch = summary["fdsl_top1"], summary["scratch_top1"]
        log(f"FDSL effect on digits (10 labelled images per class, seeds {list(SEEDS)}): pre-trained "
            f"{_mean_std(fdsl)} vs scratch {_mean_std(scratch)} top-1, effect {100 * summary['effect']:+.1f} "
            f"points (per seed {', '.join(f'{100 * d:+.1f}' for d in summary['effect_per_seed'])}); "
            f"raw-pixel logistic regression {_mean_std(summary['logreg_top1'])}")
        log(f"quickstart done in {summary['seconds']:.0f}s. Summary: {out / SUMMARY}")
        log(f"Sweep report: {results['sweep']['report']}")
        log(f"Everything on one page (preview, curves, comparison, report): {index}")
        if parent is not None and not parent.failed:
            parent.metrics(_tracked_figures(summary))
            parent.artifacts([out / SUMMARY, out / COMPARISON, index])
            log(f"MLflow: every run above is in {parent.uri} (`fdsl ui` opens it)")
        return summary


def _tracked_figures(summary: dict) -> dict[str, float]:
    """The quickstart's figures in MLflow: the effect, and each arm's top-1 per seed."""
    figures = {"effect": summary["effect"], "seconds": summary["seconds"]}
    for key in ("fdsl_top1", "scratch_top1", "logreg_top1"):
        figures.update({f"{key}.seed{s}": v for s, v in zip(SEEDS, summary[key], strict=True)})
    return figures


def _resumable(folder: Path) -> bool:
    """Whether a stopped run in `folder` continues (it has a checkpoint); else it is cleared."""
    if can_resume(folder):
        return True
    shutil.rmtree(folder, ignore_errors=True)
    return False


def _pretrain_step(folder: Path, data: Path) -> dict:
    """The pre-training: kept when a stopped quickstart finished it, continued from its newest
    checkpoint when the stop cut it, else run."""
    if (folder / WEIGHTS_FILE).is_file():
        return {**pretrain_summary(folder), "kept": True}
    return pretrain(get_preset(QUICKSTART_PRESET), str(data), folder, resume=_resumable(folder))


def _finetune_step(experiment, weights: str, folder: Path) -> dict:
    """A fine-tuning: kept when finished, continued from its newest checkpoint, else run."""
    if (folder / SUMMARY_FILE).is_file():
        return {**finetune_summary(read_finetune_metrics(folder), folder), "kept": True}
    return finetune(experiment, weights, "digits", folder, resume=_resumable(folder))


def _summary(steps: list[dict], results: dict[str, dict]) -> dict:
    fdsl = [results[f"finetune-fdsl-{s}"]["finetune_top1"] for s in SEEDS]
    scratch = [results[f"finetune-scratch-{s}"]["finetune_top1"] for s in SEEDS]
    diff = np.subtract(fdsl, scratch)
    return {"preset": QUICKSTART_PRESET, "target": "digits", "samples_per_class": 10, "seeds": list(SEEDS),
            "steps": steps, "seconds": round(sum(s["seconds"] for s in steps), 1),
            "fdsl_top1": fdsl, "scratch_top1": scratch, "effect": round(float(diff.mean()), 4),
            "effect_per_seed": [round(float(d), 4) for d in diff],
            "logreg_top1": [results[f"finetune-scratch-{s}"]["baseline_logreg_top1"] for s in SEEDS],
            "knn1_top1": [results[f"finetune-scratch-{s}"]["baseline_knn1_top1"] for s in SEEDS],
            "pretrain_loss": results["pretrain"]["loss"],
            "sweep_settings": results["sweep"].get("settings", []),
            "report": results["sweep"]["report"]}


def save_comparison(summary: dict, path: Path) -> Path:
    """FDSL vs scratch top-1 per paired seed (lines join the pairs), beside the raw-pixel baselines."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for k, seed in enumerate(summary["seeds"]):
        pair = [summary["scratch_top1"][k], summary["fdsl_top1"][k]]
        ax.plot([0, 1], pair, marker="o", color=f"C{k}", label=f"seed {seed}")
    for name, key, style in (("logistic regression (pixels)", "logreg_top1", "--"),
                             ("1-NN (pixels)", "knn1_top1", ":")):
        ax.axhline(float(np.mean(summary[key])), color="grey", linestyle=style, linewidth=1, label=name)
    ax.set_xticks([0, 1], ["scratch", f"FDSL ({summary['preset']})"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel(f"top-1 on {summary['target']} val")
    ax.set_title(f"{summary['samples_per_class']} labelled images per class: effect "
                 f"{100 * summary['effect']:+.1f} points", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def write_index(out: Path, summary: dict) -> Path:
    """index.html: one page linking what the quickstart made (relative paths: the folder moves as a
    whole); each figure that exists is shown, the sweep report and summary are linked."""
    def figure(rel: str, caption: str) -> str:
        if not (out / rel).is_file():
            return ""
        return (f"<figure><a href='{escape(rel)}'><img src='{escape(rel)}' alt='{escape(caption)}'></a>"
                f"<figcaption>{escape(caption)}</figcaption></figure>")

    fdsl, scratch = summary["fdsl_top1"], summary["scratch_top1"]
    rows = "".join(f"<tr><td>{s}</td><td>{100 * f:.1f}</td><td>{100 * c:.1f}</td>"
                   f"<td>{100 * (f - c):+.1f}</td></tr>"
                   for s, f, c in zip(summary["seeds"], fdsl, scratch, strict=True))
    report = Path(summary["report"])
    report_rel = report.relative_to(out) if report.is_relative_to(out) else report
    seed = summary["seeds"][0]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fdsl quickstart</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "figure{display:inline-block;margin:0.5em;vertical-align:top}img{max-width:520px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}"
        "</style></head><body>",
        f"<h1>fdsl quickstart: {escape(summary['preset'])} vs scratch on {escape(summary['target'])}</h1>",
        f"<p>{summary['samples_per_class']} labelled images per class, paired seeds {summary['seeds']}: "
        f"FDSL {_mean_std(fdsl)} vs scratch {_mean_std(scratch)} top-1, effect "
        f"<b>{100 * summary['effect']:+.1f} points</b>; raw-pixel logistic regression "
        f"{_mean_std(summary['logreg_top1'])}, 1-NN {_mean_std(summary['knn1_top1'])}. "
        f"{summary['seconds']:.0f} s in all. <a href='{SUMMARY}'>summary.json</a></p>",
        f"<table><tr><th>seed</th><th>FDSL top-1 %</th><th>scratch top-1 %</th><th>effect</th></tr>{rows}"
        "</table>",
        "<h2>Data, pre-training, fine-tuning</h2>",
        figure(COMPARISON, "FDSL vs scratch per paired seed"),
        figure("preview.png", f"the pre-training data: {summary['preset']}"),
        figure("pretrain/curves.png", "pre-training: loss and learning rate"),
        figure(f"finetune-fdsl-{seed}/curves.png", f"fine-tuning from FDSL weights (seed {seed})"),
        figure(f"finetune-scratch-{seed}/curves.png", f"fine-tuning from scratch (seed {seed})"),
        figure(f"finetune-fdsl-{seed}/confusion.png", f"confusion matrix, FDSL (seed {seed})"),
        figure(f"finetune-scratch-{seed}/confusion.png", f"confusion matrix, scratch (seed {seed})"),
        f"<h2>Sweep</h2><p><a href='{escape(str(report_rel))}'>the sweep report</a> (settings ranked by "
        "mean &plusmn; std over seeds)</p>",
        # counts the images the browser decoded: a headless browser test reads it back from the DOM
        "<script>window.addEventListener('load',()=>{const ok=[...document.images]"
        ".filter(i=>i.complete&&i.naturalWidth>0).length;"
        "document.body.dataset.imagesLoaded=ok;});</script></body></html>"]
    atomic_write_text(out / INDEX, "\n".join(p for p in parts if p))
    return out / INDEX


def _mean_std(values: list[float]) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{100 * float(np.mean(values)):.1f} +- {100 * std:.1f}%"


def _describe(name: str, value) -> str:
    if name == "generate":
        return (f"{value['num_rows']} images, {value['num_shards']} shards, "
                f"content {value['content_sha256'][:12]}")
    if name == "preview":
        return str(value)
    if name == "pretrain":
        return f"{value['steps']} steps, loss {value['loss']:.3f}, {value['images_per_s']:.0f} images/s"
    if name.startswith("finetune"):
        base = value.get("baselines", {})
        return (f"top-1 {value['finetune_top1']:.3f} on digits ({value.get('epochs', '?')} epochs, "
                f"{value.get('num_train', '?')} images); "
                f"raw-pixel logreg {base.get('logreg_top1', float('nan')):.3f}, "
                f"1-NN {base.get('knn1_top1', float('nan')):.3f}")
    if name == "sweep":
        return f"{value['trials']} trials, {describe_best(value)}"
    return ""


def _table(steps: list[dict], total: float) -> str:
    lines = [f"{'step':20s} {'seconds':>8s}  result", "-" * 100]
    lines += [f"{s['name']:20s} {s['seconds']:8.1f}  {s['result']}" for s in steps]
    lines += ["-" * 100, f"{'total':20s} {total:8.1f}"]
    return "\n".join(lines)
