"""The FDSL effect of every laptop preset, end to end on this machine, beside scratch and raw pixels.

    .venv/bin/python benchmarks/fdsl_effect.py [--families visualatom,fractaldb,...] [--seeds 3]
        [--targets digits,idx:/usr/share/datasets/fashion-mnist] [--samples-per-class 10] [--out DIR]

For each family F it runs exactly the commands of docs/finetune.md, through the platform's own
functions on one local Ray (2 CPUs):

    fdsl generate laptop-F --out D;  fdsl pretrain laptop-F --data D --out R
    fdsl finetune laptop-F --weights R       --dataset T --samples-per-class 10 --set finetune.seed=S
    fdsl finetune laptop-F --weights scratch --dataset T --samples-per-class 10 --set finetune.seed=S

A seed fixes the labelled subset, the new head, the data order and the augmentation, so the arms
are paired. Each family's scratch arm is its own preset's command: a scratch network is normalised
like the preset's pre-training (the family's pixel mean/std), so the two arms of a family differ in
their weights only, and scratch figures differ a little from family to family. Prints one line per
run, per target a table per family of mean +- std top-1 of both arms, the paired difference and its
wins, beside the raw-pixel baselines of the same subsets (logistic regression, 1-NN), the seconds
of each family's four commands, and a last line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fdsl.presets import get_preset

FAMILIES = ("visualatom", "fractaldb", "rcdb", "exfractaldb", "onepfrac")
FASHION = "idx:/usr/share/datasets/fashion-mnist"


def log(*parts) -> None:
    print(*parts, flush=True)


def quiet(fn, *args, **kwargs):
    """Run a platform function with its own console lines kept out of the benchmark's."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def pretrain_family(family: str, root: Path) -> tuple[str, dict]:
    from fdsl.platform.data.synthesis import generate
    from fdsl.platform.train.pretrain import pretrain

    start = time.perf_counter()
    quiet(generate, get_preset(f"laptop-{family}"), root / f"data-{family}", log=lambda *a, **k: None)
    generated = time.perf_counter() - start
    summary = quiet(pretrain, get_preset(f"laptop-{family}"), str(root / f"data-{family}"),
                    root / f"pretrain-{family}")
    log_path = root / f"pretrain-{family}" / "metrics.jsonl"
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    first = float(np.mean([r["loss"] for r in rows[:100]]))
    info = {"generate_s": round(generated, 1),
            "pretrain_s": round(time.perf_counter() - start - generated, 1),
            "steps": summary["steps"], "first_loss": round(first, 3), "final_loss": round(summary["loss"], 3),
            "ln_classes": round(float(np.log(get_preset(f"laptop-{family}").data.num_classes)), 3),
            "images_per_s": summary["images_per_s"]}
    log(f"[{family}] generated in {generated:.0f}s; pre-trained {summary['steps']} steps in "
        f"{info['pretrain_s']:.0f}s, loss {first:.2f} -> {summary['loss']:.2f} (ln C = {info['ln_classes']})")
    return summary["model"], info


def finetune_arm(preset: str, weights: str, target: str, seed: int, spc: int, out: Path) -> dict:
    from fdsl.platform.train.finetune import finetune

    experiment = get_preset(preset, [f"finetune.samples_per_class={spc}", f"finetune.seed={seed}"])
    start = time.perf_counter()
    result = quiet(finetune, experiment, weights, target, out)
    result["command_s"] = round(time.perf_counter() - start, 1)
    return result


def _slug(target: str) -> str:
    return target.split(":")[0] if ":" not in target else Path(target.split(":", 1)[1]).name


def _stats(values) -> dict:
    top1 = np.array(values, dtype=float)
    return {"top1": [round(float(t), 4) for t in top1], "top1_mean": round(float(top1.mean()), 4),
            "top1_std": round(float(top1.std(ddof=1)) if len(top1) > 1 else 0.0, 4)}


