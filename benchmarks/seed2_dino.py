"""Seed 2 of the mission, measured: small-data DINO on the target's own images vs scratch vs FDSL.

    .venv/bin/python benchmarks/seed2_dino.py --out runs/seed2 [--seeds 3] [--finetune-seeds 3]
        [--targets digits,idx:/usr/share/datasets/fashion-mnist]

Seed 2 (small-data self-supervised ViTs, after Gani et al. BMVC'22) claims that DINO on the small
target's own training images is a better initialisation than scratch. This measures it at laptop
size against scratch and against FDSL weights of the same backbone (timm `test_vit`, 16 px), with
pre-training seeds and paired fine-tuning seeds, through the platform's own commands:

    fdsl ssl laptop-dino --dataset T [--samples-per-class 150] --set ssl.seed=S   --out R/dino-T-sS
    fdsl generate laptop-visualatom --set data.seed=S                              --out R/va-data-sS
    fdsl pretrain laptop-visualatom --data R/va-data-sS --set pretrain.seed=S     --out R/va-sS
    fdsl sweep R/seed2-T.yaml --out R/sweep-T     # per target T: weights axis {dino-T-s{seed}, va-s{seed}}

Each target's sweep is seed-designed (pretrain_seeds = --seeds, finetune_seeds = --finetune-seeds):
its `{seed}` weights name each pre-training run, its scratch arm runs once per fine-tuning seed, and
its report gives each source's effect over scratch (two-stage t interval over the pre-training runs)
and the verdicts of three hypotheses. DINO on Fashion-MNIST uses 150 training images per class
(1,500, the size of digits' 1,438). Runs that already exist are kept (a re-run finishes the study).
Prints the table of docs/replications.md and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

FASHION = "idx:/usr/share/datasets/fashion-mnist"
SLUGS = {"digits": "digits", FASHION: "fashion"}
SSL_EXTRA = {FASHION: ["--samples-per-class", "150"]}
"""DINO's training pool per target: digits' 1,438 training images; 1,500 of Fashion-MNIST's."""
GANI = ("Gani et al. BMVC'22 (Seed 2): ViT-Tiny on CIFAR-10 96.4 % with self-supervised init vs "
        "93.6 % from scratch")


def slug(target: str) -> str:
    """A target's short name in run and sweep folder names."""
    return SLUGS.get(target, Path(target.split(":", 1)[-1]).name)


def fdsl(*args: str) -> None:
    """One fdsl command, its output kept in the study's log; a failure stops the study."""
    cmd = [sys.executable, "-m", "fdsl.cli", *args]
    print("$ fdsl " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def done(run: Path) -> bool:
    return (run / "model.safetensors").is_file()


def sweep_file(target: str, root: Path, seeds: int, finetune_seeds: int) -> dict:
    dino, va = str(root / f"dino-{slug(target)}-s{{seed}}"), str(root / "va-s{seed}")
    return {
        "base": "laptop-visualatom",
        "overrides": ["finetune.eval_every=50"],  # val top-1 at epochs 50 and 100: the verdicts read the last
        "space": {"weights": {"grid": [dino, va]}, "finetune.dataset": {"grid": [target]}},
        "pretrain_seeds": seeds,
        "finetune_seeds": finetune_seeds,
        "hypotheses": [
            {"claim": "DINO on the target's own training images beats scratch", "source": GANI,
             "better": {"weights": dino}},
            {"claim": "FDSL (laptop-visualatom) beats scratch", "source": "docs/finetune.md",
             "better": {"weights": va}},
            {"claim": "FDSL beats DINO of the same backbone", "source": "fdsl's question",
             "better": {"weights": va}, "worse": {"weights": dino}},
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the study's folder (runs are kept and re-used)")
    parser.add_argument("--seeds", type=int, default=3, help="pre-training seeds of each weight source")
    parser.add_argument("--finetune-seeds", type=int, default=3)
    parser.add_argument("--targets", default="digits," + FASHION)
    args = parser.parse_args()
    root = Path(args.out).absolute()
    root.mkdir(parents=True, exist_ok=True)
    targets = [t for t in args.targets.split(",") if t]
    start = time.perf_counter()
    for seed in range(args.seeds):
        for target in targets:
            run = root / f"dino-{slug(target)}-s{seed}"
            if not done(run):
                fdsl("ssl", "laptop-dino", "--dataset", target, *SSL_EXTRA.get(target, []),
                     "--set", f"ssl.seed={seed}", "--out", str(run))
        if not done(root / f"va-s{seed}"):
            data = root / f"va-data-s{seed}"
            fdsl("generate", "laptop-visualatom", "--set", f"data.seed={seed}", "--out", str(data))
            fdsl("pretrain", "laptop-visualatom", "--data", str(data), "--set", f"pretrain.seed={seed}",
                 "--set", f"data.seed={seed}", "--out", str(root / f"va-s{seed}"))
    pretrained = time.perf_counter() - start
    results = {}
    for target in targets:
        name = slug(target)
        spec = root / f"seed2-{name}.yaml"
        spec.write_text(yaml.safe_dump(sweep_file(target, root, args.seeds, args.finetune_seeds),
                                       sort_keys=False))
        out = root / f"sweep-{name}"
        if not (out / "effects.json").is_file():
            fdsl("sweep", str(spec), "--out", str(out))
        results[name] = json.loads((out / "effects.json").read_text())
    seconds = time.perf_counter() - start
    print("\n| target | weights | FDSL/DINO - scratch | 95 % CI | n | wins | top-1 | scratch top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for short, report in results.items():
        for s in report["settings"]:
            name = Path(s["params"]["weights"]).name.replace("{seed}", "S")
            print(f"| {short} | {name} | {100 * s['effect']:+.1f} | [{100 * s['low']:+.1f}, "
                  f"{100 * s['high']:+.1f}] | {s['n_pretrain']} x {s['n_finetune']} | {s['wins']}/{s['n']} | "
                  f"{100 * s['top1']:.1f} +- {100 * s['top1_std']:.1f} | {100 * s['scratch']:.1f} |")
    print("\n| target | hypothesis | verdict | difference | 95 % CI |\n|---|---|---|---|---|")
    for short, report in results.items():
        for v in report["verdicts"]:
            figures = (f"{100 * v['difference']:+.1f} | [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"
                       if "difference" in v else f"{v.get('why', '')} | ")
            print(f"| {short} | {v['claim']} | {v['verdict']} | {figures} |")
    print(f"pre-training {pretrained:.0f}s, in all {seconds:.0f}s")
    targets_out = {short: {"settings": r["settings"], "verdicts": r["verdicts"],
                          "pixel_baselines": r.get("pixel_baselines")} for short, r in results.items()}
    print(json.dumps({"benchmark": "seed2_dino", "seeds": args.seeds, "finetune_seeds": args.finetune_seeds,
                      "targets": targets_out, "pretrain_s": round(pretrained, 1),
                      "seconds": round(seconds, 1), "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
