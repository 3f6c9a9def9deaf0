"""Laptop presets: one whole experiment per family that learns on 2 CPU cores in minutes."""

from __future__ import annotations

from fdsl.experiment import Experiment
from fdsl.generators.exfractaldb import ExFractalDBConfig
from fdsl.generators.fractaldb import FractalDBConfig
from fdsl.generators.onepfrac import OnePFracConfig
from fdsl.generators.rcdb import RCDBConfig
from fdsl.generators.visualatom import VisualAtomConfig
from fdsl.platform.train.config import FinetuneConfig, PretrainConfig, SSLConfig
from fdsl.presets.registry import preset
from fdsl.presets.training import finetune_preset

# --- laptop: one whole experiment per family that learns on 2 CPU cores in minutes ------------------
# 32 classes x 64 instances rendered small, a tiny ViT (timm test_vit: 6 blocks, width 64) at 16 px
# with patch 4, 3,000 pre-training steps of a light recipe (random resized crop, label smoothing; the
# DeiT recipe's Mixup/CutMix/RandAugment/erasing keep a model this small from learning at all in
# this budget), then 100 fine-tuning epochs of the few labelled target images, for weights of a run
# and for scratch alike. Ray Train's local mode (num_workers=0) and the plain torch engine: at this
# size starting a worker group and DeepSpeed costs more than the training. The recipe was chosen on
# a dev split of digits' *training* images (docs/finetune.md); the figures there are on its val split
# and on Fashion-MNIST, which no choice looked at.
_LAPTOP_SET = dict(num_classes=32, num_instances=64)
_LAPTOP_POINTS = dict(image_size=32, pad=1, draw_mode="point", num_points=3000, search_size=128,
                      search_points=10_000)


def _laptop(data: Experiment, norm_mean: float, norm_std: float) -> Experiment:
    """`data` with the laptop pre-training (normalised by the set's own pixel mean/std) and fine-tuning."""
    data.pretrain = PretrainConfig(
        model="test_vit", img_size=16, patch_size=4, drop_path_rate=0.0, norm_mean=norm_mean,
        norm_std=norm_std,
        global_batch_size=64, max_steps=3000, lr=2e-3, min_lr=1e-5, warmup_epochs=5, weight_decay=0.05,
        precision="fp32", use_deepspeed=False, zero_stage=0, num_workers=0, augment_cpus=1.0,
        augment_batch_size=512, repeated_aug=1, mixup=0.0, cutmix=0.0, randaugment="", random_erasing=0.0,
        label_smoothing=0.1, crop_scale_min=0.8, min_pass_images=1_000_000, checkpoint_every=500,
        report_every=500)
    data.finetune = FinetuneConfig(
        dataset="digits", samples_per_class=10, epochs=100, global_batch_size=32, optimizer="adamw", lr=1e-3,
        min_lr=1e-5, weight_decay=0.05, warmup_epochs=3, label_smoothing=0.1, crop_scale_min=0.5, hflip=0.0,
        drop_path_rate=0.0, num_workers=0, augment_cpus=1.0, augment_batch_size=512, eval_every=10)
    return data


@preset("laptop-visualatom")
def laptop_visualatom() -> Experiment:
    """VisualAtom on a laptop: 32 x 64 contours at 64px, tiny ViT 3,000 steps, 100-epoch fine-tune: ~5 min."""
    return _laptop(Experiment(generator="visualatom",
                              data=VisualAtomConfig(**_LAPTOP_SET, image_size=64)), 0.208, 0.309)


@preset("laptop-rcdb")
def laptop_rcdb() -> Experiment:
    """RCDB on a laptop: 32 x 64 radial contours at 64px, the laptop-visualatom recipe."""
    return _laptop(Experiment(generator="rcdb", data=RCDBConfig(**_LAPTOP_SET, image_size=64)), 0.791, 0.31)


@preset("laptop-fractaldb")
def laptop_fractaldb() -> Experiment:
    """FractalDB on a laptop: 32 x 64 fractals drawn as points at 32px, the laptop-visualatom recipe."""
    return _laptop(Experiment(generator="fractaldb", data=FractalDBConfig(**_LAPTOP_SET, **_LAPTOP_POINTS)),
                   0.155, 0.231)


@preset("laptop-onepfrac")
def laptop_onepfrac() -> Experiment:
    """1p-frac on a laptop: one N=2 system x U(0.9, 1.1) into 32 classes x 64 renders, points at 32px."""
    return _laptop(Experiment(generator="onepfrac", data=OnePFracConfig(**_LAPTOP_SET, **_LAPTOP_POINTS)),
                   0.222, 0.248)


@preset("laptop-exfractaldb")
def laptop_exfractaldb() -> Experiment:
    """ExFractalDB on a laptop: 32 3-D fractals x 64 views at 32px (3,000 points), the laptop recipe."""
    return _laptop(Experiment(generator="exfractaldb", data=ExFractalDBConfig(
        **_LAPTOP_SET, image_size=32, num_points=3000, search_points=3000)), 0.101, 0.301)



@preset("laptop-dino")
def laptop_dino() -> Experiment:
    """DINO on a laptop: the laptop backbone (test_vit 16px) on digits' 1,438 training images, 40 epochs."""
    # Over ~900 steps DINO's defaults collapse here (docs/finetune.md): a faster teacher (momentum
    # 0.98), the last layer frozen 4 epochs, no local crops (an 8 px crop of an 8 x 8 digit holds a
    # few source pixels), global crops from 30 %, DINOv2's Sinkhorn-Knopp targets, which cannot
    # turn uniform while the features differ, and DINOv2's KoLeo term, which keeps them differing
    # (without it one seed in three still ended at ln(out_dim)).
    return finetune_preset(laptop_visualatom, laptop_visualatom().finetune, SSLConfig(
        dataset="digits", epochs=40, global_batch_size=64, lr_base=1e-3, warmup_epochs=4,
        weight_decay_end=0.1,
        out_dim=256, hidden_dim=256, bottleneck_dim=64, centering="sinkhorn", koleo_weight=0.1,
        momentum_teacher=0.98, freeze_last_layer_epochs=4, num_local_crops=0, global_crop_scale_min=0.3,
        hflip=0.0, drop_path_rate=0.0, num_workers=0, augment_cpus=1.0))