def table(target: str, results: dict[str, dict[str, list[dict]]], spc: int) -> dict:
    """Print and return per family both arms' figures on one target, and the raw-pixel baselines."""
    summary = {}
    # the labelled subset depends on the seed only: one family's scratch runs carry every arm's baselines
    any_scratch = next(iter(results.values()))["scratch"]
    log(f"\n{target}, {spc} labelled images per class, {len(any_scratch)} paired seeds")
    log(f"{'family':12s} {'FDSL top-1':>15s} {'scratch top-1':>15s} {'FDSL - scratch':>16s} {'wins':>5s}"
        "   per seed (points)")
    for family, arms in results.items():
        fdsl = _stats([r["finetune_top1"] for r in arms["fdsl"]])
        scratch = _stats([r["finetune_top1"] for r in arms["scratch"]])
        delta = _stats(np.array(fdsl["top1"]) - np.array(scratch["top1"]))
        entry = {"fdsl": {**fdsl, "command_s": [r["command_s"] for r in arms["fdsl"]]},
                 "scratch": {**scratch, "command_s": [r["command_s"] for r in arms["scratch"]]},
                 "delta": delta["top1"], "delta_mean": delta["top1_mean"], "delta_std": delta["top1_std"],
                 "wins": sum(d > 0 for d in delta["top1"])}
        summary[family] = entry
        log(f"{family:12s} {100 * fdsl['top1_mean']:8.1f} +- {100 * fdsl['top1_std']:3.1f}"
            f" {100 * scratch['top1_mean']:8.1f} +- {100 * scratch['top1_std']:3.1f}"
            f" {100 * entry['delta_mean']:+9.1f} +- {100 * entry['delta_std']:3.1f} "
            f"{entry['wins']:>3d}/{len(entry['delta'])}   "
            + " ".join(f"{100 * d:+.1f}" for d in entry["delta"]))
    for key, label in (("logreg_top1", "logreg pixels"), ("knn1_top1", "1-NN pixels")):
        summary[key] = _stats([r["baselines"][key] for r in any_scratch])
        log(f"{label:14s} {100 * summary[key]['top1_mean']:6.1f} +- {100 * summary[key]['top1_std']:3.1f}"
            + " " * 42 + " ".join(f"{100 * t:.1f}" for t in summary[key]["top1"]))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--targets", default="digits," + FASHION)
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    from fdsl.platform.connect import connect

    start = time.perf_counter()
    families = [f for f in args.families.split(",") if f]
    targets = [t for t in args.targets.split(",") if t]
    spc = args.samples_per_class
    connect(None, 2)
    with tempfile.TemporaryDirectory(prefix="fdsl-effect-") as tmp:
        root = Path(args.out or tmp).absolute()
        root.mkdir(parents=True, exist_ok=True)
        weights, stages = {}, {}
        for family in families:
            weights[family], stages[family] = pretrain_family(family, root)
        report = {}
        for target in targets:
            results = {f: {"fdsl": [], "scratch": []} for f in families}
            for seed in range(args.seeds):
                slug = f"{_slug(target)}-{seed}"
                for family in families:
                    for arm, w in (("fdsl", weights[family]), ("scratch", "scratch")):
                        r = finetune_arm(f"laptop-{family}", w, target, seed, spc,
                                         root / f"finetune-{family}-{arm}-{slug}")
                        results[family][arm].append(r)
                        log(f"[{family} {arm}] {target} seed {seed}: top-1 {r['finetune_top1']:.4f} "
                            f"(logreg {r['baselines']['logreg_top1']:.4f}), {r['command_s']:.0f}s")
            report[target] = table(target, results, spc)
        # one preset's four commands: generate + pretrain + two fine-tunings (on the first target)
        for family in families if targets else ():
            first = report[targets[0]][family]
            two = first["fdsl"]["command_s"][0] + first["scratch"]["command_s"][0]
            stage = stages[family]
            stage["four_commands_s"] = round(stage["generate_s"] + stage["pretrain_s"] + two, 1)
            log(f"laptop-{family}: generate + pretrain + 2 fine-tunings = {stage['four_commands_s']:.0f}s")
    seconds = time.perf_counter() - start
    log(f"total {seconds:.0f}s")
    print(json.dumps({"benchmark": "fdsl_effect", "samples_per_class": spc, "seeds": args.seeds,
                      "targets": report, "stages": stages, "seconds": round(seconds, 1),
                      "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
