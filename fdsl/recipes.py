"""Where each full-size preset comes from: field by field, the official value, its source, fdsl's value.

One place holds the table: `RECIPES`. `docs/recipes.md` is generated from it
(`python -m fdsl.recipes > docs/recipes.md`), `fdsl show NAME` prints a preset's source line, and
tests/test_recipes.py checks every row that names a config path against the preset itself, so a
change to a recipe is a change to the preset and to this table together. A row whose fdsl value
differs from the official one carries the reason (`note`): fixed differences are gone, what is left
is a declared choice. Values are written as fdsl's config holds them (an lr the official script
scales by batch / 512 is written scaled).
"""

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


def _fractaldb_rows(n: int, instances: int, weight_note: str = "") -> tuple[Row, ...]:
    mk, ifs = f"{FDB} fractal_renderer/make_fractaldb.py", f"{FDB} fractal_renderer/ifs_function.py"
    return (
        Row("classes", n, f"{FDB} exe.sh numof_category", n, "data.num_classes"),
        Row(
            "instances per class",
            instances,
            f"{mk} --instance 10: 25 rows x 10 x 4 flips"
            if instances > 1
            else f"{OFDB} make_2dofdb.py: one image per category",
            instances,
            "data.num_instances",
        ),
        Row("maps per system", "2..7", f"{FDB} param_search/ifs_search.py randint(2, 8)", "2..7"),
        Row("search fill rate", 0.2, f"{FDB} exe.sh fillrate", 0.2, "data.fill_rate"),
        Row("search points", 100_000, f"{FDB} exe.sh numof_point", 100_000, "data.search_points"),
        Row("image size", 362, f"{FDB} exe.sh imagesize", 362, "data.image_size"),
        Row("points per image", 200_000, f"{FDB} exe.sh numof_ite", 200_000, "data.num_points"),
        Row("padding", 6, f"{mk} --pad_size_x/y default", 6, "data.pad"),
        Row("drawing", "patch", f"{FDB} exe.sh howto_draw patch_gray", "patch", "data.draw_mode"),
        Row("gray level", 127, f"{ifs} draw_patch", 127, "data.gray_value"),
        Row(
            "weight rows",
            "weights_0.4.csv in its order",
            f"{FDB} exe.sh weight=0.4",
            "weights_0.4.csv in its order",
            note=weight_note,
        ),
        Row("weight step", 0.4, f"{FDB} exe.sh weight", 0.4, "data.weight_step"),
        Row(
            "probabilities under a weight row",
            "the category's (CSV column 7)",
            f"{ifs} set_param",
            "the category's (CSV column 7)",
        ),
        Row(
            "renders of one row",
            "one orbit (numpy re-seeded with 100), new patch masks",
            f"{ifs} calculate",
            "one orbit (numpy re-seeded with 100), new patch masks",
        ),
        Row(
            "framing",
            "bounding box of the orbit with the origin (0, 0), its first point",
            f"{ifs} __rescale",
            "bounding box of the orbit with the origin (0, 0), its first point",
        ),
        Row(
            "pixel mapping",
            "uint16(x / span * (W - 2 pad) + pad), patch pasted at +1",
            f"{ifs} __rescale, draw_patch",
            "uint16(x / span * (W - 2 pad) + pad), patch pasted at +1",
        ),
        Row(
            "random numbers",
            "numpy/random unseeded (patch masks), numpy seed 100 (orbits)",
            ifs,
            "SplitMix64 from the config seed",
            note="fdsl's data sets are byte-reproducible: every draw derives from `data.seed`",
        ),
    )


_DEIT_CVPR22 = f"{CVPR22} scripts/pretrain.sh, exe_scripts/exe_*_21k.sh, pretrain.py"


