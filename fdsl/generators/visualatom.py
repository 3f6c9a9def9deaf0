"""VisualAtom (Takashima et al. CVPR'23): contours shaped by two sinusoidal waves.

A category is (vertex count in 200..1000, contour count in 1..200, Perlin-noise strength
c ~ U(0, 4), line width ~ U(0, 0.1), start radius r0 in 10..60, wave frequencies n1, n2 in 0..20
with n2 != n1 unless n1 == 0, two oval rates in U(1, 2)); the settings of the authors'
make_VisualAtom.sh. Every vertex's displacement subtracts the two waves
0.5 sin(n1 theta) + 0.5 sin(n2 theta), so n1 and n2 set the contour's lobes. Each instance
re-draws the centre, every contour's gray and all the noise. White-to-gray contours on black.
"""

from __future__ import annotations

import dataclasses

from fdsl.config import with_defaults
from fdsl.generators import register
from fdsl.generators.contour import ContourConfig, ContourGenerator, randint
from fdsl.generators.rng import derive_seed, uniforms


@dataclasses.dataclass
@with_defaults(vertex_min=200, vertex_max=1000, radius_min=10, radius_max=60, start_pos=512)
class VisualAtomConfig(ContourConfig):
    """VisualAtom: uniform vertex counts, noise plus two sine waves, contours on black. Its ranges
    are the originals' (make_VisualAtom.sh): 200..1000 vertices, start radii 10..60 (radius_min + 50),
    centres anywhere on the 512 canvas."""

    wave1_min: int = 0
    """Lowest frequency n1 of the first wave."""
    wave1_max: int = 20
    """Highest frequency n1 of the first wave (inclusive)."""
    wave2_min: int = 0
    """Lowest frequency n2 of the second wave."""
    wave2_max: int = 20
    """Highest frequency n2 of the second wave (inclusive); n2 != n1 unless n1 == 0 or no other."""
    wave_amplitude: float = 0.5
    """Amplitude, in pixels per contour, of each of the two waves."""

    def validate(self) -> None:
        super().validate()
        self._check_range("wave1_min", 0, 1000)
        self._check_range("wave1_max", 0, 1000)
        self._check_order("wave1_min", "wave1_max")
        self._check_range("wave2_min", 0, 1000)
        self._check_range("wave2_max", 0, 1000)
        self._check_order("wave2_min", "wave2_max")
        self._check_range("wave_amplitude", 0.0, 100.0)


def second_wave(u: float, n1: int, lo: int, hi: int) -> int:
    """n2 uniform in lo..hi but != n1 (unless n1 == 0 or lo..hi holds nothing else)."""
    if n1 == 0 or not lo <= n1 <= hi or lo == hi:
        return randint(u, lo, hi)
    n2 = randint(u, lo, hi - 1)
    return n2 + 1 if n2 >= n1 else n2


@register
class VisualAtomGenerator(ContourGenerator):
    name = "visualatom"
    version = "1"
    config_cls = VisualAtomConfig
    config: VisualAtomConfig
    background = 0
    noise_gain = 1.0

    def category_params(self, class_id: int) -> dict:
        c = self.config
        u = uniforms(derive_seed(c.seed, "visualatom/category", class_id), 9)
        wave1 = randint(u[5], c.wave1_min, c.wave1_max)
        return {
            "n_vertex": randint(u[0], c.vertex_min, c.vertex_max),
            "n_lines": randint(u[1], c.num_lines_min, c.num_lines_max),
            "perlin": c.perlin_min + u[2] * (c.perlin_max - c.perlin_min),
            "width": u[3] * c.line_width,
            "radius": randint(u[4], c.radius_min, c.radius_max),
            "wave1": wave1,
            "wave2": second_wave(u[6], wave1, c.wave2_min, c.wave2_max),
            "oval_x": 1.0 + u[7] * (c.oval_rate - 1.0),
            "oval_y": 1.0 + u[8] * (c.oval_rate - 1.0),
        }

    def instance_params(self, class_id: int, instance_id: int) -> dict:
        u = uniforms(derive_seed(self.config.seed, "visualatom/instance", class_id, instance_id), 2)
        center_x, center_y = self._center(u[0], u[1])
        return {"center_x": center_x, "center_y": center_y}

    def _wave(self, params: dict) -> tuple[int, int, float]:
        return params["wave1"], params["wave2"], self.config.wave_amplitude
