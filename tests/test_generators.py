"""FractalDB family renderers: determinism, seeds, search acceptance, flips, 1p-frac, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import run_python

from fdsl.generators import build_generator, generator_names, get_generator, ifs
from fdsl.generators.fractaldb import flip, weight_table
from fdsl.generators.rng import derive_seed
from fdsl.presets import get_preset, preset_names

SMALL = dict(num_classes=4, num_instances=8, image_size=64, pad=2, num_points=4000,
             search_points=20_000, search_size=256)
DEBUG_PRESETS = [n for n in preset_names() if n.startswith("debug-")]


def digest(images) -> str:
    h = hashlib.sha256()
    for img in images:
        h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", DEBUG_PRESETS)
def test_debug_presets_render_every_image_with_shape_and_dtype(name):
    exp = get_preset(name)
    gen = build_generator(exp.generator, exp.data)
    size = exp.data.image_size
    for c in range(gen.num_classes):
        for i in range(gen.num_instances):
            img = gen.render(c, i)
            assert img.dtype == np.uint8
            assert img.shape in ((size, size), (size, size, 3))
            assert img.flags.c_contiguous
            assert img.max() > 0, f"{name} class {c} instance {i} is empty"


@pytest.mark.parametrize("mode,color,shape", [
    ("patch", "gray", (64, 64)), ("point", "gray", (64, 64)),
    ("patch", "color", (64, 64, 3)), ("point", "color", (64, 64, 3))])
def test_draw_modes_and_colours(mode, color, shape):
    gen = get_generator("fractaldb", draw_mode=mode, color=color, **SMALL)
    img = gen.render(1, 0)
    assert img.shape == shape and img.dtype == np.uint8
    values = np.unique(img)
    if color == "gray":
        assert set(values.tolist()) <= {0, 127}
    else:
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3


def test_point_mode_is_sparser_than_patch_mode():
    # sparse regime: on a dense canvas the patches' black cells erase neighbours (paste semantics)
    sparse = {**SMALL, "image_size": 256, "num_points": 300}
    patch = get_generator("fractaldb", draw_mode="patch", **sparse).render(0, 0)
    point = get_generator("fractaldb", draw_mode="point", **sparse).render(0, 0)
    assert np.count_nonzero(patch) > np.count_nonzero(point) > 0


DETERMINISM_CODE = """
import hashlib
from fdsl.generators import get_generator
h = hashlib.sha256()
for name in ("fractaldb", "onepfrac"):
    g = get_generator(name, num_classes=4, num_instances=8, image_size=64, pad=2, num_points=4000,
                      search_points=20000, search_size=256, seed=11)
    for c in ORDER:
        for i in range(8):
            h.update(g.render(c, i).tobytes())