def _deit_rows(
    src: str,
    *,
    batch: int,
    lr: float,
    warmup_lr: float,
    warmup: str,
    warmup_epochs: float,
    warmup_steps: int,
    precision: str,
    model: str,
    repeated: int,
    epochs: float,
    interp_note: str = RANDOM_INTERP,
    erasing: float = 0.25,
    hflip: float = 0.0,
    vflip: float = 0.0,
    min_lr: float = 1e-5,
) -> tuple[Row, ...]:
    rows = [
        Row("model", model, src, model, "" if " / " in model else "pretrain.model"),
        Row("global batch", batch, src, batch, "pretrain.global_batch_size"),
        Row("epochs", epochs, src, epochs, "pretrain.epochs"),
        Row("optimizer", "adamw", src, "adamw", "pretrain.optimizer"),
        Row("lr (as applied)", lr, src, lr, "pretrain.lr"),
        Row("weight decay", 0.05, src, 0.05, "pretrain.weight_decay"),
        Row("min lr", min_lr, src, min_lr, "pretrain.min_lr"),
        Row("warm-up from", warmup_lr, src, warmup_lr, "pretrain.warmup_lr"),
        Row(
            f"warm-up ({warmup})",
            warmup_steps or warmup_epochs,
            src,
            warmup_steps or warmup_epochs,
            "pretrain.warmup_steps" if warmup_steps else "pretrain.warmup_epochs",
        ),
        Row("RandAugment", "rand-m9-mstd0.5-inc1", src, "rand-m9-mstd0.5-inc1", "pretrain.randaugment"),
        Row("crop scale min", 0.08, f"{src} (timm default scale 0.08-1)", 0.08, "pretrain.crop_scale_min"),
        Row("horizontal flip", hflip, src, hflip, "pretrain.hflip"),
        Row("vertical flip", vflip, src, vflip, "pretrain.vflip"),
        Row("Mixup alpha", 0.8, src, 0.8, "pretrain.mixup"),
        Row("CutMix alpha", 1.0, src, 1.0, "pretrain.cutmix"),
        Row("label smoothing", 0.1, src, 0.1, "pretrain.label_smoothing"),
        Row("random erasing", erasing, src, erasing, "pretrain.random_erasing"),
        Row("drop path", 0.1, src, 0.1, "pretrain.drop_path_rate"),
        Row("repeated augmentation", repeated, src, repeated, "pretrain.repeated_aug"),
        Row(
            "train interpolation",
            "random" if interp_note == RANDOM_INTERP else "bicubic",
            src,
            "bicubic",
            note=interp_note if interp_note == RANDOM_INTERP else "",
        ),
        Row(
            "colour jitter",
            "0.4 (off: timm disables it under RandAugment)",
            src,
            "0.4 (off: timm disables it under RandAugment)",
        ),
        Row("precision", precision, src, "bf16", "pretrain.precision", note=BF16),
    ]
    return tuple(rows)


