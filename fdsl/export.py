"""`fdsl export RUN --out DIR`: a run's weights as a folder ready for the Hugging Face Hub.

    fdsl export runs/pretrain/va --out hub/fdsl-va --results runs/ft/va-s0 runs/ft/va-s1
    python -c "import huggingface_hub as h; h.upload_folder(repo_id='YOU/fdsl-va', folder_path='hub/fdsl-va')"

DIR holds the run's `model.safetensors` (byte for byte), its `config.json` (fdsl's keys and timm's
Hub keys, added for run folders older than them) and a `README.md` model card: the data set
(family, parameters, fingerprint), the recipe and its source, the steps trained, and the
fine-tuning results of the `--results` runs with their seeds and the raw-pixel baselines. Then
`timm.create_model("local-dir:DIR", pretrained=True)` (or `hf-hub:YOU/fdsl-va` after the upload)
loads it. DIR is written beside its final place and renamed into it: never half a folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fdsl.atomic import check_writable
from fdsl.experiment import Experiment
from fdsl.platform.data.manifest import fingerprint, identity
from fdsl.platform.train.config import EXPERIMENT_FILE
from fdsl.platform.train.run import SUMMARY_FILE, read_metrics
from fdsl.platform.train.weights import CONFIG_FILE, WEIGHTS_FILE, hub_config
from fdsl.recipes import recipe_source
from fdsl.schema import load_json

CARD_FILE = "README.md"


def export_run(run: str | os.PathLike, out: str | os.PathLike, results: Sequence[str] = ()) -> Path:
    """Write the Hub folder of the finished run `run` into `out` (which must not exist or be empty)."""
    run, out = Path(run), check_writable(out)
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE, EXPERIMENT_FILE) if not (run / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run}: not a finished run folder ({', '.join(missing)} missing); export "
                                "a folder made by `fdsl pretrain`, `fdsl ssl` or `fdsl finetune`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out: {out} exists and is not empty; choose a new folder")
    config = load_json(run / CONFIG_FILE, {}, "export another run")
    if "pretrained_cfg" not in config:  # a run folder from before the Hub keys
        config.update(hub_config(config))
    experiment = Experiment.from_dict(load_json(run / EXPERIMENT_FILE, {}, "export another run"))
    card = model_card(run, config, experiment, [_result(Path(r)) for r in results])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(run / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(card)
        if out.exists():
            out.rmdir()  # empty: checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _result(folder: Path) -> dict:
    """One fine-tuning run's figures for the card: target, seed, top-1, the pixel baselines."""
    if not (folder / SUMMARY_FILE).is_file() or not (folder / EXPERIMENT_FILE).is_file():
        raise FileNotFoundError(f"--results: {folder} is not a finished `fdsl finetune` run "
                                f"(no {SUMMARY_FILE})")
    metrics = load_json(folder / SUMMARY_FILE, {}, "pass finished fine-tuning runs")
    finetune = load_json(folder / EXPERIMENT_FILE, {}, "pass finished fine-tuning runs").get("finetune", {})
    base = metrics.get("baselines", {})
    return {"dataset": metrics.get("dataset", finetune.get("dataset")), "seed": finetune.get("seed"),
            "num_train": metrics.get("num_train"), "epochs": metrics.get("epochs"),
            "top1": metrics.get("finetune_top1"), "weights": (metrics.get("head") or {}).get("reason", ""),
            "logreg": base.get("logreg_top1"), "knn1": base.get("knn1_top1")}


def _trainer(config: dict) -> str:
    return next((k for k in ("ssl", "finetune", "pretrain") if k in config), "pretrain")


def model_card(run: Path, config: dict, experiment: Experiment, results: list[dict]) -> str:
    """The README.md of an exported folder (Hugging Face model card, YAML front matter first)."""
    trainer = _trainer(config)
    section = config.get(trainer, {})
    rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    steps = config.get("step") or (rows[-1].get("step") if rows else None)
    arch, size = config["architecture"], config["img_size"]
    lines = ["---", "library_name: timm", "pipeline_tag: image-classification",
             "tags: [image-classification, timm, fdsl, formula-driven-supervised-learning"
             + (f", {experiment.generator}" if trainer == "pretrain" else "") + "]", "---", "",
             f"# {arch} ({size} px): {experiment.name}, {trainer}", ""]
    if trainer == "pretrain":
        data = experiment.data.to_dict()
        lines += ["Pre-trained with fdsl (Formula-Driven Supervised Learning) on formula-rendered "
                  "images: the "
                  f"`{experiment.generator}` family, {data['num_classes']} classes x "
                  f"{data['num_instances']} instances.", "",
                  "## Data set", "",
                  f"- generator: `{experiment.generator}`",
                  f"- fingerprint: `{fingerprint(identity(experiment))}` (equal data sets have equal "
                  "fingerprints however they were rendered)",
                  "- parameters:", "", "```json", json.dumps(data, indent=1), "```", ""]
    else:
        dataset = section.get("dataset", "")
        lines += [f"Trained by `fdsl {trainer}` on the target set `{dataset}`"
                  + (f" from `{config.get('weights')}`" if config.get("weights") else "") + ".", ""]
    lines += ["## Recipe", "", f"- preset: `{experiment.name}`; {recipe_source(experiment.name)}",
              f"- steps: {steps if steps is not None else 'not recorded'}",
              f"- input: {size} px, mean {config['mean']}, std {config['std']}", "",
              f"The `{trainer}` section as trained:", "", "```json", json.dumps(section, indent=1), "```", "",
              "## Transfer results", ""]
    if results:
        lines += ["| target | seed | labelled images | epochs | top-1 | logistic regression (pixels) "
                  "| 1-NN (pixels) |",
                  "|---|---|---|---|---|---|---|"]
        for r in results:
            lines.append(f"| {r['dataset']} | {r['seed']} | {r['num_train']} | {r['epochs']} | "
                         f"{_pct(r['top1'])} | {_pct(r['logreg'])} | {_pct(r['knn1'])} |")
        lines.append("")
    else:
        lines += ["No fine-tuning runs were attached (`fdsl export RUN --out DIR --results FT_RUN...`).", ""]
    lines += ["## Use", "", "```python", "import timm", "",
              'model = timm.create_model("local-dir:PATH", pretrained=True)  # hf-hub:USER/REPO once',
              "```", "",
              "A different `num_classes=` gives a new head for fine-tuning;",
              "`fdsl finetune PRESET --weights PATH` fine-tunes it with fdsl.", ""]
    return "\n".join(lines)


def _pct(value) -> str:
    return "" if value is None else f"{100 * float(value):.1f} %"
