"""Raw-pixel baselines that every fine-tuning run records beside the ViT's top-1."""

from __future__ import annotations

import numpy as np

from fdsl.platform.data.targets import load_target
from fdsl.platform.train.evaluators import pixel_baselines as fit
from fdsl.presets import get_preset


def digits_subset(experiment):
    """(train images, train labels, val images, val labels) of a preset's fine-tuning subset."""
    cfg = experiment.finetune
    data = load_target("digits", samples_per_class=cfg.samples_per_class, train_fraction=cfg.train_fraction,
                       seed=cfg.seed)
    return data.train_images, data.train_labels, data.val_images, data.val_labels


def test_pixel_baselines_learn_and_repeat():
    images, labels, val_images, val_labels = digits_subset(get_preset("debug-finetune",
                                                                      ["finetune.samples_per_class=10"]))
    a, b = fit(images, labels, val_images, val_labels), fit(images, labels, val_images, val_labels)
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert a["logreg_top1"] > 0.5 and a["knn1_top1"] > 0.5  # chance is 0.1 on digits
    assert a["fit_rows"] == 100 and a["features"] == "raw pixels (64)"
    capped = fit(images, labels, val_images, val_labels, max_fit_rows=20)
    assert capped["fit_rows"] == 20 and capped["knn1_top1"] < a["knn1_top1"]


def test_one_class_subset_predicts_that_class():
    images, labels, val_images, val_labels = digits_subset(get_preset("debug-finetune"))
    one = fit(images[labels == 3], labels[labels == 3], val_images, val_labels)
    assert one["logreg_top1"] == one["knn1_top1"] == round(float(np.mean(val_labels == 3)), 4)