_CONTOUR = "rcdb_render/make_rcdb.py argparse defaults"
_VA_SH = f"{VA} visual_atomic_renderer/make_VisualAtom.sh"

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        ("fractaldb-1k",),
        "FractalDB-1k (Kataoka et al. ACCV'20)",
        f"{FDB}: exe.sh, param_search/, fractal_renderer/",
        _fractaldb_rows(1000, 1000),
    ),
    Recipe(
        ("fractaldb-10k",),
        "FractalDB-10k (Nakashima et al. AAAI'22)",
        "our choice: the FractalDB-1k settings at 10,000 categories (no public FractalDB-10k script)",
        (
            Row("classes", 10_000, "Nakashima et al. AAAI'22 (paper)", 10_000, "data.num_classes"),
            Row("instances per class", 1000, "Nakashima et al. AAAI'22 (paper)", 1000, "data.num_instances"),
            *_fractaldb_rows(10_000, 1000)[2:],
        ),
    ),
    Recipe(
        ("fractaldb-sigma-1k",),
        "FractalDB-1k with sigma-factor sampling (Anderson & Farrell WACV'22)",
        f"{SIGMA}: fractals/ifs.py sample_system; our choice for the rest: FractalDB-1k's rendering",
        (
            Row("sampling", "sigma", f"{SIGMA} sample_system", "sigma", "data.sampling"),
            Row(
                "most maps per system",
                4,
                f"{SIGMA} fractal_learning/fractals/README.md: ifs.py --max_n 4",
                4,
                "data.num_maps_max",
            ),
            Row(
                "fewest maps per system",
                2,
                f"{SIGMA} fractal_learning/fractals/README.md: ifs.py --min_n 2",
                2,
                "data.num_maps_min",
            ),
            Row(
                "sigma-factor range",
                "U((5 + N) / 2, (6 + N) / 2)",
                f"{SIGMA} sample_system beta default",
                "U((5 + N) / 2, (6 + N) / 2)",
            ),
            Row("sigma_lo / sigma_hi", (5.0, 6.0), f"{SIGMA} sample_system beta default", (5.0, 6.0)),
            Row("translations", "U(-1, 1)", f"{SIGMA} sample_system bval=1", "U(-1, 1)"),
            Row(
                "rendering",
                "on the fly in the loader, 1 image per system per step",
                SIGMA,
                "FractalDB-1k's 1,000 instances x 362 px patches",
                note="our choice: fdsl renders the sampled systems with FractalDB's instance layout so "
                "that the two sampling rules compare on the same rendering",
            ),
        ),
    ),
    Recipe(
        ("ofdb-1k",),
        "2D-OFDB-1k (Nakamura et al. ICCV'23)",
        f"{OFDB}: 2d-ofdb-generator/exe_parallel.sh, fractal_renderer/make_2dofdb.py",
        _fractaldb_rows(1000, 1)[:10]
        + (
            Row(
                "the one weight row",
                "row 0 of weights_0.4.csv: (0.2, 1, 1, 1, 1, 1)",
                f"{OFDB} make_2dofdb.py `for weight in [weights[0]]`",
                "row 0 of weights_0.4.csv: (0.2, 1, 1, 1, 1, 1)",
            ),
            Row("flips", "none", f"{OFDB} make_2dofdb.py", "none"),
        )
        + _fractaldb_rows(1000, 1)[12:],
    ),
    Recipe(
        ("onepfrac-1k",),
        "1p-frac (Nakamura et al. ECCV'24)",
        f"{ONEP}: 1p-frac_generater/generate.sh, "
        "src/render_from_oneparam_mp.py, src/utils.py, src/ifs_function.py",
        (
            Row("classes", 1000, f"{ONEP} generate.sh SAMPLE", 1000, "data.num_classes"),
            Row(
                "images per class",
                1,
                f"{ONEP} render_from_oneparam_mp.py (one PNG per class)",
                1,
                "data.num_instances",
            ),
            Row(
                "maps of the base system", 2, f"{ONEP} render_from_oneparam_mp.py --N", 2, "data.num_maps_max"
            ),
            Row(
                "base system",
                "sigma-factor sampling",
                f"{ONEP} utils.py sample_system",
                "sigma-factor sampling",
            ),
            Row("sigma-factor", 4.0, f"{ONEP} generate.sh SIGMA (argparse default 3.5)", 4.0, "data.sigma"),
            Row("sigma margin", 0.1, f"{ONEP} set_baseparams(margin=0.1)", 0.1, "data.sigma_margin"),
            Row("Delta", 0.1, f"{ONEP} generate.sh DELTA", 0.1, "data.delta"),
            Row(
                "perturbation",
                "each parameter x U(1 - Delta, 1 + Delta)",
                f"{ONEP} render_from_oneparam_mp.py noise_l",
                "each parameter x U(1 - Delta, 1 + Delta)",
            ),
            Row(
                "probabilities",
                "|det| of the base maps",
                f"{ONEP} calc_p before the perturbation",
                "|det| of the base maps",
            ),
            Row(
                "fill rejection",
                0.05,
                f"{ONEP} --pixel_threshold (redraw while fill <= 0.05)",
                0.05,
                "data.min_fill",
            ),
            Row("image size", 512, f"{ONEP} --image_size_x/y", 512, "data.image_size"),
            Row("points", 100_000, f"{ONEP} --iteration", 100_000, "data.num_points"),
            Row("padding", 6, f"{ONEP} --pad_size_x/y", 6, "data.pad"),
            Row("drawing", "patch", f"{ONEP} draw_patch, mask_mode random", "patch", "data.draw_mode"),
            Row("gray level", 127, f"{ONEP} ifs_function.py draw_patch", 127, "data.gray_value"),
            Row("flips", "none", f"{ONEP} draw_patch saves flip0 only", "none"),
            Row(
                "orbit stream",
                "one for every class (numpy seed 100)",
                f"{ONEP} ifs_function.py calculate",
                "one for every class (derived from data.seed)",
                note="seeded from the config instead of the constant 100: the same sharing, reproducible",
            ),
        ),
    ),
    Recipe(
        ("rcdb-1k", "rcdb-21k"),
        "RCDB-1k / 21k (Kataoka et al. CVPR'22)",
        f"{CVPR22}: exe_scripts/exe_rcdb_1k.sh, exe_rcdb_21k.sh, {_CONTOUR}",
        (
            Row("classes", "1,000 / 21,000", f"{CVPR22} exe_rcdb_*.sh CLASSES", "1,000 / 21,000"),
            Row(
                "instances per class", 1000, f"{CVPR22} exe_rcdb_21k.sh INSTANCES", 1000, "data.num_instances"
            ),
            Row("image size", 512, f"{CVPR22} {_CONTOUR}", 512, "data.image_size"),
            Row(
                "vertices",
                "Exp(mean 100) in 3..200",
                f"{CVPR22} exe_rcdb_21k.sh VERTEX_NUM=200",
                "Exp(mean 100) in 3..200",
            ),
            Row("vertex max", 200, f"{CVPR22} exe_rcdb_21k.sh VERTEX_NUM", 200, "data.vertex_max"),
            Row("polygons", "1..200", f"{CVPR22} {_CONTOUR}", "1..200"),
            Row("Perlin min", 0.0, f"{CVPR22} exe_rcdb_21k.sh PERLIN_MIN", 0.0, "data.perlin_min"),
            Row("line width", 0.1, f"{CVPR22} exe_rcdb_21k.sh LINE_WIDTH", 0.1, "data.line_width"),
            Row("radius min", 0, f"{CVPR22} exe_rcdb_21k.sh RADIUS_MIN", 0, "data.radius_min"),
            Row("oval rate", 2.0, f"{CVPR22} exe_rcdb_21k.sh OVAL_RATE", 2.0, "data.oval_rate"),
            Row("start position", 400, f"{CVPR22} exe_rcdb_21k.sh START_POS", 400, "data.start_pos"),
        ),
    ),
    Recipe(
        ("visualatom-1k", "visualatom-21k"),
        "VisualAtom-1k / 21k (Takashima et al. CVPR'23)",
        f"{VA}: visual_atomic_renderer/make_VisualAtom.sh, render_VisualAtom.py; the 21k render settings "
        "are not public (our choice: make_VisualAtom.sh's at 21,000 classes)",
        (
            Row(
                "classes",
                "1,000 (21k: not public)",
                f"{_VA_SH} --numof_classes",
                "1,000 / 21,000",
                note="VisualAtom-21k's render script is not public: our choice, the 1k script's settings",
            ),
            Row("instances per class", 1000, f"{_VA_SH} --numof_instances", 1000, "data.num_instances"),
            Row("vertices", "200..1000", f"{_VA_SH} --vertex_num_min/max", "200..1000"),
            Row("vertex min", 200, f"{_VA_SH} --vertex_num_min", 200, "data.vertex_min"),
            Row("vertex max", 1000, f"{_VA_SH} --vertex_num_max", 1000, "data.vertex_max"),
            Row("polygons max", 200, f"{_VA_SH} --line_num_max", 200, "data.num_lines_max"),
            Row("Perlin min", 0.0, f"{_VA_SH} --perlin_min", 0.0, "data.perlin_min"),
            Row("line width", 0.1, f"{_VA_SH} --line_width", 0.1, "data.line_width"),
            Row("radius min", 10, f"{_VA_SH} --radius_min", 10, "data.radius_min"),
            Row("oval rate", 2.0, f"{_VA_SH} --oval_rate", 2.0, "data.oval_rate"),
            Row("start position", 512, f"{_VA_SH} --start_pos", 512, "data.start_pos"),
            Row("wave 1 frequency max", 20, f"{_VA_SH} --nami_1_max", 20, "data.wave1_max"),
            Row("wave 2 frequency max", 20, f"{_VA_SH} --nami_2_max", 20, "data.wave2_max"),
        ),
    ),
    Recipe(
        ("exfractaldb-1k", "exfractaldb-21k"),
        "ExFractalDB-1k / 21k (Kataoka et al. CVPR'22)",
        f"{CVPR22}: exfractaldb_render/ExFractalDB_render.sh, 3dfractal_render/category_search.py, "
        "instance.py, image_render/render.py",
        (
            Row(
                "variance threshold", 0.05, f"{CVPR22} ExFractalDB_render.sh", 0.05, "data.variance_threshold"
            ),
            Row("points per cloud", 10_000, f"{CVPR22} instance.py --point_num", 10_000, "data.num_points"),
            Row("normalise", 1.0, f"{CVPR22} instance.py --normalize", 1.0, "data.normalize"),
            Row("weight rows", 145, f"{CVPR22} instance.py weights_ins145.csv", 145),
            Row(
                "views",
                "12 around the vertical axis, zero elevation",
                f"{CVPR22} render.py --view_point 12",
                "12 around the vertical axis, zero elevation",
            ),
            Row("viewpoint", "ring", f"{CVPR22} render.py", "ring", "data.viewpoint"),
            Row("view count", 12, f"{CVPR22} render.py --view_point", 12, "data.num_views"),
            Row(
                "view jitter (degrees)",
                "U(-pi, pi)",
                f"{CVPR22} render.py glm.radians(uniform(-pi, pi))",
                "U(-pi, pi)",
            ),
            Row(
                "camera",
                "perspective 45 degrees, 4 units",
                f"{CVPR22} render.py glm.perspective, camDist",
                "perspective 45 degrees, 4 units",
            ),
            Row("image size", 224, f"{CVPR22} render.py --img_size", 224, "data.image_size"),
            Row("point size", 1, f"{CVPR22} render.py --point_size", 1, "data.point_size"),
            Row(
                "instances per class",
                1000,
                f"{CVPR22} pretrain.py dataset_size = num_classes * 1000",
                1000,
                "data.num_instances",
            ),
            Row(
                "images rendered per class",
                "145 rows x 12 views = 1,740",
                f"{CVPR22} instance.py, render.py",
                "the first 1,000 of the 145 x 12 grid",
                note="the training script counts 1,000 images a class; fdsl renders those 1,000",
            ),
        ),
    ),
    Recipe(
        ("vit-tiny-fractaldb-1k", "vit-small-fractaldb-1k"),
        "ViT-Tiny/Small on FractalDB-1k (Nakashima et al. AAAI'22)",
        f"{VIT_FDB}: scripts/pretrian_on_fractal1k.sh, configs/pretrain.yaml, "
        "configs/data/fractal1k.yaml, configs/optim/adamw.yaml, configs/scheduler/cosine.yaml, pretrain.py",
        _deit_rows(
            f"{VIT_FDB} configs + pretrain.py",
            batch=64,
            lr=3e-4 * 64 / 512,
            warmup_lr=1e-6,
            warmup="epochs",
            warmup_epochs=10,
            warmup_steps=0,
            precision="fp32",
            model="vit_tiny_patch16_224 / vit_small_patch16_224",
            repeated=1,
            epochs=300.0,
            interp_note="bicubic",
        )
        + (
            Row(
                "cool-down epochs",
                10.0,
                f"{VIT_FDB} configs/scheduler/cosine.yaml",
                10.0,
                "pretrain.cooldown_epochs",
            ),
            Row("normalisation", "0.5 / 0.5", f"{VIT_FDB} configs/data/fractal1k.yaml", "0.5 / 0.5"),
        ),
    ),
    Recipe(
        ("vit-base-fractaldb-1k", "vit-tiny-visualatom-1k"),
        "ViT-Base on FractalDB-1k, ViT-Tiny on VisualAtom-1k",
        "our choice: no public script trains these; fdsl uses the CVPR'22 DeiT recipe "
        f"({_DEIT_CVPR22}) at batch 256, 300 epochs, 5 warm-up epochs",
        (
            Row("global batch", 256, "our choice", 256, "pretrain.global_batch_size"),
            Row("epochs", 300.0, "our choice", 300.0, "pretrain.epochs"),
            Row("lr", 1e-3, "our choice (CVPR'22 scripts)", 1e-3, "pretrain.lr"),
            Row("precision", "bf16", "our choice", "bf16", "pretrain.precision"),
        ),
    ),
    Recipe(
        ("vit-base-exfractaldb-21k", "vit-base-rcdb-21k"),
        "ViT-Base on ExFractalDB-21k / RCDB-21k (Kataoka et al. CVPR'22)",
        _DEIT_CVPR22,
        _deit_rows(
            _DEIT_CVPR22,
            batch=8192,
            lr=1e-3,
            warmup_lr=1e-4,
            warmup="epochs",
            warmup_epochs=5,
            warmup_steps=0,
            precision="fp32",
            model="deit_base_patch16_224",
            repeated=3,
            epochs=90.0,
        ),
    ),
    Recipe(
        ("vit-base-visualatom-21k",),
        "ViT-Base on VisualAtom-21k (Takashima et al. CVPR'23)",
        f"{VA}: scripts/pretrain.sh, pretrain.py",
        _deit_rows(
            f"{VA} scripts/pretrain.sh",
            batch=8192,
            lr=1e-3,
            warmup_lr=1e-6,
            warmup="steps",
            warmup_epochs=5,
            warmup_steps=5000,
            precision="fp16 (--amp)",
            model="deit_base_patch16_224",
            repeated=3,
            epochs=90.0,
        ),
    ),
    Recipe(
        ("vit-tiny-ofdb-1k", "vit-tiny-onepfrac-1k"),
        "ViT-Tiny on 2D-OFDB-1k (ICCV'23) and 1p-frac (ECCV'24)",
        f"{OFDB}: pre-train.sh; {ONEP}: train/pre-train.sh, train/main.py (lr, warm-up and min lr x "
        "batch / 512), configs/model/vit.yaml, configs/data/grayimagefolder.yaml",
        _deit_rows(
            f"{ONEP} train/pre-train.sh + main.py",
            batch=256,
            lr=1e-3 * 256 / 512,
            warmup_lr=1e-6 * 256 / 512,
            min_lr=1e-5 * 256 / 512,
            warmup="epochs",
            warmup_epochs=5,
            warmup_steps=0,
            precision="fp32",
            model="vit_tiny_patch16_224",
            repeated=1,
            epochs=80_000.0,
            interp_note="bicubic",
            erasing=0.5,
            hflip=0.5,
            vflip=0.5,
        ),
    ),
    Recipe(
        ("finetune-sgd",),
        "Small-set fine-tuning with SGD (VisualAtom, OFDB, 1p-frac)",
        f"{VA}: scripts/finetune.sh, configs/model/vit.yaml; {ONEP} configs/data/colorimagefolder.yaml "
        "(the shared hydra code base: lr x batch / 512)",
        (
            Row("global batch", 768, f"{VA} scripts/finetune.sh 96 x 8", 768, "finetune.global_batch_size"),
            Row("epochs", 1000.0, f"{VA} scripts/finetune.sh", 1000.0, "finetune.epochs"),
            Row("optimizer", "sgd", f"{VA} finetune.sh optimizer_name=sgd", "sgd", "finetune.optimizer"),
            Row("Nesterov", True, "timm create_optimizer_v2('sgd') is Nesterov", True, "finetune.nesterov"),
            Row(
                "lr (as applied)",
                0.01 * 768 / 512,
                f"{VA} finetune.sh 0.01 x 768 / 512",
                0.01 * 768 / 512,
                "finetune.lr",
            ),
            Row(
                "min lr",
                1e-5 * 768 / 512,
                f"{VA} configs/model/vit.yaml x 768 / 512",
                1e-5 * 768 / 512,
                "finetune.min_lr",
            ),
            Row(
                "warm-up from",
                1e-6 * 768 / 512,
                f"{VA} configs/model/vit.yaml x 768 / 512",
                1e-6 * 768 / 512,
                "finetune.warmup_lr",
            ),
            Row("warm-up epochs", 10.0, f"{VA} finetune.sh", 10.0, "finetune.warmup_epochs"),
            Row("weight decay", 1e-4, f"{VA} finetune.sh", 1e-4, "finetune.weight_decay"),
            Row("momentum", 0.9, "timm default", 0.9, "finetune.momentum"),
            Row(
                "RandAugment",
                "rand-m9-mstd0.5-inc1",
                f"{ONEP} colorimagefolder.yaml",
                "rand-m9-mstd0.5-inc1",
                "finetune.randaugment",
            ),
            Row("horizontal flip", 0.5, f"{ONEP} colorimagefolder.yaml", 0.5, "finetune.hflip"),
            Row("random erasing", 0.25, f"{ONEP} colorimagefolder.yaml", 0.25, "finetune.random_erasing"),
            Row("Mixup / CutMix", (0.8, 1.0), f"{ONEP} colorimagefolder.yaml", (0.8, 1.0)),
            Row("label smoothing", 0.1, f"{ONEP} colorimagefolder.yaml", 0.1, "finetune.label_smoothing"),
            Row(
                "normalisation",
                "ImageNet mean/std",
                f"{ONEP} colorimagefolder.yaml",
                "the weights' mean/std",
                note=NORM_TARGET,
            ),
        ),
    ),
    Recipe(
        ("dino-small-data",),
        "DINO on the small target set (Gani et al. BMVC'22)",
        f"{GANI}: README (CIFAR command), train_ssl.py, projection_head.py, finetune.py",
        (
            Row("SSL epochs", 200.0, f"{GANI} train_ssl.py --epochs", 200.0, "ssl.epochs"),
            Row("SSL global batch", 512, f"{GANI} README: 2 GPUs x 256", 512, "ssl.global_batch_size"),
            Row("SSL lr per 256 images", 1e-4, f"{GANI} train_ssl.py --lr", 1e-4, "ssl.lr"),
            Row("SSL min lr", 1e-6, f"{GANI} train_ssl.py --min_lr", 1e-6, "ssl.min_lr"),
            Row(
                "SSL warm-up epochs", 30.0, f"{GANI} train_ssl.py --warmup_epochs", 30.0, "ssl.warmup_epochs"
            ),
            Row(
                "teacher temperature",
                (0.04, 0.07, 10),
                f"{GANI} train_ssl.py warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs",
                (0.04, 0.07, 10),
            ),
            Row("global crops", (0.7, 1.0), f"{GANI} README --global_crops_scale 0.7 1.", (0.7, 1.0)),
            Row(
                "local crops",
                (8, 0.2, 0.5),
                f"{GANI} README --local_crops_number 8 --local_crops_scale 0.2 0.5",
                (8, 0.2, 0.5),
            ),
            Row(
                "head out / hidden / bottleneck",
                (1024, 512, 256),
                f"{GANI} README --out_dim, projection_head.py MLPHead",
                (1024, 512, 256),
            ),
            Row(
                "last layer normalised",
                False,
                f"{GANI} train_ssl.py --norm_last_layer",
                False,
                "ssl.norm_last_layer",
            ),
            Row("weight decay", (0.04, 0.4), f"{GANI} train_ssl.py", (0.04, 0.4)),
            Row("teacher momentum", 0.996, f"{GANI} train_ssl.py", 0.996, "ssl.momentum_teacher"),
            Row("gradient clip", 3.0, f"{GANI} train_ssl.py", 3.0, "ssl.clip_grad"),
            Row(
                "image / patch / local size",
                (32, 4, 16),
                f"{GANI} README --image_size 32 --patch_size 4",
                (32, 4, 16),
            ),
            Row(
                "backbone",
                "ViT width 192, depth 9, 12 heads, MLP ratio 2",
                f"{GANI} README, models/vit.py",
                "timm ViT-Tiny: width 192, depth 12, 3 heads, MLP ratio 4",
                note="our choice: the backbone of fdsl's FDSL ViT-Tiny presets, so that SSL on the target "
                "and FDSL pre-training are compared on one architecture",
            ),
            Row(
                "SSL normalisation",
                "CIFAR-10 mean/std",
                f"{GANI} train_ssl.py DataAugmentation",
                "0.5 / 0.5",
                note="our choice: the FDSL presets' normalisation, for the same comparison",
            ),
            Row(
                "fine-tune epochs / batch / lr / wd",
                (100.0, 256, 1e-3, 0.05),
                f"{GANI} finetune.py defaults",
                (100.0, 256, 1e-3, 0.05),
            ),
            Row(
                "fine-tune warm-up epochs",
                10.0,
                f"{GANI} finetune.py --warmup",
                10.0,
                "finetune.warmup_epochs",
            ),
            Row(
                "fine-tune Mixup / CutMix",
                "alpha 1 / 1, probability 0.5",
                f"{GANI} finetune.py --alpha, --beta, --mix_prob",
                "alpha 1 / 1, probability 0.5",
            ),
            Row("fine-tune image size", 32, f"{GANI} finetune.py (CIFAR at 32 px)", 32, "finetune.img_size"),
            Row(
                "fine-tune crop",
                "padded",
                f"{GANI} finetune.py RandomCrop(32, padding=4)",
                "padded",
                "finetune.crop",
            ),
            Row("fine-tune crop padding", 4, f"{GANI} finetune.py", 4, "finetune.crop_padding"),
            Row(
                "fine-tune policy",
                "cifar10",
                f"{GANI} finetune.py CIFAR10Policy",
                "cifar10",
                "finetune.autoaugment",
            ),
            Row("fine-tune repeated augmentation", 3, f"{GANI} finetune.py --ra", 3, "finetune.repeated_aug"),
            Row("fine-tune min lr", 1e-6, f"{GANI} utils/scheduler.py min_lr", 1e-6, "finetune.min_lr"),
            Row(
                "fine-tune warm-up from",
                1e-6,
                f"{GANI} utils/scheduler.py init_lr",
                1e-6,
                "finetune.warmup_lr",
            ),
            Row(
                "fine-tune label smoothing",
                0.1,
                f"{GANI} finetune.py --smoothing",
                0.1,
                "finetune.label_smoothing",
            ),
            Row("fine-tune drop path", 0.1, f"{GANI} finetune.py --sd", 0.1, "finetune.drop_path_rate"),
            Row(
                "fine-tune random erasing",
                "0.25: area 0.02-0.4, mean-filled",
                f"{GANI} utils/random_erasing.py",
                "0.25: area 0.02-1/3, noise-filled (timm)",
                note="our choice: timm's RandomErasing, the one implementation every fdsl recipe uses",
            ),
            Row(
                "fine-tune weight decay on biases and norms",
                "yes (torch AdamW on all parameters)",
                f"{GANI} finetune.py",
                "no (timm create_optimizer_v2)",
                note="our choice: timm's parameter groups, as in every fdsl trainer and the DeiT recipes",
            ),
            Row(
                "fine-tune normalisation",
                "CIFAR-10 mean/std",
                f"{GANI} utils/dataloader.py",
                "the weights' mean/std",
                note=NORM_TARGET,
            ),
        ),
    ),
    Recipe(
        ("finetune-adamw",),
        "AdamW fine-tuning at 224 px",
        "our choice: DeiT's fine-tuning recipe on the "
        "FDSL weights' resolution (224 px); the published small-set AdamW recipe (Gani et al.) trains at "
        "32 px and is dino-small-data's fine-tuning section",
        (
            Row("lr", 1e-3, "our choice (DeiT)", 1e-3, "finetune.lr"),
            Row("global batch", 256, "our choice (DeiT)", 256, "finetune.global_batch_size"),
            Row("epochs", 100.0, "our choice", 100.0, "finetune.epochs"),
        ),
    ),
)


