"""The generator contract: `num_classes`, `num_instances`, `render(class_id, instance_id)`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from fdsl.config import Config


@dataclasses.dataclass
class DatasetConfig(Config):
    """What every formula data set's config starts with: counts, root seed, canvas size."""

    num_classes: int = 1000
    """Number of categories (classes)."""
    num_instances: int = 1000
    """Images per category."""
    seed: int = 0
    """Root seed: every random draw of the dataset derives from it."""
    image_size: int = 224
    """Side of the square canvas in pixels."""

    def validate(self) -> None:
        super().validate()
        self._check_range("num_classes", 1, 10_000_000)
        self._check_range("num_instances", 1, 1_000_000)
        self._check_range("seed", 0, 2**63 - 1)
        self._check_range("image_size", 8, 8192)


class Generator:
    """A pure function of (config, class_id, instance_id) -> uint8 image (HxW or HxWx3)."""

    name: ClassVar[str]
    """Registry name, e.g. "fractaldb"."""
    version: ClassVar[str]
    """Bumped whenever the bytes a config renders to change; recorded in manifests."""
    config_cls: ClassVar[type[Config]]

    def __init__(self, config: Config):
        config.validate()
        self.config = config

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def num_instances(self) -> int:
        return self.config.num_instances

    def render(self, class_id: int, instance_id: int) -> np.ndarray:
        """Render one image; the same (config, class_id, instance_id) gives the same bytes."""
        if not 0 <= class_id < self.num_classes:
            raise ValueError(f"class_id: got {class_id}, expected a value in [0, {self.num_classes - 1}]")
        if not 0 <= instance_id < self.num_instances:
            raise ValueError(
                f"instance_id: got {instance_id}, expected a value in [0, {self.num_instances - 1}]")
        return self._render(int(class_id), int(instance_id))

    def _render(self, class_id: int, instance_id: int) -> np.ndarray:
        raise NotImplementedError
