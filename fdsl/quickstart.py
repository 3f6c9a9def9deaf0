"""The whole pipeline at debug size on a local Ray: what `make quickstart` runs.

    generate debug-fractaldb -> preview -> pre-train a tiny ViT (DeepSpeed, 2 workers)
    -> fine-tune on digits from those weights and from scratch -> a 2-trial sweep -> its report

Everything lands in one folder (default runs/quickstart); the end prints a summary table and the
report's path. A second run reuses the data sets (verified against their manifests) and re-runs
the training steps into fresh folders.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from fdsl.atomic import check_writable

QUICKSTART_SWEEP = "quickstart"
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
    """Run every step into `out`; returns {step: summary} and prints the table."""
    import ray

    from fdsl.platform.connect import connect
    from fdsl.platform.data.synthesis import generate
    from fdsl.platform.train.finetune import finetune
    from fdsl.platform.train.pretrain import pretrain
    from fdsl.platform.tune.sweep import run_sweep
    from fdsl.presets import get_preset
    from fdsl.preview import preview_dataset
    from fdsl.sweeps import check_sweep, get_sweep

    out = claim_folder(out)
    started_here = connect(None, num_cpus)
    rows: list[tuple[str, float, str]] = []
    results: dict[str, dict] = {}

    def step(name: str, fn):
        log(f"\n== quickstart: {name}")
        start = time.perf_counter()
        value = fn()
        rows.append((name, time.perf_counter() - start, _describe(name, value)))
        results[name] = value if isinstance(value, dict) else {"path": str(value)}
        return value

    try:
        data = out / "data"
        step("generate", lambda: generate(get_preset("debug-fractaldb"), data).manifest)
        step("preview", lambda: preview_dataset(data, out / "preview.png"))
        for stale in ("pretrain", "finetune-fdsl", "finetune-scratch", "sweep"):
            shutil.rmtree(out / stale, ignore_errors=True)
        pre = step("pretrain", lambda: pretrain(get_preset("debug-vit"), str(data), out / "pretrain"))
        tune = get_preset("debug-finetune")
        step("finetune-fdsl", lambda: finetune(tune, pre["model"], "digits", out / "finetune-fdsl"))
        step("finetune-scratch", lambda: finetune(tune, "scratch", "digits", out / "finetune-scratch"))
        sweep = get_sweep(QUICKSTART_SWEEP)
        step("sweep", lambda: run_sweep(sweep, QUICKSTART_SWEEP, out / "sweep", check_sweep(sweep)))
    finally:
        if started_here:
            ray.shutdown()
    total = sum(r[1] for r in rows)
    log("\n" + _table(rows, total))
    log(f"\nquickstart done in {total:.0f}s. Report: {results['sweep']['report']}")
    log(f"Preview of the data set: {out / 'preview.png'}")
    return results


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
        return (f"top-1 {value['finetune_top1']:.3f} on digits ({value.get('epochs', '?')} epochs); "
                f"raw-pixel logreg {base.get('logreg_top1', float('nan')):.3f}, "
                f"1-NN {base.get('knn1_top1', float('nan')):.3f}")
    if name == "sweep":
        from fdsl.platform.tune.sweep import describe_best

        return f"{value['trials']} trials, {describe_best(value)}, {value['generations']} data sets generated"
    return ""


def _table(rows: list[tuple[str, float, str]], total: float) -> str:
    lines = [f"{'step':18s} {'seconds':>8s}  result", "-" * 90]
    lines += [f"{name:18s} {secs:8.1f}  {desc}" for name, secs, desc in rows]
    lines += ["-" * 90, f"{'total':18s} {total:8.1f}"]
    return "\n".join(lines)
