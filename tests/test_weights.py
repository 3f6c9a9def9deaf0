"""The weights contract on the driver: weights that do not fit the model are refused before any worker."""

from __future__ import annotations

import json

import pytest
import torch

from fdsl.platform.train.finetune import prepare_finetune
from fdsl.presets import get_preset


def save_weights(folder, state: dict, num_classes: int = 8) -> str:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "test_vit", "img_size": 32, "patch_size": 4, "num_classes": num_classes,
        "mean": [0.5] * 3, "std": [0.5] * 3}))
    return str(folder)


@pytest.fixture(scope="module")
def state():
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=8, img_size=32, patch_size=4).state_dict()


def test_fitting_weights_count_their_tensors(tmp_path, state):
    plan, _ = prepare_finetune(get_preset("debug-finetune"), save_weights(tmp_path / "w", state), "digits",
                               tmp_path / "out")
    assert plan.extra["weights_loaded_tensors"] == len(state) - 2  # all but the replaced 8-class head


def test_weights_under_other_names_are_refused(tmp_path, state):
    prefixed = {f"backbone.{k}": v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"has no tensor 'cls_token' of test_vit .* own names"):
        prepare_finetune(get_preset("debug-finetune"), save_weights(tmp_path / "w", prefixed), "digits",
                         tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_weights_of_the_wrong_shape_are_refused(tmp_path, state):
    bad = dict(state)
    bad["pos_embed"] = torch.zeros(1, 10, bad["pos_embed"].shape[-1])
    with pytest.raises(ValueError, match=r"tensor 'pos_embed' .* has shape \[1, 10, \d+\], .* needs"):
        prepare_finetune(get_preset("debug-finetune"), save_weights(tmp_path / "w", bad), "digits",
                         tmp_path / "out")


@pytest.mark.parametrize("num_classes", [10, 0])  # a pre-training run's head, an SSL run's headless backbone
def test_timm_loads_a_run_folder_as_it_is(tmp_path, num_classes):
    """An exported folder is a timm Hub folder: `timm.create_model("local-dir:RUN", pretrained=True)`
    builds the same model as fdsl's loader and gives the same outputs; a folder written before the
    Hub keys existed still loads through fdsl's loader."""
    import timm

    from fdsl.platform.train.weights import export_weights, load_pretrained

    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=num_classes, img_size=16, patch_size=4)
    (tmp_path / "run").mkdir()  # a trainer's run folder exists before it exports
    export_weights(model, tmp_path / "run", {"architecture": "test_vit", "img_size": 16, "patch_size": 4,
                                             "num_classes": num_classes, "mean": [0.2] * 3, "std": [0.3] * 3})
    ours = load_pretrained(tmp_path / "run").eval()
    theirs = timm.create_model(f"local-dir:{tmp_path / 'run'}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x)) and torch.equal(model.eval()(x), theirs(x))
    assert tuple(theirs.pretrained_cfg["mean"]) == (0.2,) * 3
    assert tuple(theirs.pretrained_cfg["input_size"]) == (3, 16, 16)
    # an older folder: fdsl's keys only
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    old = {k: v for k, v in config.items() if k not in ("model_args", "pretrained_cfg")}
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    with torch.no_grad():
        assert torch.equal(load_pretrained(tmp_path / "run").eval()(x), ours(x))
