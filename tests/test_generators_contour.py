"""RCDB, VisualAtom and ExFractalDB: determinism, seeds, ranges, 21k categories, drawing checks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import run_python

from fdsl.generators import build_generator, contour, get_generator, ifs3d, perlin
from fdsl.generators.exfractaldb import weight_table
from fdsl.generators.rcdb import truncated_exponential_int
from fdsl.generators.visualatom import second_wave
from fdsl.presets import get_preset

SMALL = {
    "rcdb": dict(num_classes=6, num_instances=4, image_size=96),
    "visualatom": dict(num_classes=6, num_instances=4, image_size=96),
    "exfractaldb": dict(num_classes=6, num_instances=4, image_size=96, num_points=3000),
}


def digest(images) -> str:
    h = hashlib.sha256()
    for img in images:
        h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def render_all(gen) -> list[np.ndarray]:
    return [gen.render(c, i) for c in range(gen.num_classes) for i in range(gen.num_instances)]


DETERMINISM_CODE = """
import hashlib
from fdsl.generators import get_generator
SMALL = {small!r}
h = hashlib.sha256()
for name in ("rcdb", "visualatom", "exfractaldb"):
    g = get_generator(name, seed=5, **SMALL[name])
    images = {{}}
    for c in ORDER(range(g.num_classes)):
        for i in ORDER(range(g.num_instances)):
            images[c, i] = g.render(c, i)
    for key in sorted(images):
        h.update(images[key].tobytes())
