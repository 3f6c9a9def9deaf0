"""Pre-training, fine-tuning and SSL presets: the papers' recipes (docs/recipes.md) and debug sizes."""

from __future__ import annotations

from collections.abc import Callable

from fdsl.experiment import Experiment
from fdsl.platform.train.config import FinetuneConfig, PretrainConfig, SSLConfig
from fdsl.presets.data import (
    debug_fractaldb,
    exfractaldb_21k,
    fractaldb_1k,
    ofdb_1k,
    onepfrac_1k,
    rcdb_21k,
    visualatom_1k,
    visualatom_21k,
)
from fdsl.presets.registry import preset

# --- pre-training: ViTs on the formula sets (`fdsl pretrain PRESET --data DIR|stream --out RUN`) -----
# Each recipe is its authors' script, field by field (docs/recipes.md has the sources; fdsl/recipes/
# the table that tests/test_recipes.py pins). Where no public script exists the preset says "our
# choice". Every recipe trains in bf16 where the scripts train in fp32 or fp16: bf16 keeps fp32's
# exponent range (no loss scaling) at half the memory, the reason fdsl trains in it on every GPU. The
# data part of each preset is the data set's own preset, so `fdsl generate fractaldb-1k` makes exactly
# the folder `vit-tiny-fractaldb-1k` reads.
_VIT = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}
_GPU_NODE = dict(num_workers=8, use_gpu=True, cpus_per_worker=4)
_ON_GPU = dict(augment_on="device")  # crop, flips, RandAugment, repeats on the GPU: no per-image CPU work


def _recipe_nakashima(size: str) -> PretrainConfig:
    """nakashima-kodai/FractalDB-Pretrained-ViT-PyTorch: one process (DataParallel), batch 64, lr 3e-4
    x 64 / 512 (pretrain.py scales it), 10 warm-up epochs from 1e-6, 300 epochs + 10 of cool-down at
    1e-5, no repeated aug."""
    return PretrainConfig(model=_VIT[size], img_size=224, patch_size=16, global_batch_size=64, epochs=300,
                          lr=3e-4 * 64 / 512, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=10,
                          cooldown_epochs=10, weight_decay=0.05, repeated_aug=1, precision="bf16",
                          zero_stage=1, num_workers=1, use_gpu=True, cpus_per_worker=8, checkpoint_every=2000,
                          **_ON_GPU)


def _recipe_1k(size: str) -> PretrainConfig:
    """Our choice for 1k-class sets without a public script: the CVPR'22 DeiT recipe at batch 256."""
    return PretrainConfig(model=_VIT[size], img_size=224, patch_size=16, global_batch_size=256,
                          epochs=300, lr=1e-3, warmup_epochs=5, weight_decay=0.05, precision="bf16",
                          zero_stage=1, checkpoint_every=2000, **_GPU_NODE, **_ON_GPU)


def _recipe_21k(warmup_steps: int = 0, warmup_lr: float = 1e-4) -> PretrainConfig:
    """The CVPR'22 / CVPR'23 scripts: deit_base_patch16_224 (ImageNet mean/std), batch 64 x 128 GPUs
    = 8,192 (here 8 GPUs x 256 x 4 accumulation), lr 1e-3 unscaled, 90 epochs, repeated aug."""
    return PretrainConfig(model="deit_base_patch16_224", img_size=224, patch_size=16, global_batch_size=8192,
                          grad_accum_steps=4, epochs=90, lr=1e-3, min_lr=1e-5, warmup_lr=warmup_lr,
                          warmup_epochs=5, warmup_steps=warmup_steps, weight_decay=0.05, precision="bf16",
                          zero_stage=1, checkpoint_every=1000, **_GPU_NODE, **_ON_GPU)


def _recipe_one_instance() -> PretrainConfig:
    """OFDB / 1p-frac pre-train.sh: vit_tiny, batch 32 x 8 = 256, lr 1e-3 x 256 / 512 (main.py scales
    lr, warm-up and min lr), 80,000 epochs of the 1,000 images, h/v flips 0.5, erasing 0.5."""
    return PretrainConfig(model=_VIT["tiny"], img_size=224, patch_size=16, global_batch_size=256,
                          epochs=80_000, lr=1e-3 * 256 / 512, min_lr=1e-5 * 256 / 512,
                          warmup_lr=1e-6 * 256 / 512, warmup_epochs=5, weight_decay=0.05, hflip=0.5,
                          vflip=0.5, random_erasing=0.5, repeated_aug=1, precision="bf16", zero_stage=1,
                          checkpoint_every=20_000, **_GPU_NODE, **_ON_GPU)


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
def finetune_preset(base: Callable[[], Experiment], finetune: FinetuneConfig,
                    ssl: SSLConfig | None = None) -> Experiment:
    """`base`'s experiment with these fine-tuning (and SSL) sections."""
    experiment = base()
    experiment.finetune = finetune
    if ssl is not None:
        experiment.ssl = ssl
    return experiment


