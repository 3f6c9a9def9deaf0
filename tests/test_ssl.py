"""Small-data SSL (DINO): head, loss, EMA teacher, multi-crop, and one real Ray run at debug size."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from fdsl.platform.data.targets import load_target
from fdsl.platform.train.augment import multicrop_views
from fdsl.platform.train.dino import (
    DINOHead,
    DINOLoss,
    MultiCrop,
    build_backbone,
    dino_step,
    ema_update,
    sinkhorn_knopp,
)
from fdsl.platform.train.optim import cosine
from fdsl.platform.train.ssl import ssl
from fdsl.platform.train.streams import draw
from fdsl.presets import get_preset

CROPS = dict(img_size=16, local_size=8, num_local=2, global_scale_min=0.4, local_scale_max=0.4, hflip=0.0,
             color_jitter=0.8, blur=0.5, solarize=0.2)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores, 2 threads per process slow these small steps down a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def digits():
    """Digits as the in-memory set SSL streams (what a Ray Data task draws from)."""
    data = load_target("digits", samples_per_class=10)
    return data.train_images, data.train_labels


def multicrop_batch(ids, source, seed):
    """What one task of SSL's seeded stream computes for the rows `ids`."""
    return multicrop_views(*draw(ids, *source, seed), **CROPS)


def crops_of(batch) -> list[torch.Tensor]:
    views = [batch["global"][:, k] for k in range(2)] + [batch["local"][:, k] for k in range(2)]
    return [torch.from_numpy(v).float().div(127.5).sub(1.0) for v in views]


def tiny_dino(out_dim: int = 128):
    torch.manual_seed(0)
    backbone = build_backbone("test_vit", 16, 4, 0.0)
    student = MultiCrop(backbone, DINOHead(backbone.num_features, out_dim, hidden_dim=128, bottleneck_dim=32))
    teacher = copy.deepcopy(student).requires_grad_(False)
    return student, teacher


def test_multicrop_shapes_and_determinism(digits):
    source = digits
    a = multicrop_batch(np.arange(8), source, 3)
    b = multicrop_batch(np.arange(8), source, 3)
    assert a["global"].shape == (8, 2, 3, 16, 16) and a["local"].shape == (8, 2, 3, 8, 8)
    assert a["global"].dtype == np.uint8
    assert np.array_equal(a["global"], b["global"]) and np.array_equal(a["local"], b["local"])
    assert not np.array_equal(a["global"][:, 0], a["global"][:, 1])  # two different views


def test_head_last_layer_is_weight_normalised():
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8)
    with torch.no_grad():
        head.last_direction.mul_(7.0)  # the scale of the direction must not matter
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 32) and out.abs().max() <= 1.0 + 1e-5  # cosine logits
    assert not head.last_scale.requires_grad


def test_center_is_an_ema_of_teacher_outputs():
    loss = DINOLoss(4, center_momentum=0.9)
    teacher = torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 2.0, 0.0]])
    loss(torch.randn(8, 4), teacher, num_crops=4, teacher_temp=0.04)
    assert torch.allclose(loss.center, 0.1 * teacher.mean(0, keepdim=True))


def test_student_learns_the_teacher_targets(digits):
    """With the teacher and the centre held fixed, the DINO loss falls over a few dozen steps."""
    source = digits
    student, teacher = tiny_dino()
    loss_fn = DINOLoss(128, center_momentum=1.0)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4)
    losses = []
    for step in range(30):
        ids = np.arange(32) + 32 * step
        batch = multicrop_batch(ids, source, 0)
        losses.append(dino_step(student, teacher, loss_fn, opt, crops_of(batch), teacher_temp=0.04,
                                momentum=1.0, clip_grad=3.0))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_teacher_is_exactly_the_ema_of_the_student(digits):
    source = digits
    student, teacher = tiny_dino()
    expected = [p.detach().clone() for p in teacher.parameters()]
    loss_fn = DINOLoss(128)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for step in range(6):
        ids = np.arange(16) + 16 * step
        batch = multicrop_batch(ids, source, 0)
        m = cosine(0.996, 1.0, step, 6)
        dino_step(student, teacher, loss_fn, opt, crops_of(batch), teacher_temp=0.04, momentum=m,
                  freeze_last_layer=step == 0)
        for e, s in zip(expected, student.parameters(), strict=True):
            e.mul_(m).add_(s.detach(), alpha=1 - m)
    for e, t in zip(expected, teacher.parameters(), strict=True):
        assert torch.equal(e, t)
    moved = [not torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters(), strict=True)]
    assert any(moved)  # the teacher trails the student


