"""`fdsl export`: a run folder as a Hugging Face Hub folder that timm loads, with its model card."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from fdsl.cli import main
from fdsl.platform.data.manifest import fingerprint, identity
from fdsl.platform.train.run import write_experiment
from fdsl.platform.train.weights import export_weights, load_pretrained
from fdsl.presets import get_preset, preset_names


def _pretrain_run(folder, hub_keys: bool = True):
    """A run folder as `fdsl pretrain` leaves it (weights, config.json, experiment.json, metrics)."""
    experiment = get_preset("laptop-visualatom")
    write_experiment(folder, experiment)
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=32, img_size=16, patch_size=4)
    export_weights(model, folder, {"architecture": "test_vit", "img_size": 16, "patch_size": 4,
                                   "num_classes": 32, "mean": [0.2] * 3, "std": [0.3] * 3, "step": 3000,
                                   "pretrain": experiment.pretrain.to_dict()})
    if not hub_keys:  # a folder written before config.json carried timm's keys
        config = json.loads((folder / "config.json").read_text())
        for key in ("model_args", "pretrained_cfg"):
            config.pop(key)
        (folder / "config.json").write_text(json.dumps(config))
    return experiment, model


def _finetune_run(folder, seed: int, top1: float):
    folder.mkdir(parents=True)
    (folder / "experiment.json").write_text(json.dumps({"finetune": {"seed": seed, "dataset": "digits"}}))
    (folder / "metrics.json").write_text(json.dumps({
        "finetune_top1": top1, "num_train": 100, "epochs": 100, "dataset": "digits",
        "baselines": {"logreg_top1": 0.86, "knn1_top1": 0.9}}))
    return str(folder)


def test_export_writes_a_folder_timm_loads_with_a_model_card(tmp_path, capsys):
    experiment, model = _pretrain_run(tmp_path / "run", hub_keys=False)
    results = [_finetune_run(tmp_path / f"ft{s}", s, t) for s, t in ((0, 0.71), (1, 0.74))]
    out = tmp_path / "hub" / "fdsl-va"
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--results", *results]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    weights = (out / "model.safetensors").read_bytes()
    assert weights == (tmp_path / "run" / "model.safetensors").read_bytes()
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n")
    assert fingerprint(identity(experiment)) in card
    assert "`visualatom`" in card and "laptop-visualatom" in card
    assert "| digits | 1 | 100 | 100 | 74.0 % | 86.0 % | 90.0 % |" in card and "steps: 3000" in card
    assert "timm.create_model('local-dir:" in capsys.readouterr().out
    assert not [p for p in (tmp_path / "hub").iterdir() if p.name != "fdsl-va"]  # no temporary left


def test_export_refuses_bad_input_without_writing(tmp_path, capsys):
    _pretrain_run(tmp_path / "run")
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a finished run folder" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "o2"), "--results",
                 str(tmp_path / "run")]) == 2
    assert "not a finished `fdsl finetune` run" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("preset", [name for name in preset_names() if name.startswith("laptop-")])
def test_every_laptop_family_exports_a_folder_timm_loads_as_fdsl_does(preset, tmp_path):
    """Each laptop preset's weights as its trainer writes them (its architecture, sizes and section;
    DINO's headless teacher backbone): `fdsl export`, then timm's `local-dir:` loader gives the same
    logits (or features) as fdsl's own `load_pretrained` on the run folder."""
    experiment = get_preset(preset)
    dino = preset.endswith("-dino")  # an SSL preset: its weights are the teacher backbone
    cfg = experiment.pretrain
    num_classes = 0 if dino else experiment.data.num_classes
    run = tmp_path / "run"
    write_experiment(run, experiment)
    torch.manual_seed(0)
    shape = {"img_size": cfg.img_size, "patch_size": cfg.patch_size}
    model = timm.create_model(cfg.model, num_classes=num_classes, **shape)
    section = {"ssl": experiment.ssl.to_dict()} if dino else {"pretrain": cfg.to_dict()}
    export_weights(model, run, {"architecture": cfg.model, **shape, "num_classes": num_classes,
                                "mean": [0.5] * 3, "std": [0.25] * 3, "step": 1, **section})
    out = tmp_path / "hub"
    assert main(["export", str(run), "--out", str(out)]) == 0
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        hub = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
        ours = load_pretrained(run).eval()(x)
    assert hub.shape == (2, num_classes or model.num_features) and torch.equal(hub, ours)
    card = (out / "README.md").read_text()  # what the weights were trained on
    assert (f"`{experiment.ssl.dataset}`" if dino else f"`{experiment.generator}`") in card, card