print(h.hexdigest())
"""


def test_same_config_same_bytes_across_processes_and_order():
    code = DETERMINISM_CODE.format(small=SMALL)
    forward = run_python(code.replace("ORDER", "list"))
    backward = run_python(code.replace("ORDER", "reversed"))
    assert forward.returncode == 0, forward.stderr
    assert backward.returncode == 0, backward.stderr
    here = hashlib.sha256()
    for name in ("rcdb", "visualatom", "exfractaldb"):
        for img in render_all(get_generator(name, seed=5, **SMALL[name])):
            here.update(img.tobytes())
    assert forward.stdout.strip() == backward.stdout.strip() == here.hexdigest()


@pytest.mark.parametrize("name", ["rcdb", "visualatom", "exfractaldb"])
def test_seed_changes_images_and_categories(name):
    a = get_generator(name, seed=1, **SMALL[name])
    b = get_generator(name, seed=2, **SMALL[name])
    assert digest(render_all(a)) != digest(render_all(b))
    for c in range(3):
        pa, pb = a.category_params(c), b.category_params(c)
        assert pa.keys() == pb.keys()
        assert any(not np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("name", ["rcdb", "visualatom", "exfractaldb"])
@pytest.mark.parametrize("size", [64, 200])
def test_shape_dtype_and_instances_differ(name, size):
    gen = get_generator(name, **{**SMALL[name], "image_size": size})
    images = [gen.render(2, i) for i in range(gen.num_instances)]
    for img in images:
        assert img.shape == (size, size) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert len({img.tobytes() for img in images}) == len(images)


@pytest.mark.parametrize("name,field,value", [
    ("rcdb", "vertex_min", 2),
    ("rcdb", "vertex_mean", 0.0),
    ("rcdb", "perlin_max", 500.0),
    ("rcdb", "oval_rate", 0.5),
    ("rcdb", "image_size", 4),
    ("rcdb", "gray_max", 256),
    ("rcdb", "num_classes", 0),
    ("visualatom", "wave1_max", -1),
    ("visualatom", "wave_amplitude", -0.5),
    ("visualatom", "num_lines_min", 0),
    ("exfractaldb", "variance_threshold", 0.5),
    ("exfractaldb", "projection", "fisheye"),
    ("exfractaldb", "viewpoint", "random"),
    ("exfractaldb", "weight_levels", 10),
    ("exfractaldb", "camera_distance", 1.0),
    ("exfractaldb", "num_maps_max", 20),
])
def test_out_of_range_parameters_raise_value_error_naming_the_field(name, field, value):
    with pytest.raises(ValueError, match=rf"^{field}: got"):
        get_generator(name, **{field: value})


@pytest.mark.parametrize("name,low,high", [
    ("rcdb", "perlin_min", "perlin_max"), ("rcdb", "radius_min", "radius_max"),
    ("visualatom", "vertex_min", "vertex_max"), ("visualatom", "wave2_min", "wave2_max"),
    ("exfractaldb", "num_maps_min", "num_maps_max")])
def test_inverted_ranges_are_rejected(name, low, high):
    cfg = get_generator(name).config
    with pytest.raises(ValueError, match=rf"^{low}: got .* expected a value <= {high}"):
        get_generator(name, **{low: getattr(cfg, high) + 1})


def test_preset_overrides_are_validated():
    with pytest.raises(ValueError, match=r"^data\.perlin_max: got"):
        get_preset("rcdb-1k", ["perlin_max=500"])
    assert get_preset("visualatom-1k", ["wave1_max=10"]).data.wave1_max == 10


@pytest.mark.parametrize("preset", ["rcdb-21k", "visualatom-21k"])
def test_21k_contour_presets_have_21000_distinct_categories(preset):
    exp = get_preset(preset)
    gen = build_generator(exp.generator, exp.data)
    assert gen.num_classes == 21_000
    params = [gen.category_params(c) for c in range(gen.num_classes)]
    assert len({tuple(sorted(p.items())) for p in params}) == 21_000
    c = exp.data
    n_vertex = np.array([p["n_vertex"] for p in params])
    n_lines = np.array([p["n_lines"] for p in params])
    assert n_vertex.min() >= c.vertex_min and n_vertex.max() <= c.vertex_max
    assert n_lines.min() == c.num_lines_min and n_lines.max() == c.num_lines_max
    if preset.startswith("visualatom"):
        w1 = np.array([p["wave1"] for p in params])
        w2 = np.array([p["wave2"] for p in params])
        assert w1.min() == 0 and w1.max() == 20 and w2.min() == 0 and w2.max() == 20
        assert np.all((w1 != w2) | (w1 == 0))
        assert len(set(zip(w1.tolist(), w2.tolist(), strict=True))) == 21 + 20 * 20  # all pairs occur


def test_exfractaldb_21k_categories_are_independent_and_distinct():
    exp = get_preset("exfractaldb-21k")
    gen = build_generator(exp.generator, exp.data)
    assert gen.num_classes == 21_000
    # every class searches from its own seed (class k never needs classes < k) ...
    assert len({gen.category_seed(c) for c in range(21_000)}) == 21_000
    # ... and the accepted systems of classes spread over the range are distinct and well formed
    classes = np.linspace(0, 20_999, 24).astype(int).tolist()
    systems = [gen.category_params(c)["maps"] for c in classes]
    assert len({s.tobytes() for s in systems}) == len(classes)
    for maps in systems:
        assert maps.ndim == 2 and maps.shape[1] == 12 and 2 <= len(maps) <= 7
        assert np.abs(maps).max() <= 1.0
    fresh = build_generator(exp.generator, exp.data)
    assert np.array_equal(fresh.category_params(classes[-1])["maps"], systems[-1])


def test_rcdb_vertex_count_follows_the_truncated_exponential():
    rng = np.random.default_rng(0)
    draws = rng.exponential(100.0, 400_000).astype(int)
    official = draws[(draws > 2) & (draws <= 200)]  # the original's redraw-until-in-range rule
    ours = np.array([truncated_exponential_int(u, 100.0, 3, 200) for u in rng.random(50_000)])
    assert ours.min() == 3 and ours.max() == 200
    assert abs(ours.mean() - official.mean()) < 1.0
    assert abs(np.median(ours) - np.median(official)) <= 2


def test_second_wave_differs_from_the_first_unless_it_is_zero():
    for n1 in range(21):
        values = {second_wave(u, n1, 0, 20) for u in np.linspace(0, 1, 500, endpoint=False)}
        assert values == (set(range(21)) if n1 == 0 else set(range(21)) - {n1})
    assert second_wave(0.3, 4, 4, 4) == 4  # nothing else to choose


def test_rcdb_draws_exact_polygon_outlines_on_white():
    # no noise, no outward step, r0 = 100, round, centred: every contour is the same diamond
    gen = get_generator("rcdb", num_classes=2, num_instances=2, image_size=512, vertex_min=4,
                        vertex_max=4, perlin_min=0.0, perlin_max=0.0, line_width=0.0, radius_min=100,
                        radius_max=100, oval_rate=1.0, start_pos=0, gray_max=200, num_lines_min=3,
                        num_lines_max=3)
    img = gen.render(0, 0)
    drawn = np.argwhere(img < 255)
    assert img[256, 256] == 255 and img[0, 0] == 255
    for r, c in [(256, 356), (356, 256), (256, 156), (156, 256)]:  # the corners (floored)
        assert img[r - 1:r + 1, c - 1:c + 1].min() < 255, (r, c)
    # 4 diagonal edges of 101 pixels sharing 4 corners, all on |dx| + |dy| = 100 (+-1 for rounding)
    assert 396 <= len(drawn) <= 404
    assert np.all(np.abs(np.abs(drawn - 256).sum(axis=1) - 100) <= 1)


def test_rcdb_and_visualatom_image_statistics():
    rcdb = get_generator("rcdb", num_classes=16, num_instances=2, image_size=256)
    atom = get_generator("visualatom", num_classes=16, num_instances=2, image_size=256)
    white, black = [], []
    for c in range(16):
        img = rcdb.render(c, 0)
        assert np.count_nonzero(img < 255) > 100  # contour pixels exist
        white.append(np.count_nonzero(img == 255) / img.size)
        img = atom.render(c, 0)
        assert np.count_nonzero(img) > 100
        black.append(np.count_nonzero(img == 0) / img.size)
    # white (RCDB) / black (VisualAtom) background: most pixels of a typical image, some of every one
    assert min(white) > 0.01 and np.median(white) > 0.5
    assert min(black) > 0.01 and np.median(black) > 0.5


def test_visualatom_wave_frequencies_change_the_image():
    base = dict(num_classes=3, num_instances=2, image_size=256, perlin_min=0.0, perlin_max=0.0,
                num_lines_min=100, num_lines_max=100, start_pos=0, oval_rate=1.0)

    def image(n1, n2):
        gen = get_generator("visualatom", wave1_min=n1, wave1_max=n1, wave2_min=n2, wave2_max=n2, **base)
        assert (gen.category_params(1)["wave1"], gen.category_params(1)["wave2"]) == (n1, n2)
        return gen.render(1, 0)

    a, b, c = image(3, 0), image(7, 0), image(3, 11)
    assert not np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(b, c)
    assert np.array_equal(a, image(3, 0))
    # without noise, n1 = 4 lobes make the image symmetric under a quarter turn (up to rounding)
    sym = image(4, 0) > 0
    assert (sym & np.rot90(sym)).sum() > 0.8 * sym.sum()


def test_exfractaldb_views_change_the_image_but_not_the_cloud():
    gen = get_generator("exfractaldb", **{**SMALL["exfractaldb"], "num_instances": 300})
    rows = len(weight_table(0.1, 6))
    assert rows == 145
    cloud = gen.point_cloud(1, 7)
    assert np.array_equal(cloud, gen.point_cloud(1, 7 + rows))  # same weight row, another view
    assert not np.array_equal(cloud, gen.point_cloud(1, 8))  # another weight row
    a, b = gen.render(1, 7), gen.render(1, 7 + rows)
    assert not np.array_equal(a, b)
    for img in (a, b):
        assert set(np.unique(img).tolist()) == {0, 255}
        assert 100 < np.count_nonzero(img) < 0.6 * img.size
    # the cloud is normalised to [-1, 1] over all axes and centred
    assert abs(cloud.mean(axis=0)).max() < 1e-9
    span = cloud.max(axis=0) - cloud.min(axis=0)
    assert abs(span.max() - 2.0) < 1e-9


def test_exfractaldb_ring_views_are_the_public_renderers_twelve_turns_at_zero_elevation():
    gen = get_generator("exfractaldb", **{**SMALL["exfractaldb"], "num_instances": 145 * 13})
    assert gen.config.viewpoint == "ring" and gen.config.num_views == 12
    turns = []
    for k in range(13):
        rot = gen.view(0, 145 * k + 3)
        assert np.allclose(rot[1], [0, 1, 0]) and np.allclose(rot[:, 1], [0, 1, 0])  # about y only
        turns.append(np.degrees(np.arctan2(rot[0, 2], rot[0, 0])) % 360)
    for k, turn in enumerate(turns):  # 30 degrees k + 30, jittered by at most pi degrees
        gap = (turn - (30 * (k % 12) + 30) + 180) % 360 - 180
        assert abs(gap) <= np.pi + 1e-9
    assert len({round(t, 6) for t in turns}) == 13  # view 12 is view 0 again, with its own jitter


def test_exfractaldb_projection_modes_and_point_size():
    base = {**SMALL["exfractaldb"], "image_size": 128}
    persp = get_generator("exfractaldb", **base).render(0, 0)
    ortho = get_generator("exfractaldb", projection="orthographic", **base).render(0, 0)
    turn = get_generator("exfractaldb", viewpoint="turntable", **base).render(0, 0)
    big = get_generator("exfractaldb", point_size=3, **base).render(0, 0)
    assert len({x.tobytes() for x in (persp, ortho, turn, big)}) == 4
    assert np.count_nonzero(big) > np.count_nonzero(persp)


def test_exfractaldb_search_accepts_by_per_axis_variance():
    gen = get_generator("exfractaldb", **SMALL["exfractaldb"])
    maps = gen.category_params(0)["maps"]
    probs = ifs3d.det_probs(maps)
    # the one-pass spread of the search equals the variance of the normalised stored cloud
    cloud = ifs3d.point_cloud(maps, probs, 10_000, 99, 1.0)
    spread = ifs3d.spread(maps, probs, 10_000, np.uint64(99), 1.0)
    assert abs(ifs3d.axis_variances(cloud, len(cloud)).min() - spread) < 1e-9
    assert spread > 0.05
    with pytest.raises(ValueError, match="^variance_threshold:"):
        get_generator("exfractaldb", variance_threshold=0.3, max_search_tries=5).category_params(0)


def test_perlin_gradients_match_the_noise_package():
    grad = perlin.gradients(7)
    assert grad[256] == grad[0]
    values, counts = np.unique(grad[:256], return_counts=True)
    assert values.tolist() == [-1, 1, 2, 3, 4, 5, 6, 7, 8]
    assert counts.tolist() == [128] + [16] * 8  # hashes 0..255 once each
    assert np.all(perlin.noise1(np.arange(300.0), grad) == 0.0)
    noise = pytest.importorskip("noise")
    # recover the package's lattice gradients, then our formula must give its values
    t = 1e-3
    theirs = np.array([round(noise.pnoise1(k + t) / (0.4 * t)) for k in range(256)], dtype=float)
    xs = np.random.default_rng(0).uniform(0, 10_000, 5000).astype(np.float32).astype(np.float64)
    expected = np.array([noise.pnoise1(float(x)) for x in xs])
    assert np.abs(perlin.noise1(xs, np.append(theirs, theirs[0])) - expected).max() < 1e-5


def test_debug_presets_render_non_empty_images():
    for name in ("debug-rcdb", "debug-visualatom", "debug-exfractaldb"):
        exp = get_preset(name)
        gen = build_generator(exp.generator, exp.data)
        assert gen.num_classes * gen.num_instances <= 64
        img = gen.render(gen.num_classes - 1, gen.num_instances - 1)
        assert img.shape == (exp.data.image_size,) * 2 and img.min() < img.max()


def test_clipped_lines_draw_exactly_the_visible_part_of_the_line():
    rng = np.random.default_rng(3)
    for _ in range(300):
        x0, y0, x1, y1 = rng.integers(-400, 700, 4).tolist()
        small = np.zeros((300, 300), np.uint8)
        big = np.zeros((1500, 1500), np.uint8)  # the same line with both ends inside
        contour.draw_line(small, x0, y0, x1, y1, 9)
        contour.draw_line(big, x0 + 600, y0 + 600, x1 + 600, y1 + 600, 9)
        assert np.array_equal(small, big[600:900, 600:900]), (x0, y0, x1, y1)
        assert big[y0 + 600, x0 + 600] == big[y1 + 600, x1 + 600] == 9  # both end points drawn
