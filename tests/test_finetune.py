"""Fine-tuning: weights resolution, bad input, and real Ray Train runs at debug size.

The "FDSL weights" here are a timm model exported in the exact format `fdsl pretrain` writes
(model.safetensors + config.json), with an 8-class head like a debug FractalDB run: that is what the
fine-tuning side reads, and it keeps this module fast. One Ray session serves the whole module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_fdsl
from test_baselines import digits_subset

from fdsl.cli import main
from fdsl.platform.train.evaluators import pixel_baselines
from fdsl.platform.train.finetune import build_model, finetune, head_info, prepare_finetune, resolve_weights
from fdsl.presets import get_preset

pytestmark = pytest.mark.slow  # Ray and real training runs


def export_weights(folder, num_classes: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A test_vit (32px, patch 4) saved as `fdsl pretrain` saves its model; returns its state."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("test_vit", num_classes=num_classes, img_size=32, patch_size=4)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architecture": "test_vit", "img_size": 32, "patch_size": 4, "num_classes": num_classes,
        "in_chans": 3, "mean": [0.11] * 3, "std": [0.2] * 3}))
    return state


def debug(*overrides: str):
    """debug-finetune cut to seconds: 10 digits per class, 2 epochs."""
    return get_preset("debug-finetune", ["finetune.samples_per_class=10", "finetune.epochs=2",
                                         "finetune.global_batch_size=32", "finetune.loader_probe_images=128",
                                         *overrides])


# --- no Ray: resolution and checks ---------------------------------------------------------------
def test_head_info_reports_new_and_kept_heads(tmp_path):
    export_weights(tmp_path / "w8", 8)
    export_weights(tmp_path / "w10", 10)
    cfg, pre = debug().finetune, debug().pretrain
    mismatch = head_info(resolve_weights(str(tmp_path / "w8"), cfg, pre), 10)
    assert mismatch["new_head"] and mismatch["weights_num_classes"] == 8 and "new head" in mismatch["reason"]
    same = head_info(resolve_weights(str(tmp_path / "w10" / "model.safetensors"), cfg, pre), 10)
    assert not same["new_head"] and "kept" in same["reason"]
    assert head_info(resolve_weights("scratch", cfg, pre), 10)["new_head"]


def test_new_head_keeps_the_backbone(tmp_path):
    state = export_weights(tmp_path / "w", 8)
    spec = resolve_weights(str(tmp_path / "w"), debug().finetune, debug().pretrain)
    model = build_model(spec, 10)
    assert model.get_classifier().out_features == 10
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head."))


def test_scratch_takes_the_pretrain_architecture():
    spec = resolve_weights("scratch", debug().finetune, debug().pretrain)
    assert (spec.architecture, spec.img_size, spec.patch_size) == ("test_vit", 32, 4)


def test_timm_weights_come_from_the_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    cfg, pre = debug().finetune, debug().pretrain
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="no local copy"):
        resolve_weights("timm:test_vit", cfg, pre)
    with pytest.raises(ValueError, match="expected a timm model name"):
        resolve_weights("timm:no_such_net", cfg, pre)
    # a cache entry laid out as huggingface_hub writes it: the same name now resolves, offline
    snapshot = tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    torch.manual_seed(1)
    source = timm.create_model("test_vit")
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    spec = resolve_weights("timm:test_vit", cfg, pre)
    assert spec.file == str(snapshot / "model.safetensors")
    model = build_model(spec, 10)
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_weights_fine_tune_at_another_img_size(tmp_path):
    """32 px weights at 48 px: timm resamples the position embedding, every other tensor is kept."""
    state = export_weights(tmp_path / "w", 8)
    spec = resolve_weights(str(tmp_path / "w"), debug("finetune.img_size=48").finetune, None)
    assert (spec.img_size, spec.weights_img_size) == (48, 32)
    model = build_model(spec, 10)
    assert model.pos_embed.shape[1] == 1 + (48 // 4) ** 2 != state["pos_embed"].shape[1]
    assert torch.equal(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 10)


def test_bad_input_fails_before_any_worker(tmp_path):
    export_weights(tmp_path / "w", 8)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        prepare_finetune(debug(), str(tmp_path / "missing"), "digits", tmp_path / "o1")
    with pytest.raises(ValueError, match="dataset"):
        prepare_finetune(debug(), "scratch", "mnist", tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_finetune(debug(), "scratch", "idx:/no/such/folder", tmp_path / "o3")
    with pytest.raises(ValueError, match="finetune.img_size: got 30, expected 0 .* patch size 4"):
        prepare_finetune(debug("finetune.img_size=30"), str(tmp_path / "w"), "digits", tmp_path / "o4")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    (broken / "config.json").write_text((tmp_path / "w" / "config.json").read_text())
    with pytest.raises(ValueError, match="safetensors"):
        prepare_finetune(debug(), str(broken), "digits", tmp_path / "o5")
    used = tmp_path / "used"
    used.mkdir()
    (used / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError):
        prepare_finetune(debug(), "scratch", "digits", used)
    with pytest.raises(ValueError, match="finetune.optimizer"):
        debug("finetune.optimizer=rmsprop")


def test_cli_user_errors_exit_2_with_one_line(tmp_path):
    result = run_fdsl("finetune", "debug-finetune", "--weights", str(tmp_path / "nope"),
                      "--dataset", "digits", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "not a finished run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_resume_refusals_exit_2_with_one_line(tmp_path, capsys):
    """`--resume` continues the same run only: no run there, other settings, or a finished run are
    refused before Ray starts (the CLI in this process: the autouse fixture fails a test that leaves
    a Ray behind), in one line naming what differs; nothing in the folder changes."""
    out = tmp_path / "run"
    argv = ["finetune", "debug-finetune", "--weights", "scratch", "--out", str(out), "--resume"]

    def refused(expected: str, *extra: str) -> None:
        code = main([*argv, *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert expected in err, err

    refused("no run to resume")
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps(get_preset("debug-finetune").to_dict()))
    refused("finetune.lr: got 0.5, expected", "--set", "finetune.lr=0.5")
    (out / "metrics.json").write_text("{}")
    refused("the run is finished (metrics.json is there)")
    assert sorted(p.name for p in out.iterdir()) == ["experiment.json", "metrics.json"]


# --- Ray Train runs ------------------------------------------------------------------------------
def test_linear_probe_from_fdsl_weights_with_deepspeed(ray_local, tmp_path):
    """8-class weights -> 10-class digits: new head, reported; the backbone stays frozen bit for bit."""
    from safetensors.torch import load_file

    from fdsl.platform.train.weights import load_pretrained

    state = export_weights(tmp_path / "fdsl", 8)
    experiment = debug("finetune.linear_probe=true", "finetune.use_deepspeed=true", "finetune.zero_stage=1",
                       "finetune.num_workers=1", "finetune.cpus_per_worker=1", "finetune.lr=0.01")
    out = tmp_path / "probe"
    summary = finetune(experiment, str(tmp_path / "fdsl" / "model.safetensors"), "digits", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["head"]["new_head"] and metrics["head"]["weights_num_classes"] == 8
    assert metrics["head"]["target_num_classes"] == 10 and summary["head"] == metrics["head"]
    assert metrics["trained_parameters"] == ["head.weight", "head.bias"]
    assert metrics["weights"]["kind"] == "run" and metrics["linear_probe"]
    tuned = load_file(str(out / "model.safetensors"))
    for name, value in state.items():
        if not name.startswith("head."):
            assert torch.equal(tuned[name], value), name
    assert tuned["head.weight"].shape == (10, 64)
    assert (out / "confusion.png").stat().st_size > 0
    assert np.load(out / "confusion.npy").sum() == metrics["num_val"] == 359
    assert load_pretrained(out).get_classifier().out_features == 10


def test_scratch_finetune_on_two_ddp_workers(ray_local, tmp_path):
    out = tmp_path / "scratch"
    summary = finetune(debug(), "scratch", None, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["curve"]] == [1, 2]
    assert metrics["world_size"] == 2 and metrics["num_train"] == 100 and metrics["num_classes"] == 10
    assert 0.0 <= metrics["finetune_top1"] <= metrics["finetune_top5"] <= 1.0
    assert metrics["head"]["reason"].startswith("scratch")
    throughput = metrics["throughput"]
    assert throughput["loader_images_per_s"] > 0 and throughput["train_images_per_s"] > 0
    assert 0.0 <= throughput["data_wait_fraction"] <= 1.0 and "loader_to_train_ratio" in throughput
    assert len(metrics["confusion"]) == 10 and summary["finetune_top1"] == metrics["finetune_top1"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["finetune_top1"] == metrics["finetune_top1"]
    # raw-pixel baselines of the same 100 labelled images, scored on the same 359 val images
    base = metrics["baselines"]
    again = pixel_baselines(*digits_subset(debug()))
    assert base["fit_rows"] == 100 and {k: v for k, v in base.items() if k != "seconds"} == \
        {k: v for k, v in again.items() if k != "seconds"}
    assert summary["baseline_logreg_top1"] == base["logreg_top1"] and 0.5 < base["knn1_top1"] <= 1.0



def test_local_mode_matches_one_ray_train_worker(ray_local, tmp_path):
    """num_workers=0 (Ray Train's local mode: the loop in this process, no worker group to start)
    trains exactly as one Ray Train worker does: the same curve, number for number."""
    curves = {}
    for workers in (0, 1):
        out = tmp_path / f"workers-{workers}"
        experiment = debug(f"finetune.num_workers={workers}", "finetune.threads_per_worker=1",
                           "finetune.cpus_per_worker=0.5", "finetune.loader_probe_images=0")
        finetune(experiment, "scratch", None, out)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["world_size"] == 1 and "loader_images_per_s" not in metrics["throughput"]
        curves[workers] = [(r["epoch"], r["train_loss"], r["finetune_loss"]) for r in metrics["curve"]]
    assert len(curves[0]) == 2 and curves[0] == curves[1]


def test_stream_ids_are_split_as_from_items_split_them_without_a_python_object_per_row(ray_local):
    """The stream's row ids are Arrow arrays, one per block (8 bytes a row on the driver), split
    into the same blocks as `from_items` made of one dict per row: the same batches, the same
    bytes; the memory estimate counts them."""
    import ray.data

    from fdsl.platform.train.memory import ID_BYTES, estimate_bytes
    from fdsl.platform.train.streams import id_rows

    def blocks(ds):
        return [b["id"].tolist() for b in ds.iter_batches(batch_size=None, batch_format="numpy")]

    for rows, block_rows in ((1000, 96), (7, 3), (5, 64)):
        items = ray.data.from_items([{"id": i} for i in range(rows)],
                                    override_num_blocks=max(1, -(-rows // block_rows)))
        assert blocks(id_rows(rows, block_rows)) == blocks(items)
    shape = {"params": 10**6, "dim": 192, "depth": 12, "heads": 3, "patch": 16, "prefix": 1}
    assert estimate_bytes(shape, 8, (224,), 1, stream_rows=50_000_000) - estimate_bytes(shape, 8, (224,), 1) \
        == ID_BYTES * 50_000_000