def recipe_for(preset: str) -> Recipe | None:
    """The recipe of a shipped preset, or None (debug and laptop presets are fdsl's own)."""
    return next((r for r in RECIPES if preset in r.presets), None)


def recipe_source(preset: str) -> str:
    """One line for `fdsl show`: where the preset's recipe comes from."""
    recipe = recipe_for(preset)
    if recipe is None:
        return "fdsl's own preset (debug or laptop size; not a paper's recipe)"
    differs = sum(not row.same for row in recipe.rows)
    return f"{recipe.title}. {recipe.source}. {differs} declared difference(s): docs/recipes.md"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "/")


def render_markdown() -> str:
    """docs/recipes.md."""
    out = [
        "# Recipes: every full-size preset against its authors' code",
        "",
        "Generated from `fdsl/recipes.py` (`python -m fdsl.recipes > docs/recipes.md`); "
        "tests/test_recipes.py checks each row that names a config path against the preset, and "
        "that this page is the table's current rendering. Values are as applied (an lr that a script "
        'multiplies by batch / 512 is written multiplied). Every "differs" row carries its reason: each '
        'is a declared choice. Where no public script exists, the recipe says "our choice".',
        "",
        "Debug (`debug-*`) and laptop (`laptop-*`) presets are fdsl's own sizes and have no row here; "
        "the laptop presets inherit the generators' semantics below (docs/finetune.md).",
        "",
    ]
    for recipe in RECIPES:
        out += [
            f"## {recipe.title}",
            "",
            "Presets: " + ", ".join(f"`{p}`" for p in recipe.presets) + ".",
            f"Source: {recipe.source}.",
            "",
            "| field | official | source | fdsl | same? |",
            "|---|---|---|---|---|",
        ]
        for row in recipe.rows:
            fdsl = _cell(row.fdsl) + (f" (`{row.path}`)" if row.path else "")
            verdict = "same" if row.same else f"differs: {row.note}"
            out.append(f"| {row.field} | {_cell(row.official)} | {row.source} | {fdsl} | {verdict} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