print(h.hexdigest())
"""


def test_same_config_same_bytes_across_processes_and_order():
    forward = run_python(DETERMINISM_CODE.replace("ORDER", "range(4)"))
    again = run_python(DETERMINISM_CODE.replace("ORDER", "range(4)"))
    assert forward.returncode == 0, forward.stderr
    assert forward.stdout == again.stdout
    # rendering class 3 alone first must not change anything (no hidden sequential state)
    gen_a = get_generator("fractaldb", seed=11, **SMALL)
    gen_b = get_generator("fractaldb", seed=11, **SMALL)
    late = gen_b.render(3, 5)
    _ = [gen_a.render(c, i) for c in range(4) for i in range(8)]
    assert np.array_equal(gen_a.render(3, 5), late)


@pytest.mark.parametrize("name", ["fractaldb", "onepfrac"])
def test_different_seeds_differ(name):
    a = get_generator(name, seed=0, **SMALL)
    b = get_generator(name, seed=1, **SMALL)
    images_a = [a.render(c, 0) for c in range(4)]
    images_b = [b.render(c, 0) for c in range(4)]
    assert digest(images_a) != digest(images_b)
    assert not np.array_equal(a.system(0), b.system(0))


def test_classes_and_instances_differ():
    gen = get_generator("fractaldb", **SMALL)
    assert not np.array_equal(gen.render(0, 0), gen.render(1, 0))
    assert not np.array_equal(gen.render(0, 0), gen.render(0, 4))  # next weight row


def test_accepted_categories_reach_the_filling_rate():
    kwargs = dict(n_min=2, n_max=7, param_range=1.0, num_points=20_000, size=256, pad=2, max_tries=100_000)
    for k in range(6):
        maps, fill = ifs.search_system(1000 + k, fill_rate=0.2, **kwargs)
        assert fill >= 0.2
        assert 2 <= len(maps) <= 7 and np.all(np.abs(maps) <= 1.0)
        # the filling rate is a property of the system, not of the orbit's random draws
        xs, ys = np.empty(20_000), np.empty(20_000)
        n = ifs.orbit(maps, ifs.det_probs(maps), 20_000, np.uint64(99 + k), xs, ys)
        assert ifs.fill_fraction(xs, ys, n, 256, 2) >= 0.15


def test_search_gives_up_with_a_clear_error():
    with pytest.raises(ValueError, match="fill_rate"):
        ifs.search_system(1, n_min=2, n_max=2, param_range=1.0, fill_rate=0.9, num_points=2000,
                          size=64, pad=2, max_tries=5)


def test_sigma_sampling_is_contractive_with_sigma_factor_in_range():
    gen = get_generator("fractaldb", sampling="sigma", **SMALL)
    for c in range(4):
        maps = gen.system(c)
        n = len(maps)
        svals = [np.linalg.svd(m[:4].reshape(2, 2), compute_uv=False) for m in maps]
        assert all(s[0] <= 1.0 + 1e-9 for s in svals)
        sigma = sum(s[0] + 2 * s[1] for s in svals)
        assert (5 + n) / 2 - 1e-6 <= sigma <= (6 + n) / 2 + 1e-6
        assert gen.render(c, 0).max() > 0


def test_flips_are_flips():
    gen = get_generator("fractaldb", **{**SMALL, "num_instances": 12})
    base = gen.render(2, 8)
    assert np.array_equal(gen.render(2, 9), base[::-1])
    assert np.array_equal(gen.render(2, 10), base[:, ::-1])
    assert np.array_equal(gen.render(2, 11), base[::-1, ::-1])
    assert np.array_equal(flip(base, 3), flip(flip(base, 1), 2))


def test_instance_layout_matches_fractaldb():
    table = weight_table(0.4)
    assert table.shape == (25, 6)
    # the official weights_0.4.csv in its order: a x 0.2, 0.6, 1.0, 1.4, 1.8, then b..f x 0.2 .. 1.8
    assert np.allclose(table[0], [0.2, 1, 1, 1, 1, 1]) and np.allclose(table[2], np.ones(6))
    assert np.allclose(table[5], [1, 0.2, 1, 1, 1, 1]) and np.allclose(table[24], [1, 1, 1, 1, 1, 1.8])
    assert sorted(set(np.round(table.ravel(), 6))) == [0.2, 0.6, 1.0, 1.4, 1.8]
    gen = get_generator("fractaldb", num_classes=1, num_instances=1000)
    assert gen.instance_layout(0) == (0, 0, 0)
    assert gen.instance_layout(999) == (24, 9, 3)  # 25 rows x 10 renders x 4 flips
    assert len({gen.instance_layout(i) for i in range(1000)}) == 1000


def test_onepfrac_classes_are_multiplicative_perturbations_of_one_sigma_sampled_base():
    gen = get_generator("onepfrac", delta=0.1, **SMALL)
    base = gen.base_system()
    assert base.shape == (2, 6)  # the official N = 2
    svals = np.array([np.linalg.svd(m[:4].reshape(2, 2), compute_uv=False) for m in base])
    assert 3.9 - 1e-9 <= (svals[:, 0] + 2 * svals[:, 1]).sum() <= 4.1 + 1e-9  # sigma 4.0 +- 0.1
    systems = [gen.system(c) for c in range(4)]
    for s in systems:
        ratio = s / base
        assert np.all(ratio >= 0.9 - 1e-12) and np.all(ratio <= 1.1 + 1e-12)  # U(1 - D, 1 + D)
    assert len({s.tobytes() for s in systems}) == 4
    assert np.array_equal(gen.base_probs(), ifs.det_probs(base))  # the base's probabilities
    for c in range(4):  # every class passed the official fill rejection (> 5 % of the canvas)
        assert np.count_nonzero(gen.render(c, 0)) / gen.render(c, 0).size > 0.05


def test_onepfrac_rejects_a_class_that_fills_too_little():
    gen = get_generator("onepfrac", delta=0.5, **{**SMALL, "num_classes": 8})
    base = gen.base_system()
    rejected = [c for c in range(8) if not np.array_equal(gen.system(c), base * gen.factors(c, 0))]
    strict = get_generator("onepfrac", delta=0.5, min_fill=0.9, max_class_tries=3, **SMALL)
    with pytest.raises(ValueError, match=r"^min_fill: no perturbation of class 0"):
        strict.system(0)
    for c in rejected:  # a redrawn class is a later attempt that passes
        fills = [np.count_nonzero(gen._instance_image(gen.base_system() * gen.factors(c, a), c, 0))
                 for a in range(3)]
        assert fills[0] / (SMALL["image_size"] ** 2) <= 0.05


def test_onepfrac_preset_is_the_official_generator_setting():
    data = get_preset("onepfrac-1k").data
    assert (data.num_classes, data.num_instances, data.image_size, data.num_points) == (1000, 1, 512, 100_000)
    assert (data.num_maps_min, data.num_maps_max, data.sigma, data.sigma_margin) == (2, 2, 4.0, 0.1)
    drawing = (data.delta, data.min_fill, data.draw_mode, data.gray_value, data.pad)
    assert drawing == (0.1, 0.05, "patch", 127, 6)


def test_fractaldb_renders_of_a_row_share_the_orbit_and_keep_the_category_probabilities():
    gen = get_generator("fractaldb", **{**SMALL, "num_instances": 200, "draw_mode": "point"})
    rows = len(weight_table(0.4))
    # point mode has no patch masks: renders 0 and 1 of one weight row are the same orbit
    assert np.array_equal(gen.render(1, 0), gen.render(1, 4 * rows))
    patch = get_generator("fractaldb", **{**SMALL, "num_instances": 200})
    assert not np.array_equal(patch.render(1, 0), patch.render(1, 4 * rows))  # other masks
    maps = gen.system(1)
    weighted = maps * weight_table(0.4)[0]
    c = gen.config
    own = ifs.render_system(weighted, ifs.det_probs(maps), derive_seed(c.seed, "fractaldb/orbit", 1, 0),
                            size=c.image_size, pad=c.pad, num_points=c.num_points, patch=False,
                            palette=np.full((1, 1), 127, np.uint8))
    assert np.array_equal(gen.render(1, 0), own)


def test_orbits_start_at_the_origin_which_counts_in_the_framing():
    maps = np.array([[0.5, 0.0, 0.0, 0.5, 2.0, 2.0], [0.5, 0.0, 0.0, 0.5, 3.0, 2.0]])  # far from (0, 0)
    xs, ys = np.empty(1000), np.empty(1000)
    n = ifs.orbit(maps, ifs.det_probs(maps), 1000, np.uint64(5), xs, ys)
    assert n == 1000 and xs[0] == 0.0 and ys[0] == 0.0
    img = ifs.rasterize(xs, ys, n, 64, 2, False, np.full((1, 1), 127, np.uint8), np.uint64(1))
    assert img[64 - 1 - 2, 2] == 127  # the origin is the bottom-left corner of the frame


def test_ofdb_is_one_instance_per_category_the_first_official_weight_row():
    exp = get_preset("ofdb-1k")
    assert (exp.data.num_classes, exp.data.num_instances) == (1000, 1)
    gen = get_generator("fractaldb", **{**SMALL, "num_instances": 1})
    assert gen.instance_layout(0) == (0, 0, 0)
    assert np.allclose(weight_table(exp.data.weight_step)[0], [0.2, 1, 1, 1, 1, 1])


def test_bad_input():
    with pytest.raises(ValueError, match=r"^generator: got 'nope'"):
        get_generator("nope")
    with pytest.raises(ValueError, match=r"^image_size: got 4"):
        get_generator("fractaldb", image_size=4)
    with pytest.raises(ValueError, match=r"fractaldb: .*unexpected keyword"):
        get_generator("fractaldb", colour="gray")
    gen = get_generator("fractaldb", **SMALL)
    with pytest.raises(ValueError, match=r"^class_id: got 4"):
        gen.render(4, 0)
    with pytest.raises(ValueError, match=r"^instance_id: got -1"):
        gen.render(0, -1)
    assert "fractaldb" in generator_names() and "onepfrac" in generator_names()
