"""1p-frac (Nakamura et al., ECCV'24, SUPER-TADORY/1p-frac): one fractal, classes by perturbation.

As the official generator (1p-frac_generater/src/render_from_oneparam_mp.py, run by generate.sh):
- **the base system**: N = 2 maps drawn by sigma-factor sampling (Anderson & Farrell) with the
  sigma-factor uniform in [sigma - sigma_margin, sigma + sigma_margin] (generate.sh: sigma 4.0,
  margin 0.1); translations U(-1, 1). Each map's probability is |det| of the *base* maps.
- **class k**: every parameter of every map multiplied by its own U(1 - delta, 1 + delta) factor
  (the paper's Delta is multiplicative); the probabilities stay the base's.
- **fill rejection**: a class whose first render fills `min_fill` or less of the canvas (pixels
  drawn, patch mode) is drawn again with new factors, as the official loop does.
- **one image per class** at 512 px, 100,000 points, 3x3 random patches, gray 127, no flips; every
  class uses one orbit stream (the official code re-seeds numpy with 100 for every class).

fdsl's addition: instances beyond the first (`num_instances` > 1, the laptop preset) re-render the
class with their own orbit stream and patch masks. Instance 0 is the official image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fdsl.config import with_defaults
from fdsl.generators import ifs, register
from fdsl.generators.fractaldb import IFSConfig, IFSGenerator
from fdsl.generators.rng import derive_seed, uniforms


@dataclasses.dataclass
@with_defaults(num_instances=1, image_size=512, num_points=100_000, sampling="sigma", num_maps_min=2,
               num_maps_max=2)
class OnePFracConfig(IFSConfig):
    """1p-frac: one sigma-sampled system, num_classes multiplicative perturbations of it."""

    delta: float = 0.1
    """Each parameter of class k is the base's times U(1 - delta, 1 + delta) (the paper's Delta)."""
    sigma: float = 4.0
    """Sigma-factor of the base system (generate.sh: 4.0; the script's argparse default is 3.5)."""
    sigma_margin: float = 0.1
    """The base's sigma-factor is drawn from U(sigma - sigma_margin, sigma + sigma_margin)."""
    min_fill: float = 0.05
    """A class's first render must fill more than this fraction of the canvas, else it is redrawn."""
    max_class_tries: int = 1000
    """Give up (with an error) after this many rejected perturbations of one class."""

    def validate(self) -> None:
        super().validate()
        self._check_choice("sampling", ["sigma"])
        self._check_range("delta", 0.0, 1.0)
        self._check_range("sigma_margin", 0.0, 1.0)
        self._check_range("sigma", self.sigma_margin, 3.0 * self.num_maps_max - self.sigma_margin - 1e-6)
        self._check_range("min_fill", 0.0, 0.9)
        self._check_range("max_class_tries", 1, 1_000_000)


@register
class OnePFracGenerator(IFSGenerator):
    name = "onepfrac"
    version = "2"
    config_cls = OnePFracConfig
    config: OnePFracConfig

    def base_system(self) -> np.ndarray:
        """The single system (N, 6) every class perturbs."""
        if -1 not in self._systems:
            c = self.config
            self._systems[-1] = ifs.sample_sigma_system(
                derive_seed(c.seed, "onepfrac/base"), n_min=c.num_maps_min, n_max=c.num_maps_max,
                sigma_lo=0.0, sigma_hi=0.0, param_range=c.param_range,
                alpha=(c.sigma - c.sigma_margin, c.sigma + c.sigma_margin))
        return self._systems[-1]

    def base_probs(self) -> np.ndarray:
        """Map probabilities of every class: |det| of the base system's maps."""
        return ifs.det_probs(self.base_system())

    def factors(self, class_id: int, attempt: int) -> np.ndarray:
        """The (N, 6) multiplicative factors U(1 - delta, 1 + delta) of a class's `attempt`-th draw."""
        base = self.base_system()
        u = uniforms(derive_seed(self.config.seed, "onepfrac/class", class_id, attempt), base.size)
        return 1.0 + (2.0 * u.reshape(base.shape) - 1.0) * self.config.delta

    def _instance_image(self, maps: np.ndarray, class_id: int, instance_id: int) -> np.ndarray:
        c = self.config
        orbit_seed = (derive_seed(c.seed, "onepfrac/orbit") if instance_id == 0
                      else derive_seed(c.seed, "onepfrac/orbit", class_id, instance_id))
        return self._draw(maps, self.base_probs(), orbit_seed,
                          derive_seed(c.seed, "onepfrac/patch", class_id, instance_id))

    def _make_system(self, class_id: int) -> np.ndarray:
        base = self.base_system()
        for attempt in range(self.config.max_class_tries):
            maps = base * self.factors(class_id, attempt)
            image = self._instance_image(maps, class_id, 0)
            if np.count_nonzero(image) / image.size > self.config.min_fill:
                self._last = ((class_id, 0), image)  # instance 0 is this render
                return maps
        raise ValueError(f"min_fill: no perturbation of class {class_id} filled more than "
                         f"{self.config.min_fill} in {self.config.max_class_tries} tries; "
                         "lower min_fill or raise delta")

    def _render(self, class_id: int, instance_id: int) -> np.ndarray:
        maps = self.system(class_id)
        return self._render_cached((class_id, instance_id),
                                   lambda: self._instance_image(maps, class_id, instance_id), 0)
