"""ExFractalDB (Kataoka et al. CVPR'22): 3-D fractal point clouds seen from several viewpoints.

Categories: each class runs its own seeded search (N maps in 2..7, the 12 parameters of each map
~ U(-1, 1), p proportional to |det|, accepted when the normalised 10,000-point cloud has a variance
above 0.05 on every axis: the authors' category_search.py with ExFractalDB_render.sh's threshold),
so class k is computed without the classes before it.

Instances: instance i uses weight row i % R of a table like FractalDB's over the 12 parameters (the
identity, then each parameter scaled by 1 +- k * 0.1, k = 1..6: the authors' weights_ins145.csv,
R = 145), whose cloud (num_points points, normalised and centred as the authors' instance.py does)
is then seen from a viewpoint: rotated, projected through a 45-degree pinhole camera 4 units away
(the authors' OpenGL settings; orthographic optional) and splatted one white pixel per point on
black, in software. Instances i and i + R share their cloud and differ in view.

Viewpoints (`viewpoint`): "ring" (the default) is the public renderer's (image_render/render.py,
view_point 12): view k = (i // R) % 12 at zero elevation, turned about the vertical axis by
2 pi k / 12 + 30 degrees + a jitter of U(-pi, pi) *degrees* (the code's glm.radians of a value
drawn in (-pi, pi)). The original's camera starts on the x axis, fdsl's on z: a fixed quarter
turn, i.e. three of the twelve steps, so the set of views is the same. "sphere" (a uniformly random
3-D rotation per instance) and "turntable" (a uniformly random turn about the vertical axis) are
fdsl's wider distributions, kept as named options.
A weighted system whose orbit diverges is cut where it diverges (the original drops it); a fully
diverged orbit gives a black image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import numpy as np

from fdsl.config import with_defaults
from fdsl.generators import ifs3d, register
from fdsl.generators.base import DatasetConfig, Generator
from fdsl.generators.rng import derive_seed, uniforms

NUM_PARAMS = 12


@dataclasses.dataclass
@with_defaults(image_size=224)
class ExFractalDBConfig(DatasetConfig):
    """ExFractalDB: searched 3-D IFS categories, weight rows x random viewpoints as instances."""

    num_maps_min: int = 2
    """Fewest affine maps per system."""
    num_maps_max: int = 7
    """Most affine maps per system (inclusive)."""
    param_range: float = 1.0
    """Map parameters are drawn from U(-param_range, param_range)."""
    variance_threshold: float = 0.05
    """Search: accept a system when its normalised cloud's variance exceeds this on every axis."""
    search_points: int = 10_000
    """Search: chaos-game points of the acceptance cloud."""
    max_search_tries: int = 1_000_000
    """Search: give up (with an error) after this many rejected systems for one category."""
    num_points: int = 10_000
    """Chaos-game points per rendered cloud."""
    normalize: float = 1.0
    """Clouds are min-max scaled to [-normalize, normalize] (all axes together), then centred."""
    weight_step: float = 0.1
    """Spacing of the instance weight factors around 1."""
    weight_levels: int = 6
    """Weight factors 1 +- k * weight_step for k = 1..weight_levels (6 gives the 145-row table)."""
    viewpoint: Literal["ring", "sphere", "turntable"] = "ring"
    """"ring": num_views evenly spaced turns about y at zero elevation (the public renderer);
    "sphere": a uniformly random rotation per instance; "turntable": a random turn about y."""
    num_views: int = 12
    """Ring: number of evenly spaced views (the public renderer's view_point, 12)."""
    view_jitter_deg: float = float(np.pi)
    """Ring: each view is turned by a further U(-view_jitter_deg, view_jitter_deg) degrees."""
    projection: Literal["perspective", "orthographic"] = "perspective"
    """Camera model of the software projection."""
    fov_deg: float = 45.0
    """Vertical field of view in degrees (orthographic: frames what the perspective camera
    frames at the origin's depth)."""
    camera_distance: float = 4.0
    """Distance from the camera to the cloud's centre."""
    point_size: int = 1
    """Side in pixels of the square drawn per point."""
    point_value: int = 255
    """Gray level of drawn points (on black)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("num_maps_min", 2, 16)
        self._check_range("num_maps_max", 2, 16)
        self._check_order("num_maps_min", "num_maps_max")
        self._check_range("param_range", 1e-6, 10.0)
        self._check_range("variance_threshold", 0.0, 0.3)
        self._check_range("search_points", 100, 10_000_000)
        self._check_range("max_search_tries", 1, 100_000_000)
        self._check_range("num_points", 1, 100_000_000)
        self._check_range("normalize", 1e-3, 1e3)
        self._check_range("weight_step", 0.01, 1.0)
        self._check_range("weight_levels", 0, 100)
        if self.weight_step * self.weight_levels >= 1.0:
            raise ValueError(f"weight_levels: got {self.weight_levels}, expected weight_levels * "
                             f"weight_step < 1 so that every weight factor is positive")
        self._check_choice("viewpoint", ["ring", "sphere", "turntable"])
        self._check_range("num_views", 1, 3600)
        self._check_range("view_jitter_deg", 0.0, 180.0)
        self._check_choice("projection", ["perspective", "orthographic"])
        self._check_range("fov_deg", 1.0, 179.0)
        self._check_range("camera_distance", 2.0 * self.normalize + ifs3d.Z_NEAR, 1e6)
        self._check_range("point_size", 1, 64)
        self._check_range("point_value", 1, 255)


@functools.cache
def weight_table(step: float, levels: int) -> np.ndarray:
    """Instance weight rows (R, 12): the identity, then each parameter scaled by 1 +- k*step.

    For step 0.1 and 6 levels the factors are 0.4..0.9 and 1.1..1.6 and R = 1 + 12 * 12 = 145,
    the rows of the authors' weights_ins145.csv (in another order).
    """
    rows = [np.ones(NUM_PARAMS)]
    for param in range(NUM_PARAMS):
        for k in [*range(-levels, 0), *range(1, levels + 1)]:
            row = np.ones(NUM_PARAMS)
            row[param] = 1.0 + k * step
            rows.append(row)
    return np.array(rows)


@register
class ExFractalDBGenerator(Generator):
    name = "exfractaldb"
    version = "2"
    config_cls = ExFractalDBConfig
    config: ExFractalDBConfig

    def __init__(self, config: ExFractalDBConfig):
        super().__init__(config)
        self._systems: dict[int, np.ndarray] = {}
        self._weights = weight_table(config.weight_step, config.weight_levels)

    def category_seed(self, class_id: int) -> int:
        """The seed that class `class_id`'s search starts from."""
        return derive_seed(self.config.seed, "exfractaldb/category", class_id)

    def system(self, class_id: int) -> np.ndarray:
        """The (N, 12) maps of a class: searched once per generator, without any other class."""
        if class_id not in self._systems:
            c = self.config
            self._systems[class_id] = ifs3d.search_system(
                self.category_seed(class_id), n_min=c.num_maps_min, n_max=c.num_maps_max,
                param_range=c.param_range, min_variance=c.variance_threshold,
                num_points=c.search_points, half=c.normalize, max_tries=c.max_search_tries)
        return self._systems[class_id]

    def category_params(self, class_id: int) -> dict:
        """The parameters that define category `class_id`: its maps and their probabilities."""
        maps = self.system(class_id)
        return {"maps": maps, "probs": ifs3d.det_probs(maps)}

    def point_cloud(self, class_id: int, instance_id: int) -> np.ndarray:
        """The normalised cloud (n, 3) of an instance's weight row; shared by all its views."""
        c = self.config
        row = instance_id % len(self._weights)
        maps = self.system(class_id)
        seed = derive_seed(c.seed, "exfractaldb/orbit", class_id, row)
        # the weights scale the maps; the probabilities stay the category's (as the original)
        return ifs3d.point_cloud(maps * self._weights[row], ifs3d.det_probs(maps), c.num_points, seed,
                                 c.normalize)

    def view(self, class_id: int, instance_id: int) -> np.ndarray:
        """The 3x3 rotation an instance is seen through."""
        c = self.config
        u = uniforms(derive_seed(c.seed, "exfractaldb/view", class_id, instance_id), 3)
        if c.viewpoint != "ring":
            return ifs3d.rotation(u, c.viewpoint)
        k = (instance_id // len(self._weights)) % c.num_views
        turn = k / c.num_views + (30.0 + (2.0 * u[0] - 1.0) * c.view_jitter_deg) / 360.0
        return ifs3d.rotation(np.array([turn % 1.0]), "turntable")

    def _render(self, class_id: int, instance_id: int) -> np.ndarray:
        c = self.config
        return ifs3d.project(self.point_cloud(class_id, instance_id), self.view(class_id, instance_id),
                             c.image_size, c.camera_distance, math.tan(math.radians(c.fov_deg) / 2),
                             c.projection == "perspective", c.point_size, c.point_value)
