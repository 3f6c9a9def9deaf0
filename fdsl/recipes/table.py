"""The recipe table's types and the public repositories its rows cite."""

from __future__ import annotations

import dataclasses

FDB = "hirokatsukataoka16/FractalDB-Pretrained-ResNet-PyTorch"
VIT_FDB = "nakashima-kodai/FractalDB-Pretrained-ViT-PyTorch"
CVPR22 = "masora1030/CVPR2022-Pretrained-ViT-PyTorch"
VA = "masora1030/CVPR2023-FDSL-on-VisualAtom"
OFDB = "ryoo-nakamura/OFDB"
ONEP = "SUPER-TADORY/1p-frac"
GANI = "hananshafi/vits-for-small-scale-datasets"
SIGMA = "catalys1/fractal-pretraining"

BF16 = (
    "bf16 keeps fp32's exponent range without loss scaling at half the memory: fdsl trains every "
    "GPU recipe in it (a deliberate change)"
)
RANDOM_INTERP = (
    "timm picks bilinear or bicubic per image ('random', the script's train-interpolation "
    "default); fdsl resizes bicubic, the interpolation the script names"
)
NORM_TARGET = (
    "fdsl normalises the target like the weights were pre-trained (their config.json mean/std), "
    "so pre-training and fine-tuning see the same input statistics"
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One field of a recipe: the official value with its source, and fdsl's."""

    field: str
    official: object
    source: str
    fdsl: object
    path: str = ""
    """Dotted path of the value in the preset's experiment (`data.delta`); empty: a behaviour of the code."""
    note: str = ""
    """Why fdsl differs (required when official != fdsl)."""

    @property
    def same(self) -> bool:
        return self.official == self.fdsl


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The recipe of one or more presets (they differ only where their own rows say)."""

    presets: tuple[str, ...]
    title: str
    source: str
    """The public code (repository: files) the recipe follows, or "our choice" and why."""
    rows: tuple[Row, ...]
