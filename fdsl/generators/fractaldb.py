"""FractalDB (Kataoka et al. ACCV'20) with the sigma-factor search option (Anderson & Farrell).

Categories: each class runs its own seeded search (N maps in num_maps_min..num_maps_max,
parameters U(-param_range, param_range), p proportional to |det|, accepted when a point rendering
fills at least `fill_rate` of a search_size^2 canvas), so class k is computed without the classes
before it. With `sampling="sigma"` the maps are drawn contractive with a sigma-factor in range,
with no rejection loop.

Instances (FractalDB's layout): instance i is flip i % 4 (none, top-bottom, left-right, both) of
weight row (i // 4) % R, render i // (4 R). The rows are the official weights_<step>.csv in its
order: each of the 6 parameters in turn scaled by 0.2, 0.2 + step, ..., 1.8, the all-ones row once
(in the first parameter's block: row 2 for step 0.4, R = 25). FractalDB-1k's 1,000 instances are
25 rows x 10 renders x 4 flips. As in the official make_fractaldb.py / ifs_function.py:
- a weight row scales a..f while each map keeps the category's probability (|det| of the
  unweighted maps, the CSV's column 7);
- the renders of one (category, row) share their orbit (the official code re-seeds numpy with 100
  for every render) and differ in their random patch masks;
- the four flips share one rendering (cached); the origin, the orbit's start, counts in the framing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np

from fdsl.config import with_defaults
from fdsl.generators import ifs, register
from fdsl.generators.base import DatasetConfig, Generator
from fdsl.generators.rng import derive_seed

NUM_FLIPS = 4


@dataclasses.dataclass
@with_defaults(image_size=362)
class IFSConfig(DatasetConfig):
    """What every 2-D IFS dataset shares: counts, seed, canvas, drawing and category search."""

    pad: int = 6
    """Margin in pixels between the fractal's bounding box and the canvas edge."""
    num_points: int = 200_000
    """Chaos-game points per image."""
    draw_mode: Literal["patch", "point"] = "patch"
    """"patch": a 3x3 tile with a random binary mask per point; "point": one pixel per point."""
    color: Literal["gray", "color"] = "gray"
    """"gray": one-channel image of gray_value; "color": RGB, hue cycling along the orbit."""
    gray_value: int = 127
    """Intensity of drawn pixels in gray mode (FractalDB's ViT configs use 127)."""
    sampling: Literal["search", "sigma"] = "search"
    """"search": random maps + filling-rate acceptance; "sigma": sigma-factor sampling, no rejection."""
    num_maps_min: int = 2
    """Fewest affine maps per system."""
    num_maps_max: int = 7
    """Most affine maps per system (inclusive)."""
    param_range: float = 1.0
    """Map parameters are drawn from U(-param_range, param_range) (translations too, for sigma)."""
    fill_rate: float = 0.2
    """Search: accept a system when its point rendering fills at least this fraction of pixels."""
    search_points: int = 100_000
    """Search: chaos-game points of the acceptance rendering."""
    search_size: int = 512
    """Search: canvas side of the acceptance rendering."""
    max_search_tries: int = 100_000
    """Search: give up (with an error) after this many rejected systems for one category."""
    sigma_lo: float = 5.0
    """Sigma sampling: the sigma-factor is drawn from U((sigma_lo + N) / 2, (sigma_hi + N) / 2)."""
    sigma_hi: float = 6.0
    """Sigma sampling: upper offset of the sigma-factor range (see sigma_lo)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("pad", 0, self.image_size // 4)
        self._check_range("num_points", 1, 100_000_000)
        self._check_choice("draw_mode", ["patch", "point"])
        self._check_choice("color", ["gray", "color"])
        self._check_range("gray_value", 1, 255)
        self._check_choice("sampling", ["search", "sigma"])
        self._check_range("num_maps_min", 2, 16)
        self._check_range("num_maps_max", 2, 16)
        self._check_order("num_maps_min", "num_maps_max")
        self._check_range("param_range", 1e-6, 10.0)
        self._check_range("fill_rate", 0.0, 0.9)
        self._check_range("search_points", 100, 10_000_000)
        self._check_range("search_size", 16, 4096)
        self._check_range("max_search_tries", 1, 100_000_000)
        self._check_range("sigma_lo", 0.0, 20.0)
        self._check_range("sigma_hi", 0.0, 20.0)
        self._check_order("sigma_lo", "sigma_hi")
        if self.sampling == "sigma" and (self.sigma_hi + self.num_maps_min) / 2 >= 3 * self.num_maps_min:
            raise ValueError(f"sigma_hi: got {self.sigma_hi}, expected (sigma_hi + num_maps_min) / 2 "
                             f"< 3 * num_maps_min so that contractive maps exist")


def palette(config: IFSConfig) -> np.ndarray:
    """Colours the rasteriser cycles through: one gray level, or the hue circle."""
    if config.color == "gray":
        return np.full((1, 1), config.gray_value, np.uint8)
    return ifs.hue_palette()


def find_system(config: IFSConfig, seed: int) -> np.ndarray:
    """One system (N, 6) drawn by the config's sampling rule from `seed`."""
    if config.sampling == "sigma":
        return ifs.sample_sigma_system(seed, n_min=config.num_maps_min, n_max=config.num_maps_max,
                                       sigma_lo=config.sigma_lo, sigma_hi=config.sigma_hi,
                                       param_range=config.param_range)
    maps, _fill = ifs.search_system(seed, n_min=config.num_maps_min, n_max=config.num_maps_max,
                                    param_range=config.param_range, fill_rate=config.fill_rate,
                                    num_points=config.search_points, size=config.search_size,
                                    pad=config.pad, max_tries=config.max_search_tries)
    return maps


