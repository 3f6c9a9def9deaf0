"""Named experiments: functions that return an `Experiment`, in one registry.

    fdsl presets                    # list them
    fdsl show fractaldb-1k          # print one as JSON
Each full-size preset has a `debug-*` sibling that renders on 2 CPU cores in seconds (tests run
those), and each family a `laptop-*` preset: one whole experiment (data, pre-training, fine-tuning)
that shows the FDSL effect on a 2-core machine in minutes (measured in docs/finetune.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fdsl.config import Registry, apply_overrides
from fdsl.experiment import Experiment
from fdsl.generators.exfractaldb import ExFractalDBConfig
from fdsl.generators.fractaldb import FractalDBConfig
from fdsl.generators.onepfrac import OnePFracConfig
from fdsl.generators.rcdb import RCDBConfig
from fdsl.generators.visualatom import VisualAtomConfig
from fdsl.platform.train.config import FinetuneConfig, PretrainConfig, SSLConfig

PRESETS = Registry("preset", "see `fdsl presets`")
"""Named experiment functions; `@preset(name)` registers one."""
preset = PRESETS.register


def preset_names() -> list[str]:
    return PRESETS.names()


def preset_summary(name: str) -> str:
    """First line of the preset function's docstring."""
    return (PRESETS.get(name).__doc__ or "").strip().splitlines()[0]


def get_preset(name: str, overrides: Iterable[str] = ()) -> Experiment:
    """The validated experiment `name` with `key=value` overrides applied."""
    experiment = PRESETS.get(name)()
    experiment.name = name
    return apply_overrides(experiment, overrides)


# --- debug sizes: tiny canvases and point counts, same code paths ---------------------------------
_DEBUG_RENDER = dict(num_classes=8, num_instances=8, image_size=64, pad=2, num_points=5_000,
                     search_points=20_000, search_size=256)


