"""The data-set recipes: each full-size formula data set against its authors' renderer."""

from __future__ import annotations

from fdsl.recipes.table import (
    CVPR22,
    FDB,
    OFDB,
    ONEP,
    SIGMA,
    VA,
    Recipe,
    Row,
)


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




_CONTOUR = "rcdb_render/make_rcdb.py argparse defaults"
_VA_SH = f"{VA} visual_atomic_renderer/make_VisualAtom.sh"

DATA_RECIPES: tuple[Recipe, ...] = (
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
)
