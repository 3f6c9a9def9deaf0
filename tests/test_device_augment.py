"""The device augmentation (`augment_on="device"`) against timm's CPU policy: the same crop
distribution, RandAugment's op frequencies and magnitudes, each op's values as PIL computes them,
and seeded draws (scipy's KS, chi-square and binomial tests)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from timm.data.auto_augment import LEVEL_TO_ARG, NAME_TO_OP
from timm.data.transforms import RandomResizedCropAndInterpolation

from fdsl.platform.train.augment import _posterize, crop_theta
from fdsl.platform.train.device_augment import SIGNED, DeviceAugment, apply_op, op_argument, parse_policy

SPEC = "rand-m9-mstd0.5-inc1"  # DeiT's, the full-size presets'


def _cfg(**kw):
    base = dict(img_size=32, crop_scale_min=0.08, hflip=0.0, vflip=0.0, repeated_aug=1, randaugment=SPEC)
    return SimpleNamespace(**{**base, **kw})


def test_each_ops_argument_is_timms():
    for op in parse_policy(SPEC)[0]:
        fn = LEVEL_TO_ARG[op.name]
        for m in np.arange(0, 10.01, 0.5):
            ours = float(op_argument(op.name, torch.tensor([m]))[0])
            if fn is None:
                continue
            random.seed(0)
            theirs = fn(float(m), op.hparams)[0]
            if op.name in SIGNED and op.name.endswith("Increasing"):
                theirs = abs(theirs - 1.0)  # timm: max(0.1, 1 +- level); ours: the level
                assert ours == pytest.approx(theirs, abs=1e-6) or theirs == pytest.approx(0.9, abs=1e-6) \
                    and ours == pytest.approx(0.9 * m / 10), (op.name, m)
            else:
                assert ours == pytest.approx(abs(theirs), abs=1e-6), (op.name, m, ours, theirs)


def test_crops_are_distributed_as_timms():
    n, size = 20000, 362
    theta = crop_theta(n, size, size, (0.08, 1.0), (3 / 4, 4 / 3), 0.0,
                       generator=torch.Generator().manual_seed(0))
    w, h = theta[:, 0, 0].abs().numpy(), theta[:, 1, 1].abs().numpy()
    random.seed(0)
    torch.manual_seed(0)
    img = Image.new("RGB", (size, size))
    theirs = np.array([RandomResizedCropAndInterpolation.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))[2:]
                       for _ in range(n)], dtype=np.float64)  # (h, w) in pixels
    area_t, ratio_t = theirs[:, 0] * theirs[:, 1] / size ** 2, np.log(theirs[:, 1] / theirs[:, 0])
    assert stats.ks_2samp(w * h, area_t).pvalue > 1e-3
    assert stats.ks_2samp(np.log(w / h), ratio_t).pvalue > 1e-3
    assert (w * h).min() >= 0.08 - 1e-6 and np.log(w / h).max() <= np.log(4 / 3) + 1e-6


def test_op_frequencies_and_magnitudes_are_timms():
    aug = DeviceAugment(_cfg(), "cpu", seed=0)
    n = 30000
    choice, applied, magnitude = aug.draw_layer(n)
    counts = np.bincount(choice.numpy(), minlength=len(aug.ops))
    assert len(aug.ops) == 15 and aug.num_layers == 2
    assert stats.chisquare(counts).pvalue > 1e-3  # timm: np.random.choice over the ops, uniform
    assert stats.binomtest(int(applied.sum()), n, 0.5).pvalue > 1e-3  # each op with p = 0.5
    rng = np.random.default_rng(0)  # timm: random.gauss(9, 0.5) clipped to [0, 10]
    theirs = np.clip(rng.normal(9.0, 0.5, n), 0, 10)
    assert stats.ks_2samp(magnitude.numpy(), theirs).pvalue > 1e-3
    assert float(magnitude.min()) >= 0 and float(magnitude.max()) <= 10


@pytest.mark.parametrize("name", ["AutoContrast", "Equalize", "Invert", "PosterizeIncreasing",
                                  "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
                                  "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"])
def test_colour_ops_compute_what_pil_computes(name):
    rng = np.random.default_rng(1)
    img = (rng.random((4, 24, 24, 3)) * 120 + rng.random((4, 1, 1, 3)) * 100).astype(np.uint8)
    magnitude = torch.tensor([3.0, 6.0, 9.0, 10.0])
    arg = op_argument(name, magnitude)
    ours = apply_op(name, torch.from_numpy(img).permute(0, 3, 1, 2).float(), arg).permute(0, 2, 3, 1).numpy()
    for i in range(4):
        args = () if LEVEL_TO_ARG[name] is None else (1.0 + float(arg[i]) if name in SIGNED else int(arg[i]),)
        op = _posterize if name == "PosterizeIncreasing" else NAME_TO_OP[name]  # the CPU path's: 0 bits too
        theirs = np.asarray(op(Image.fromarray(img[i]), *args, fillcolor=None, resample=None))
        diff = np.abs(ours[i].astype(int) - theirs.astype(int))
        assert diff[1:-1, 1:-1].max() <= 1, (name, i, diff.max())


def test_device_augmentation_is_seeded_and_repeats_adjacent():
    images = torch.randint(0, 256, (6, 48, 48), dtype=torch.uint8)
    labels = torch.arange(6)
    first, second = (DeviceAugment(_cfg(repeated_aug=3), "cpu", 7) for _ in range(2))
    x1, y1 = first(images, labels)
    x2, _ = second(images, labels)
    assert x1.shape == (18, 3, 32, 32) and x1.dtype == torch.uint8 and torch.equal(x1, x2)
    assert y1.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert not torch.equal(x1[0], x1[1])  # copies differently augmented
    assert not torch.equal(x1, DeviceAugment(_cfg(repeated_aug=3), "cpu", 8)(images, labels)[0])


def test_a_micro_batch_that_is_no_multiple_of_the_repeats_drops_the_last_copies():
    from fdsl.platform.train.streams import loaded_rows

    cfg = _cfg(repeated_aug=3, micro_batch_size=8, augment_on="device")
    assert loaded_rows(cfg) == 3  # 3 images x 3 copies fill a micro batch of 8
    x, y = DeviceAugment(cfg, "cpu", 0)(torch.randint(0, 256, (3, 40, 40, 3), dtype=torch.uint8),
                                        torch.tensor([5, 6, 7]))
    assert x.shape == (8, 3, 32, 32) and y.tolist() == [5, 5, 5, 6, 6, 6, 7, 7]
    assert loaded_rows(_cfg(repeated_aug=3, micro_batch_size=8, augment_on="cpu")) == 8
