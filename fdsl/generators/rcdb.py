"""RCDB, the Radial Contour DataBase (Kataoka et al. CVPR'22): noisy concentric polygons.

A category is (vertex count, contour count, Perlin-noise strength c, line width): the vertex
count is int(Exponential(mean 100)) kept in 3..200 (drawn exactly, by the inverse CDF of the
truncated distribution, where the original redraws until it falls in range), the contour count
uniform in 1..200, c ~ U(0, 4), the line width ~ U(0, 0.1). Each instance re-draws what the
original re-draws per image: the start radius r0 in 0..100, the two oval rates in U(1, 2), the
centre, every contour's gray and all the noise. Contours are gray 1-pixel polylines on white.
"""

from __future__ import annotations

import dataclasses
import math

from fdsl.generators import register
from fdsl.generators.contour import ContourConfig, ContourGenerator, randint
from fdsl.generators.rng import derive_seed, uniforms


@dataclasses.dataclass
class RCDBConfig(ContourConfig):
    """RCDB: exponential vertex counts, contours displaced by Perlin noise, gray on white."""

    vertex_mean: float = 100.0
    """Mean of the exponential distribution the vertex count is drawn from (then kept in range)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("vertex_mean", 1.0, 1e6)


def truncated_exponential_int(u: float, mean: float, lo: int, hi: int) -> int:
    """int(X) for X ~ Exponential(mean) conditioned on lo <= int(X) <= hi, from a uniform u."""
    top, bottom = math.exp(-lo / mean), math.exp(-(hi + 1) / mean)
    value = int(-mean * math.log(top - u * (top - bottom)))
    return min(max(value, lo), hi)


@register
class RCDBGenerator(ContourGenerator):
    name = "rcdb"
    version = "1"
    config_cls = RCDBConfig
    config: RCDBConfig
    background = 255
    noise_gain = 2.0

    def category_params(self, class_id: int) -> dict:
        c = self.config
        u = uniforms(derive_seed(c.seed, "rcdb/category", class_id), 4)
        return {
            "n_vertex": truncated_exponential_int(u[0], c.vertex_mean, c.vertex_min, c.vertex_max),
            "n_lines": randint(u[1], c.num_lines_min, c.num_lines_max),
            "perlin": c.perlin_min + u[2] * (c.perlin_max - c.perlin_min),
            "width": u[3] * c.line_width,
        }

    def instance_params(self, class_id: int, instance_id: int) -> dict:
        c = self.config
        u = uniforms(derive_seed(c.seed, "rcdb/instance", class_id, instance_id), 5)
        center_x, center_y = self._center(u[3], u[4])
        return {
            "radius": randint(u[0], c.radius_min, c.radius_max),
            "oval_x": 1.0 + u[1] * (c.oval_rate - 1.0),
            "oval_y": 1.0 + u[2] * (c.oval_rate - 1.0),
            "center_x": center_x,
            "center_y": center_y,
        }
