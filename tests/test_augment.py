"""The per-image augmentation policies of the recipes: flips, padded crops, AutoAugment, repeats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fdsl.platform.train.augment import augment_images, batch_resized_crop
from fdsl.platform.train.config import FinetuneConfig

IMAGES = (np.random.default_rng(0).random((8, 32, 32, 3)) * 255).astype(np.uint8)
GANI = dict(img_size=32, randaugment="", crop_scale_min=0.08, hflip=0.5, crop="padded", crop_padding=4,
            autoaugment="cifar10")


def run(seed: int, **kwargs) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return augment_images(IMAGES, np.arange(8), **kwargs)


def test_gani_policy_is_seeded_and_repeats_stay_adjacent():
    a, b, c = run(0, repeats=3, **GANI), run(0, repeats=3, **GANI), run(1, repeats=3, **GANI)
    assert a["image"].shape == (24, 3, 32, 32) and a["image"].dtype == np.uint8
    assert np.array_equal(a["image"], b["image"]) and not np.array_equal(a["image"], c["image"])
    assert a["label"].tolist() == [k for k in range(8) for _ in range(3)]
    assert not np.array_equal(a["image"][0], a["image"][1])  # three different views of image 0


def test_padded_crop_shifts_by_at_most_the_padding_and_fills_with_zeros():
    flat = np.full((64, 32, 32, 3), 200, np.uint8)
    torch.manual_seed(0)
    out = augment_images(flat, np.zeros(64), img_size=32, randaugment="", crop_scale_min=0.08, hflip=0.0,
                         crop="padded", crop_padding=4)["image"]
    zero_cols = (out[:, 0] == 0).all(axis=1).sum(axis=1)  # fully black columns per image
    zero_rows = (out[:, 0] == 0).all(axis=2).sum(axis=1)
    assert zero_cols.max() <= 4 and zero_rows.max() <= 4 and (zero_cols + zero_rows).max() > 0
    assert set(np.unique(out)) <= {0, 200}


def test_vertical_flip_in_the_batched_crop():
    img = np.zeros((1, 16, 16), np.uint8)
    img[0, :8] = 255  # top half lit
    torch.manual_seed(0)
    flipped = batch_resized_crop(np.repeat(img, 32, 0), 16, (1.0, 1.0), 0.0, vflip=1.0)
    assert (flipped[:, 0, 12:].mean() > 200) and (flipped[:, 0, :4].mean() < 50)


def test_one_policy_at_a_time():
    with pytest.raises(ValueError, match=r"^autoaugment: got 'cifar10' with randaugment"):
        FinetuneConfig(autoaugment="cifar10", randaugment="rand-m9-mstd0.5-inc1").validate()
    with pytest.raises(ValueError, match=r"^autoaugment: got 'cifar100'"):
        FinetuneConfig(autoaugment="cifar100").validate()