# --- FractalDB family --------------------------------------------------------------------------
@preset("fractaldb-1k")
def fractaldb_1k() -> Experiment:
    """FractalDB-1k (Kataoka et al. ACCV'20): 1,000 categories x 1,000 instances, 362px patch gray."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1000))


@preset("fractaldb-10k")
def fractaldb_10k() -> Experiment:
    """FractalDB-10k: 10,000 categories x 1,000 instances (Nakashima et al. AAAI'22 ViT runs)."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=10_000, num_instances=1000))


@preset("fractaldb-sigma-1k")
def fractaldb_sigma_1k() -> Experiment:
    """FractalDB-1k, sigma-factor sampling (Anderson & Farrell WACV'22: N in 2..4) instead of the search."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1000,
                                                                 sampling="sigma", num_maps_max=4))


@preset("ofdb-1k")
def ofdb_1k() -> Experiment:
    """OFDB-1k (Nakamura et al. ICCV'23): 1,000 FractalDB categories, one image each (weight row 0)."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1))


@preset("onepfrac-1k")
def onepfrac_1k() -> Experiment:
    """1p-frac (Nakamura et al. ECCV'24): one N=2 system, 1k classes x 1 image, Delta 0.1: x U(0.9, 1.1)."""
    return Experiment(generator="onepfrac", data=OnePFracConfig(num_classes=1000, delta=0.1))


@preset("debug-fractaldb")
def debug_fractaldb() -> Experiment:
    """FractalDB at debug size: 8 classes x 8 instances, 64px, renders in seconds."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(**_DEBUG_RENDER))


@preset("debug-ofdb")
def debug_ofdb() -> Experiment:
    """OFDB at debug size: 8 classes x 1 instance, 64px."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(**{**_DEBUG_RENDER, "num_instances": 1}))


@preset("debug-onepfrac")
def debug_onepfrac() -> Experiment:
    """1p-frac at debug size: 8 classes x 8 instances, 64px."""
    return Experiment(generator="onepfrac", data=OnePFracConfig(**_DEBUG_RENDER))


# --- contour and 3-D families (RCDB, VisualAtom, ExFractalDB) -----------------------------------
_DEBUG_SMALL = dict(num_classes=8, num_instances=8, image_size=128)


@preset("rcdb-1k")
def rcdb_1k() -> Experiment:
    """RCDB-1k (Kataoka et al. CVPR'22): 1,000 categories x 1,000 instances, 512px gray contours."""
    return Experiment(generator="rcdb", data=RCDBConfig(num_classes=1000, num_instances=1000))


@preset("rcdb-21k")
def rcdb_21k() -> Experiment:
    """RCDB-21k (Kataoka et al. CVPR'22): 21,000 categories x 1,000 instances, 512px."""
    return Experiment(generator="rcdb", data=RCDBConfig(num_classes=21_000, num_instances=1000))


@preset("visualatom-1k")
def visualatom_1k() -> Experiment:
    """VisualAtom-1k (Takashima et al. CVPR'23): 1,000 categories x 1,000 instances, 512px."""
    return Experiment(generator="visualatom", data=VisualAtomConfig(num_classes=1000, num_instances=1000))


@preset("visualatom-21k")
def visualatom_21k() -> Experiment:
    """VisualAtom-21k (Takashima et al. CVPR'23): 21,000 categories x 1,000 instances, 512px."""
    return Experiment(generator="visualatom",
                      data=VisualAtomConfig(num_classes=21_000, num_instances=1000))


@preset("exfractaldb-1k")
def exfractaldb_1k() -> Experiment:
    """ExFractalDB-1k (Kataoka et al. CVPR'22): 1,000 3-D categories x 1,000 views, 224px."""
    return Experiment(generator="exfractaldb",
                      data=ExFractalDBConfig(num_classes=1000, num_instances=1000))


@preset("exfractaldb-21k")
def exfractaldb_21k() -> Experiment:
    """ExFractalDB-21k (Kataoka et al. CVPR'22): 21,000 3-D categories x 1,000 views, 224px."""
    return Experiment(generator="exfractaldb",
                      data=ExFractalDBConfig(num_classes=21_000, num_instances=1000))


@preset("debug-rcdb")
def debug_rcdb() -> Experiment:
    """RCDB at debug size: 8 classes x 8 instances, 128px."""
    return Experiment(generator="rcdb", data=RCDBConfig(**_DEBUG_SMALL))


@preset("debug-visualatom")
def debug_visualatom() -> Experiment:
    """VisualAtom at debug size: 8 classes x 8 instances, 128px."""
    return Experiment(generator="visualatom", data=VisualAtomConfig(**_DEBUG_SMALL))


@preset("debug-exfractaldb")
def debug_exfractaldb() -> Experiment:
    """ExFractalDB at debug size: 8 classes x 8 instances, 128px."""
    return Experiment(generator="exfractaldb", data=ExFractalDBConfig(**_DEBUG_SMALL))


# --- pre-training: ViTs on the formula sets (`fdsl pretrain PRESET --data DIR|stream --out RUN`) -----
# Each recipe is its authors' script, field by field (docs/recipes.md has the sources; fdsl/recipes.py
# the table that tests/test_recipes.py pins). Where no public script exists the preset says "our
# choice". Every recipe trains in bf16 where the scripts train in fp32 or fp16: bf16 keeps fp32's
# exponent range (no loss scaling) at half the memory, the reason fdsl trains in it on every GPU. The
# data part of each preset is the data set's own preset, so `fdsl generate fractaldb-1k` makes exactly
# the folder `vit-tiny-fractaldb-1k` reads.
_VIT = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}
_GPU_NODE = dict(num_workers=8, use_gpu=True, cpus_per_worker=4)


def _recipe_nakashima(size: str) -> PretrainConfig:
    """nakashima-kodai/FractalDB-Pretrained-ViT-PyTorch: one process (DataParallel), batch 64, lr 3e-4
    x 64 / 512 (pretrain.py scales it), 10 warm-up epochs from 1e-6, 300 epochs + 10 of cool-down at
    1e-5, no repeated aug."""
    return PretrainConfig(model=_VIT[size], img_size=224, patch_size=16, global_batch_size=64, epochs=300,
                          lr=3e-4 * 64 / 512, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=10,
                          cooldown_epochs=10, weight_decay=0.05, repeated_aug=1, precision="bf16",
                          zero_stage=1, num_workers=1, use_gpu=True, cpus_per_worker=8, checkpoint_every=2000)


def _recipe_1k(size: str) -> PretrainConfig:
    """Our choice for 1k-class sets without a public script: the CVPR'22 DeiT recipe at batch 256."""
    return PretrainConfig(model=_VIT[size], img_size=224, patch_size=16, global_batch_size=256,
                          epochs=300, lr=1e-3, warmup_epochs=5, weight_decay=0.05, precision="bf16",
                          zero_stage=1, checkpoint_every=2000, **_GPU_NODE)


def _recipe_21k(warmup_steps: int = 0, warmup_lr: float = 1e-4) -> PretrainConfig:
    """The CVPR'22 / CVPR'23 scripts: deit_base_patch16_224 (ImageNet mean/std), batch 64 x 128 GPUs
    = 8,192 (here 8 GPUs x 256 x 4 accumulation), lr 1e-3 unscaled, 90 epochs, repeated aug."""
    return PretrainConfig(model="deit_base_patch16_224", img_size=224, patch_size=16, global_batch_size=8192,
                          grad_accum_steps=4, epochs=90, lr=1e-3, min_lr=1e-5, warmup_lr=warmup_lr,
                          warmup_epochs=5, warmup_steps=warmup_steps, weight_decay=0.05, precision="bf16",
                          zero_stage=1, checkpoint_every=1000, **_GPU_NODE)


def _recipe_one_instance() -> PretrainConfig:
    """OFDB / 1p-frac pre-train.sh: vit_tiny, batch 32 x 8 = 256, lr 1e-3 x 256 / 512 (main.py scales
    lr, warm-up and min lr), 80,000 epochs of the 1,000 images, h/v flips 0.5, erasing 0.5."""
    return PretrainConfig(model=_VIT["tiny"], img_size=224, patch_size=16, global_batch_size=256,
                          epochs=80_000, lr=1e-3 * 256 / 512, min_lr=1e-5 * 256 / 512,
                          warmup_lr=1e-6 * 256 / 512, warmup_epochs=5, weight_decay=0.05, hflip=0.5,
                          vflip=0.5, random_erasing=0.5, repeated_aug=1, precision="bf16", zero_stage=1,
                          checkpoint_every=20_000, **_GPU_NODE)


def _pretrain(data: Callable[[], Experiment], recipe: PretrainConfig) -> Experiment:
    experiment = data()
    experiment.pretrain = recipe
    return experiment


@preset("vit-tiny-fractaldb-1k")
def vit_tiny_fractaldb_1k() -> Experiment:
    """ViT-Tiny/16 on FractalDB-1k, Nakashima et al. AAAI'22's script: batch 64, lr 3.75e-5, 300 epochs."""
    return _pretrain(fractaldb_1k, _recipe_nakashima("tiny"))


@preset("vit-small-fractaldb-1k")
def vit_small_fractaldb_1k() -> Experiment:
    """ViT-Small/16 on FractalDB-1k, Nakashima et al.'s script (its deit_small config): as ViT-Tiny."""
    return _pretrain(fractaldb_1k, _recipe_nakashima("small"))


@preset("vit-base-fractaldb-1k")
def vit_base_fractaldb_1k() -> Experiment:
    """ViT-Base/16 on FractalDB-1k, our choice (no public script): the CVPR'22 DeiT recipe at batch 256."""
    return _pretrain(fractaldb_1k, _recipe_1k("base"))


@preset("vit-tiny-visualatom-1k")
def vit_tiny_visualatom_1k() -> Experiment:
    """ViT-Tiny/16 on VisualAtom-1k, our choice (no public script): the CVPR'22 DeiT recipe at batch 256."""
    return _pretrain(visualatom_1k, _recipe_1k("tiny"))


@preset("vit-tiny-ofdb-1k")
def vit_tiny_ofdb_1k() -> Experiment:
    """ViT-Tiny/16 on OFDB-1k (Nakamura et al. ICCV'23, pre-train.sh): 80,000 epochs, lr 5e-4, flips."""
    return _pretrain(ofdb_1k, _recipe_one_instance())


@preset("vit-tiny-onepfrac-1k")
def vit_tiny_onepfrac_1k() -> Experiment:
    """ViT-Tiny/16 on 1p-frac (Nakamura et al. ECCV'24, train/pre-train.sh): as OFDB's recipe."""
    return _pretrain(onepfrac_1k, _recipe_one_instance())


@preset("vit-base-exfractaldb-21k")
def vit_base_exfractaldb_21k() -> Experiment:
    """ViT-Base/16 on ExFractalDB-21k (Kataoka et al. CVPR'22 scripts): batch 8,192, 90 epochs, 224px."""
    return _pretrain(exfractaldb_21k, _recipe_21k())


@preset("vit-base-rcdb-21k")
def vit_base_rcdb_21k() -> Experiment:
    """ViT-Base/16 on RCDB-21k (Kataoka et al. CVPR'22 scripts): batch 8,192, 90 epochs, 224px."""
    return _pretrain(rcdb_21k, _recipe_21k())


@preset("vit-base-visualatom-21k")
def vit_base_visualatom_21k() -> Experiment:
    """ViT-Base/16 on VisualAtom-21k (Takashima et al. CVPR'23 script): batch 8,192, 5,000 warm-up steps."""
    return _pretrain(visualatom_21k, _recipe_21k(warmup_steps=5000, warmup_lr=1e-6))


@preset("debug-vit")
def debug_vit() -> Experiment:
    """Tiny ViT (timm test_vit) on debug FractalDB, 32px, 40 steps, 2 CPU workers: about a minute."""
    return _pretrain(debug_fractaldb, PretrainConfig(
        model="test_vit", img_size=32, patch_size=4, drop_path_rate=0.0, norm_mean=0.11, norm_std=0.2,
        global_batch_size=32, max_steps=40, lr=2e-3, min_lr=1e-4, warmup_epochs=2, precision="fp32",
        zero_stage=1, repeated_aug=1, num_workers=2, cpus_per_worker=0.5, augment_cpus=1.0,
        checkpoint_every=20, report_every=20))


# --- fine-tuning and small-data SSL (`fdsl finetune PRESET --weights ...`, `fdsl ssl PRESET`) ------
# The `pretrain` section of these presets names the architecture a `--weights scratch` arm trains and
# the backbone `fdsl ssl` pre-trains; weights of a run bring their own architecture.
def _finetune(base: Callable[[], Experiment], finetune: FinetuneConfig,
              ssl: SSLConfig | None = None) -> Experiment:
    experiment = base()
    experiment.finetune = finetune
    if ssl is not None:
        experiment.ssl = ssl
    return experiment


@preset("finetune-sgd")
def finetune_sgd() -> Experiment:
    """VisualAtom/OFDB/1p-frac finetune.sh, CIFAR-10: Nesterov SGD 0.01 x 768/512, batch 768, 1,000 epochs."""
    return _finetune(vit_tiny_fractaldb_1k, FinetuneConfig(
        dataset="cifar10:data/cifar-10-batches-py", epochs=1000, global_batch_size=768, optimizer="sgd",
        nesterov=True, lr=0.01 * 768 / 512, min_lr=1e-5 * 768 / 512, warmup_lr=1e-6 * 768 / 512,
        weight_decay=1e-4, momentum=0.9, warmup_epochs=10, label_smoothing=0.1,
        randaugment="rand-m9-mstd0.5-inc1", crop_scale_min=0.08, hflip=0.5, mixup=0.8, cutmix=1.0,
        random_erasing=0.25, num_workers=8, use_gpu=True, cpus_per_worker=4, augment_cpus=2))


@preset("finetune-adamw")
def finetune_adamw() -> Experiment:
    """Our choice: DeiT-style AdamW fine-tuning, CIFAR-10 at 224px, lr 1e-3, wd 0.05, batch 256, 100 ep."""
    return _finetune(vit_tiny_fractaldb_1k, FinetuneConfig(
        dataset="cifar10:data/cifar-10-batches-py", epochs=100, global_batch_size=256, optimizer="adamw",
        lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.1,
        randaugment="rand-m9-mstd0.5-inc1", crop_scale_min=0.08, hflip=0.5, mixup=0.8, cutmix=1.0,
        random_erasing=0.25, num_workers=8, use_gpu=True, cpus_per_worker=4, augment_cpus=2))


@preset("dino-small-data")
def dino_small_data() -> Experiment:
    """DINO on CIFAR-10 train: Gani et al. BMVC'22's train_ssl.py settings, fdsl's ViT-Tiny/4 at 32px."""
    # Gani et al.'s README command and train_ssl.py defaults (docs/recipes.md): 2 GPUs x 256, lr 1e-4 per
    # 256 images, 30 warm-up epochs, teacher temperature 0.04 -> 0.07 over 10 epochs, global crops
    # (0.7, 1), 8 local crops (0.2, 0.5), head hidden 512, last layer not normalised. Our choice: the
    # backbone is timm's ViT-Tiny at patch 4 (width 192, depth 12, 3 heads, MLP 4) instead of their
    # width 192, depth 9, 12 heads, MLP 2, so that SSL on the target and FDSL pre-training compare on
    # one architecture. The fine-tuning section is Gani et al.'s finetune.py: 32 px, padded RandomCrop,
    # CIFAR-10 AutoAugment, repeated augmentation x 3, Mixup/CutMix alpha 1 with probability 0.5.
    experiment = _finetune(vit_tiny_fractaldb_1k, FinetuneConfig(
        dataset="cifar10:data/cifar-10-batches-py", img_size=32, epochs=100, global_batch_size=256,
        optimizer="adamw", lr=1e-3, min_lr=1e-6, warmup_lr=1e-6, weight_decay=0.05, warmup_epochs=10,
        randaugment="", autoaugment="cifar10", crop="padded", crop_padding=4, hflip=0.5, repeated_aug=3,
        mixup=1.0, cutmix=1.0, mixup_prob=0.5, random_erasing=0.25, label_smoothing=0.1, num_workers=8,
        use_gpu=True, cpus_per_worker=4, augment_cpus=2), SSLConfig(
        dataset="cifar10:data/cifar-10-batches-py", img_size=32, patch_size=4, local_img_size=16,
        epochs=200, global_batch_size=512, lr=1e-4, min_lr=1e-6, warmup_epochs=30, out_dim=1024,
        hidden_dim=512, norm_last_layer=False, warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=10, num_local_crops=8, global_crop_scale_min=0.7,
        local_crop_scale_min=0.2, local_crop_scale_max=0.5, num_workers=2, use_gpu=True, cpus_per_worker=8,
        augment_cpus=2))
    experiment.pretrain.img_size, experiment.pretrain.patch_size = 32, 4
    return experiment


@preset("debug-finetune")
def debug_finetune() -> Experiment:
    """Fine-tune the debug-vit model (test_vit, 32px) on digits, 6 epochs, 2 CPU workers: about a minute."""
    return _finetune(debug_vit, FinetuneConfig(
        dataset="digits", epochs=6, global_batch_size=64, optimizer="adamw", lr=2e-3, min_lr=1e-5,
        weight_decay=0.05, warmup_epochs=1, label_smoothing=0.1, crop_scale_min=0.5, hflip=0.0,
        drop_path_rate=0.0, num_workers=2, cpus_per_worker=0.5, augment_cpus=0.5, augment_batch_size=128,
        loader_probe_images=512))


@preset("debug-dino")
def debug_dino() -> Experiment:
    """DINO at debug size on digits: test_vit 32px, 2 global + 2 local 16px crops, 3 epochs, 1 CPU worker."""
    return _finetune(debug_finetune, debug_finetune().finetune, SSLConfig(
        dataset="digits", out_dim=256, hidden_dim=256, bottleneck_dim=64, num_local_crops=2,
        local_img_size=16, hflip=0.0, epochs=3, global_batch_size=64, lr=5e-4, warmup_epochs=1,
        weight_decay=0.04, weight_decay_end=0.1, drop_path_rate=0.0, num_workers=1, cpus_per_worker=1,
        threads_per_worker=2, augment_cpus=0.5, augment_batch_size=128))


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
        label_smoothing=0.1, crop_scale_min=0.8, min_pass_images=1_000_000, checkpoint_every=10**9,
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
    return _finetune(laptop_visualatom, laptop_visualatom().finetune, SSLConfig(
        dataset="digits", epochs=40, global_batch_size=64, lr=1e-3, warmup_epochs=4, weight_decay_end=0.1,
        out_dim=256, hidden_dim=256, bottleneck_dim=64, centering="sinkhorn", koleo_weight=0.1,
        momentum_teacher=0.98, freeze_last_layer_epochs=4, num_local_crops=0, global_crop_scale_min=0.3,
        hflip=0.0, drop_path_rate=0.0, num_workers=0, augment_cpus=1.0))