@preset("finetune-sgd")
def finetune_sgd() -> Experiment:
    """VisualAtom/OFDB/1p-frac finetune.sh, CIFAR-10: Nesterov SGD 0.01 x 768/512, batch 768, 1,000 epochs."""
    return finetune_preset(vit_tiny_fractaldb_1k, FinetuneConfig(
        dataset="cifar10:data/cifar-10-batches-py", epochs=1000, global_batch_size=768, optimizer="sgd",
        nesterov=True, lr=0.01 * 768 / 512, min_lr=1e-5 * 768 / 512, warmup_lr=1e-6 * 768 / 512,
        weight_decay=1e-4, momentum=0.9, warmup_epochs=10, label_smoothing=0.1,
        randaugment="rand-m9-mstd0.5-inc1", crop_scale_min=0.08, hflip=0.5, mixup=0.8, cutmix=1.0,
        random_erasing=0.25, num_workers=8, use_gpu=True, cpus_per_worker=4, augment_cpus=2))


@preset("finetune-adamw")
def finetune_adamw() -> Experiment:
    """Our choice: DeiT-style AdamW fine-tuning, CIFAR-10 at 224px, lr 1e-3, wd 0.05, batch 256, 100 ep."""
    return finetune_preset(vit_tiny_fractaldb_1k, FinetuneConfig(
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
    experiment = finetune_preset(vit_tiny_fractaldb_1k, FinetuneConfig(
        dataset="cifar10:data/cifar-10-batches-py", img_size=32, epochs=100, global_batch_size=256,
        optimizer="adamw", lr=1e-3, min_lr=1e-6, warmup_lr=1e-6, weight_decay=0.05, warmup_epochs=10,
        randaugment="", autoaugment="cifar10", crop="padded", crop_padding=4, hflip=0.5, repeated_aug=3,
        mixup=1.0, cutmix=1.0, mixup_prob=0.5, random_erasing=0.25, label_smoothing=0.1, num_workers=8,
        use_gpu=True, cpus_per_worker=4, augment_cpus=2), SSLConfig(
        dataset="cifar10:data/cifar-10-batches-py", img_size=32, patch_size=4, local_img_size=16,
        epochs=200, global_batch_size=512, lr_base=1e-4, min_lr=1e-6, warmup_epochs=30, out_dim=1024,
        hidden_dim=512, norm_last_layer=False, warmup_teacher_temp=0.04, teacher_temp=0.07,
        warmup_teacher_temp_epochs=10, num_local_crops=8, global_crop_scale_min=0.7,
        local_crop_scale_min=0.2, local_crop_scale_max=0.5, num_workers=2, use_gpu=True, cpus_per_worker=8,
        augment_cpus=2))
    experiment.pretrain.img_size, experiment.pretrain.patch_size = 32, 4
    return experiment


@preset("debug-finetune")
def debug_finetune() -> Experiment:
    """Fine-tune the debug-vit model (test_vit, 32px) on digits, 6 epochs, 2 CPU workers: about a minute."""
    return finetune_preset(debug_vit, FinetuneConfig(
        dataset="digits", epochs=6, global_batch_size=64, optimizer="adamw", lr=2e-3, min_lr=1e-5,
        weight_decay=0.05, warmup_epochs=1, label_smoothing=0.1, crop_scale_min=0.5, hflip=0.0,
        drop_path_rate=0.0, num_workers=2, cpus_per_worker=0.5, augment_cpus=0.5, augment_batch_size=128,
        loader_probe_images=512))


@preset("debug-dino")
def debug_dino() -> Experiment:
    """DINO at debug size on digits: test_vit 32px, 2 global + 2 local 16px crops, 3 epochs, 1 CPU worker."""
    return finetune_preset(debug_finetune, debug_finetune().finetune, SSLConfig(
        dataset="digits", out_dim=256, hidden_dim=256, bottleneck_dim=64, num_local_crops=2,
        local_img_size=16, hflip=0.0, epochs=3, global_batch_size=64, lr_base=5e-4, warmup_epochs=1,
        weight_decay=0.04, weight_decay_end=0.1, drop_path_rate=0.0, num_workers=1, cpus_per_worker=1,
        threads_per_worker=2, augment_cpus=0.5, augment_batch_size=128))