def flip(img: np.ndarray, kind: int) -> np.ndarray:
    """FractalDB's flips: 0 none, 1 top-bottom, 2 left-right, 3 both (a new contiguous array)."""
    if kind == 1:
        img = img[::-1]
    elif kind == 2:
        img = img[:, ::-1]
    elif kind == 3:
        img = img[::-1, ::-1]
    return np.ascontiguousarray(img)


@functools.cache
def weight_table(step: float) -> np.ndarray:
    """Instance weight rows (R, 6) in the order of the official weights_<step>.csv.

    Parameter by parameter, the factors 1 + k*step (k = -K..K, K = 0.8 / step) scale that one
    parameter; the all-ones row appears once, in the first parameter's block. For step 0.4: 0.2,
    0.6, 1.0, 1.4, 1.8 for a, then 0.2, 0.6, 1.4, 1.8 for each of b..f: R = 25, row 0 is
    (0.2, 1, 1, 1, 1, 1) (OFDB's one instance), row 2 the identity.
    """
    top = int(0.8 / step + 1e-9)
    rows = []
    for param in range(6):
        for k in range(-top, top + 1):
            if k == 0 and param > 0:
                continue
            row = np.ones(6)
            row[param] = 1.0 + k * step
            rows.append(row)
    return np.array(rows)


@dataclasses.dataclass
class FractalDBConfig(IFSConfig):
    """FractalDB: searched categories, instances by weight rows x renders x flips."""

    weight_step: float = 0.4
    """Spacing of the instance weight factors around 1 (0.4 gives FractalDB's 25 rows)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("weight_step", 0.05, 0.8)


class IFSGenerator(Generator):
    """Shared rendering of 2-D IFS datasets: per-class systems (cached) and flip-sharing renders."""

    config: IFSConfig

    def __init__(self, config: IFSConfig):
        super().__init__(config)
        self._systems: dict[int, np.ndarray] = {}
        self._palette = palette(config)
        self._last: tuple[tuple, np.ndarray] | None = None

    def system(self, class_id: int) -> np.ndarray:
        """The (N, 6) affine maps of a class, computed once per generator."""
        if class_id not in self._systems:
            self._systems[class_id] = self._make_system(class_id)
        return self._systems[class_id]

    def _make_system(self, class_id: int) -> np.ndarray:
        raise NotImplementedError

    def _draw(self, maps: np.ndarray, probs: np.ndarray, seed: int, patch_seed: int) -> np.ndarray:
        c = self.config
        return ifs.render_system(maps, probs, seed, size=c.image_size, pad=c.pad, num_points=c.num_points,
                                 patch=c.draw_mode == "patch", palette=self._palette, patch_seed=patch_seed)

    def _render_cached(self, key: tuple, draw_fn, flip_kind: int) -> np.ndarray:
        """flip `flip_kind` of the image `draw_fn()` draws, drawn once for consecutive equal keys."""
        if self._last is None or self._last[0] != key:
            self._last = (key, draw_fn())
        return flip(self._last[1], flip_kind)


@register
class FractalDBGenerator(IFSGenerator):
    name = "fractaldb"
    version = "2"
    config_cls = FractalDBConfig
    config: FractalDBConfig

    def _make_system(self, class_id: int) -> np.ndarray:
        return find_system(self.config, derive_seed(self.config.seed, "fractaldb/category", class_id))

    def instance_layout(self, instance_id: int) -> tuple[int, int, int]:
        """(weight row, render, flip) of an instance."""
        rows = len(weight_table(self.config.weight_step))
        return (instance_id // NUM_FLIPS) % rows, instance_id // (NUM_FLIPS * rows), instance_id % NUM_FLIPS

    def _render(self, class_id: int, instance_id: int) -> np.ndarray:
        row, render, flip_kind = self.instance_layout(instance_id)
        orbit_seed = derive_seed(self.config.seed, "fractaldb/orbit", class_id, row)
        patch_seed = derive_seed(self.config.seed, "fractaldb/instance", class_id, row, render)
        weights = weight_table(self.config.weight_step)[row]

        def draw() -> np.ndarray:
            maps = self.system(class_id)
            return self._draw(maps * weights, ifs.det_probs(maps), orbit_seed, patch_seed)

        return self._render_cached((class_id, row, render), draw, flip_kind)