def test_ema_update_formula():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_momentum_schedule_runs_from_base_to_one():
    assert cosine(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine(0.996, 1.0, 100, 100) == pytest.approx(1.0)
    assert 0.996 < cosine(0.996, 1.0, 50, 100) < 1.0


def test_bad_input_fails_before_any_worker(tmp_path):
    from fdsl.platform.train.ssl import prepare_ssl

    with pytest.raises(ValueError, match="dataset"):
        prepare_ssl(get_preset("debug-dino"), "nope", tmp_path / "a")
    with pytest.raises(ValueError, match="ssl.global_batch_size"):
        prepare_ssl(get_preset("debug-dino", ["ssl.samples_per_class=2"]), None, tmp_path / "b")
    with pytest.raises(ValueError, match="ssl.num_local_crops"):
        get_preset("debug-dino", ["ssl.num_local_crops=-1"])


@pytest.mark.slow
def test_ssl_run_gives_finetunable_weights(ray_local, tmp_path):
    """One DINO epoch on Ray Train; the teacher backbone loads as fine-tuning weights with a new head."""
    from fdsl.platform.train.finetune import build_model, head_info, resolve_weights
    from fdsl.platform.train.weights import load_pretrained

    experiment = get_preset("debug-dino", ["ssl.samples_per_class=8", "ssl.epochs=2",
                                           "ssl.global_batch_size=40", "ssl.threads_per_worker=1"])
    summary = ssl(experiment, "digits", tmp_path / "ssl")
    run = tmp_path / "ssl"
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == 0 and config["architecture"] == "test_vit" and config["img_size"] == 32
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == summary["steps"] == 4 and all(np.isfinite(r["loss"]) for r in rows)
    assert rows[0]["momentum"] == pytest.approx(0.996) and rows[-1]["momentum"] > rows[0]["momentum"]
    knn = json.loads((run / "knn.json").read_text())  # the k-NN probe: teacher vs random init
    assert knn == {k: summary[k] for k in knn} and 0.0 < knn["knn_top1"] <= 1.0
    assert 0.0 < knn["knn_top1_random_init"] <= 1.0
    assert knn["ln_out_dim"] == pytest.approx(np.log(256), abs=1e-4)
    model = load_pretrained(run, num_classes=10)
    assert model.get_classifier().out_features == 10
    spec = resolve_weights(str(run), get_preset("debug-finetune").finetune, experiment.pretrain)
    assert "no head" in head_info(spec, 10)["reason"]
    from safetensors.torch import load_file

    saved = load_file(str(run / "model.safetensors"))
    tuned = build_model(spec, 10).state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in saved.items())


def test_sinkhorn_targets_spread_a_nearly_constant_batch():
    """Near-constant teacher logits (a ViT at initialisation): plain softmax after centering is
    uniform, Sinkhorn-Knopp still gives each sample a distribution that sums to 1 and each
    prototype an equal share of the batch, with the samples' small differences sharpened."""
    logits = 1.0 + 0.01 * torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    q = sinkhorn_knopp(logits / 0.04)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(q.sum(dim=0), torch.full((16,), 64 / 16), rtol=0.05, atol=0)
    assert q.max() > 2 / 16  # not the uniform 1/16
    loss = DINOLoss(16, centering="sinkhorn")
    torch.testing.assert_close(loss.targets(logits, 0.04), q)


def test_koleo_is_large_for_crowded_features_and_trains_with_dino(digits):
    from fdsl.platform.train.dino import koleo_loss

    spread = torch.eye(8)
    crowded = torch.ones(8, 8) + 1e-3 * torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    assert koleo_loss(crowded) > koleo_loss(spread) + 3
    student, teacher = tiny_dino()
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4)
    batch = multicrop_batch(np.arange(16), digits, 0)
    loss = dino_step(student, teacher, DINOLoss(128), opt, crops_of(batch), teacher_temp=0.04, momentum=0.99,
                     koleo=0.1)
    assert np.isfinite(loss) and 0 < loss < 2 * np.log(128)


def test_lightly_center_loss_is_the_cross_entropy_the_sinkhorn_mode_writes_out():
    """Both centerings give the same cross-entropy over every pair of different views: lightly's
    (centre) and the hand-written one (Sinkhorn), compared on the centre's own targets."""
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4 * 8, 16, generator=gen), torch.randn(2 * 8, 16, generator=gen)
    loss = DINOLoss(16, student_temp=0.1)
    targets = loss.targets(teacher, 0.04).chunk(2)
    views = (student / 0.1).chunk(4)
    expected = torch.stack([torch.sum(-q * torch.log_softmax(s, dim=-1), dim=-1).mean()
                            for iq, q in enumerate(targets) for v, s in enumerate(views) if v != iq]).mean()
    torch.testing.assert_close(loss(student, teacher, num_crops=4, teacher_temp=0.04), expected)


def test_ssl_lr_is_timms_schedule_in_dinos_shape():
    """One schedule for every trainer (timm's CosineLRScheduler): for SSL, with `warmup_prefix`, it is
    DINO's: linear from 0 to lr_base x batch / 256 over the warm-up, then cosine to min_lr."""
    import math

    from fdsl.platform.train.optim import create_scheduler, dino_optimizer
    from fdsl.presets import get_preset

    cfg = get_preset("laptop-dino").ssl
    plan = cfg.schedule(1438)
    scheduler, _ = create_scheduler(cfg, dino_optimizer(torch.nn.Linear(2, 2), cfg), 1438)
    peak, warm, total = cfg.peak_lr(), plan["warmup_steps"], plan["total_steps"]
    for step in range(total + 1):
        dino = peak * step / warm if step < warm else \
            cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert math.isclose(scheduler._get_lr(step)[0], dino, rel_tol=1e-12, abs_tol=1e-18), step
