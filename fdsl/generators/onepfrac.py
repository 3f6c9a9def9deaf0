"""1p-frac (Nakamura et al., CVPR'24): one fractal system, classes by bounded perturbation.

The base system is found with the FractalDB search (or sigma sampling) from the seed. Class k's
maps are the base maps plus independent U(-delta, delta) offsets on every parameter, so every class
lies within `delta` (max-norm) of the base in parameter space. Instances re-render a class with new
orbit and patch-mask seeds and cycle through FractalDB's four flips.
"""

from __future__ import annotations

import dataclasses

from fdsl.generators import register
from fdsl.generators.fractaldb import NUM_FLIPS, IFSConfig, IFSGenerator, find_system
from fdsl.generators.rng import derive_seed, uniforms


@dataclasses.dataclass
class OnePFracConfig(IFSConfig):
    """1p-frac: one searched system, num_classes perturbations of it."""

    delta: float = 0.1
    """Largest perturbation of any map parameter (the paper's Delta; 0.1 reported best)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("delta", 0.0, 1.0)


@register
class OnePFracGenerator(IFSGenerator):
    name = "onepfrac"
    version = "1"
    config_cls = OnePFracConfig
    config: OnePFracConfig

    def base_system(self):
        """The single system every class perturbs."""
        if -1 not in self._systems:
            self._systems[-1] = find_system(self.config, derive_seed(self.config.seed, "onepfrac/base"))
        return self._systems[-1]

    def _make_system(self, class_id: int):
        base = self.base_system()
        u = uniforms(derive_seed(self.config.seed, "onepfrac/class", class_id), base.size)
        return base + (2.0 * u.reshape(base.shape) - 1.0) * self.config.delta

    def _render(self, class_id: int, instance_id: int):
        render, flip_kind = divmod(instance_id, NUM_FLIPS)
        seed = derive_seed(self.config.seed, "onepfrac/instance", class_id, render)
        return self._render_cached((class_id, render), lambda: self.system(class_id), seed, flip_kind)
