"""Radial contours, the drawing shared by RCDB and VisualAtom (numba).

A contour image starts from an oval polygon of `n_vertex` vertices around a centre and displaces
it `n_lines` times. Each time every vertex moves radially by a Perlin-noise value (sampled at a
uniform random position, as the originals do) minus an optional per-vertex wave, plus a small
outward `width`; the closed polygon is then drawn as 1-pixel lines in one random gray:

    d_v   = pnoise1(U(0, noise_span)) * gain * c - c - wave_v
    x_v  -= cos(v * 2pi / n) * (d_v - width)            (and y_v with sin and its own noise)

Lengths are in pixels of a 512-pixel canvas (the originals' size); other image sizes scale the
drawing. Lines are 1-pixel DDA lines between the floored vertex positions, clipped to the
canvas, with no anti-aliasing (as PIL's `ImageDraw.line(width=1)` that the originals call).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numba
import numpy as np

from fdsl.config import with_defaults
from fdsl.generators import perlin
from fdsl.generators.base import DatasetConfig, Generator
from fdsl.generators.rng import derive_seed, next_uniform

REFERENCE_SIZE = 512
"""Canvas side, in pixels, that the contour lengths of the configs are expressed in."""


@numba.njit(inline="always")
def draw_line(img, x0, y0, x1, y1, value):
    """Set the pixels of the line (x0, y0) -> (x1, y1) to `value`, clipped to `img`.

    One pixel per step along the major axis, the minor coordinate rounded (a DDA: the pixels of
    Bresenham's line up to ties, without its per-pixel branches).
    """
    h = img.shape[0]
    w = img.shape[1]
    if (x0 < 0 and x1 < 0) or (y0 < 0 and y1 < 0) or (x0 >= w and x1 >= w) or (y0 >= h and y1 >= h):
        return
    n = max(abs(x1 - x0), abs(y1 - y0))
    if n == 0:
        img[y0, x0] = value
        return
    sx = (x1 - x0) / n
    sy = (y1 - y0) / n
    fx = x0 + 0.5
    fy = y0 + 0.5
    if 0 <= x0 < w and 0 <= x1 < w and 0 <= y0 < h and 0 <= y1 < h:
        for k in range(n + 1):  # all inside: coordinates are positive, int() floors
            img[int(fy + k * sy), int(fx + k * sx)] = value
        return
    k_lo, k_hi = _clip_steps(fx, sx, w, 0, n)  # steps that can fall inside the canvas
    k_lo, k_hi = _clip_steps(fy, sy, h, k_lo, k_hi)
    for k in range(k_lo, k_hi + 1):
        x = int(math.floor(fx + k * sx))
        y = int(math.floor(fy + k * sy))
        if 0 <= x < w and 0 <= y < h:
            img[y, x] = value


@numba.njit(inline="always")
def _clip_steps(start, slope, extent, k_lo, k_hi):
    """Narrow the steps k_lo..k_hi to those where start + k * slope may lie in [0, extent) (+-1)."""
    if slope == 0.0:
        return k_lo, k_hi
    a = -start / slope
    b = (extent - start) / slope
    return max(k_lo, int(math.floor(min(a, b))) - 1), min(k_hi, int(math.ceil(max(a, b))) + 1)


@numba.njit(cache=True)
def render_contours(size, background, gray_lo, gray_hi, n_vertex, n_lines, gain, strength, width,
                    radius_x, radius_y, center_x, center_y, wave1, wave2, wave_amplitude, noise_span,
                    grad, seed):
    """A (size, size) uint8 image of `n_lines` displaced closed polygons on `background`.

    `wave1`, `wave2` are the frequencies of the per-vertex wave
    wave_amplitude * (sin(v * step * wave1) + sin(v * step * wave2)) (VisualAtom; 0 for RCDB).
    Every random draw (each contour's gray, each vertex's noise position) comes from `seed`.
    """
    img = np.full((size, size), background, np.uint8)
    scale = size / REFERENCE_SIZE
    step = (math.pi * 2.0) / n_vertex
    cos_v = np.empty(n_vertex)
    sin_v = np.empty(n_vertex)
    wave = np.empty(n_vertex)
    px = np.empty(n_vertex)
    py = np.empty(n_vertex)
    ix = np.empty(n_vertex, np.int64)
    iy = np.empty(n_vertex, np.int64)
    for v in range(n_vertex):
        cos_v[v] = math.cos(step * v)
        sin_v[v] = math.sin(step * v)
        wave[v] = wave_amplitude * (math.sin(step * v * wave1) + math.sin(step * v * wave2))
        px[v] = cos_v[v] * radius_x
        py[v] = sin_v[v] * radius_y
    state = np.uint64(seed)
    for _ in range(n_lines):
        state, u = next_uniform(state)
        gray = np.uint8(gray_lo + min(int(u * (gray_hi - gray_lo + 1)), gray_hi - gray_lo))
        for v in range(n_vertex):
            state, u = next_uniform(state)
            d = perlin.pnoise1(u * noise_span, grad) * gain * strength - strength - wave[v]
            px[v] -= cos_v[v] * (d - width)
            state, u = next_uniform(state)
            d = perlin.pnoise1(u * noise_span, grad) * gain * strength - strength - wave[v]
            py[v] -= sin_v[v] * (d - width)
            ix[v] = int(math.floor((px[v] + center_x) * scale))
            iy[v] = int(math.floor((py[v] + center_y) * scale))
        for v in range(n_vertex - 1):
            draw_line(img, ix[v], iy[v], ix[v + 1], iy[v + 1], gray)
        draw_line(img, ix[n_vertex - 1], iy[n_vertex - 1], ix[0], iy[0], gray)
    return img


def randint(u: float, lo: int, hi: int) -> int:
    """The integer in lo..hi (inclusive) that a uniform u in [0, 1) selects."""
    return lo + min(int(u * (hi - lo + 1)), hi - lo)


@dataclasses.dataclass
@with_defaults(image_size=512)
class ContourConfig(DatasetConfig):
    """What RCDB and VisualAtom share: counts, seed, canvas and the contour parameters' ranges.

    Lengths (radii, start_pos, noise strength, line width) are in pixels of a 512-pixel canvas.
    """

    vertex_min: int = 3
    """Fewest polygon vertices of a category."""
    vertex_max: int = 200
    """Most polygon vertices of a category (inclusive)."""
    num_lines_min: int = 1
    """Fewest contours (displaced polygons, the papers' "polygons" / "orbits") per image."""
    num_lines_max: int = 200
    """Most contours per image (inclusive)."""
    perlin_min: float = 0.0
    """The category's Perlin-noise strength c is drawn from U(perlin_min, perlin_max)."""
    perlin_max: float = 4.0
    """Upper end of the noise strength range (the originals: perlin_min + 4)."""
    line_width: float = 0.1
    """The category's outward step per contour (the papers' "line width") is U(0, line_width)."""
    radius_min: int = 0
    """Smallest start radius r0 in pixels."""
    radius_max: int = 100
    """Largest start radius r0 in pixels (inclusive)."""
    oval_rate: float = 2.0
    """The polygon's x and y radii are r0 times U(1, oval_rate) each."""
    start_pos: int = 400
    """The centre is (512 + randint(-start_pos, start_pos)) / 2 on each axis."""
    gray_min: int = 0
    """Darkest contour gray (each contour draws its gray from gray_min..gray_max)."""
    gray_max: int = 255
    """Lightest contour gray (inclusive)."""
    noise_span: float = 10_000.0
    """Each vertex samples the 1-D Perlin noise at a position drawn from U(0, noise_span)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("vertex_min", 3, 100_000)
        self._check_range("vertex_max", 3, 100_000)
        self._check_order("vertex_min", "vertex_max")
        self._check_range("num_lines_min", 1, 10_000)
        self._check_range("num_lines_max", 1, 10_000)
        self._check_order("num_lines_min", "num_lines_max")
        self._check_range("perlin_min", 0.0, 100.0)
        self._check_range("perlin_max", 0.0, 100.0)
        self._check_order("perlin_min", "perlin_max")
        self._check_range("line_width", 0.0, 100.0)
        self._check_range("radius_min", 0, 10_000)
        self._check_range("radius_max", 0, 10_000)
        self._check_order("radius_min", "radius_max")
        self._check_range("oval_rate", 1.0, 10.0)
        self._check_range("start_pos", 0, 10_000)
        self._check_range("gray_min", 0, 255)
        self._check_range("gray_max", 0, 255)
        self._check_order("gray_min", "gray_max")
        self._check_range("noise_span", 1.0, 1e9)


class ContourGenerator(Generator):
    """Renders a category's contours; subclasses say how parameters are drawn."""

    background: ClassVar[int]
    """Canvas gray before drawing."""
    noise_gain: ClassVar[float]
    """`gain` of the displacement formula (RCDB's code doubles the noise, VisualAtom's does not)."""
    config: ContourConfig

    def __init__(self, config: ContourConfig):
        super().__init__(config)
        self._grad = perlin.gradients(derive_seed(config.seed, f"{self.name}/perlin"))

    def category_params(self, class_id: int) -> dict:
        """The parameters that define category `class_id`, computed without any other class."""
        raise NotImplementedError

    def instance_params(self, class_id: int, instance_id: int) -> dict:
        """Parameters an instance re-draws: centre (and, for RCDB, radius and oval rates)."""
        raise NotImplementedError

    def _render(self, class_id: int, instance_id: int) -> np.ndarray:
        c = self.config
        p = {**self.category_params(class_id), **self.instance_params(class_id, instance_id)}
        wave1, wave2, amplitude = self._wave(p)
        seed = derive_seed(c.seed, f"{self.name}/noise", class_id, instance_id)
        return render_contours(c.image_size, self.background, c.gray_min, c.gray_max, p["n_vertex"],
                               p["n_lines"], self.noise_gain, p["perlin"], p["width"],
                               p["radius"] * p["oval_x"], p["radius"] * p["oval_y"], p["center_x"],
                               p["center_y"], wave1, wave2, amplitude, c.noise_span, self._grad,
                               np.uint64(seed))

    def _wave(self, params: dict) -> tuple[int, int, float]:
        """(frequency 1, frequency 2, amplitude) of the per-vertex wave; none by default."""
        return 0, 0, 0.0

    def _center(self, u_x: float, u_y: float) -> tuple[float, float]:
        """The originals' centre: (512 + randint(-start_pos, start_pos)) / 2 on each axis."""
        s = self.config.start_pos
        return ((REFERENCE_SIZE + randint(u_x, -s, s)) / 2, (REFERENCE_SIZE + randint(u_y, -s, s)) / 2)
