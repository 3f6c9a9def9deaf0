"""How a dataset is synthesised: shard size, image encoding, batch size, render resources.

(Training reads a generated folder with `--data DIR`, or renders on the fly with `--data stream`.)

Plain dataclass (no Ray, no torch at import): it is a field of `Experiment` and is overridden with
`--set synthesis.<field>=<value>` like any other config.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from fdsl.config import Config

ENCODINGS = ("raw", "png")
"""Encodings of the `image` column (see docs/synthesis.md for the measurement behind "raw")."""

RETIRED_FIELDS = ("source", "dataset_dir")
"""Fields of fdsl <= 0.1 that nothing read (`--data` chooses the input): dropped when an older
experiment.json or manifest is loaded."""

LAYOUT_FIELDS = ("shard_rows", "encoding", "compression_level", "batch_size")
"""Fields that change the bytes of the shard files (a dataset folder is refused if they differ)."""


@dataclasses.dataclass
class SynthesisConfig(Config):
    """Synthesis into `shard-NNNNN.parquet` files (Ray Data) and how training reads the images."""

    shard_rows: int = 1024
    """Images per shard-NNNNN.parquet file (the last one may hold fewer); one task writes several."""
    encoding: Literal["raw", "png"] = "raw"
    """`image` column: "raw" uint8 pixels in a zstd-compressed column (fastest, smallest) or "png" files."""
    compression_level: int = 3
    """zstd level (1-22) of the Parquet columns for "raw"; zlib level (0-9) of each PNG for "png"."""
    batch_size: int = 256
    """Rows per call of the render adapter: one Parquet row group, and one batch when streaming."""
    num_cpus_per_task: float = 1.0
    """CPUs each render task reserves in Ray (renderers are single-threaded)."""
    task_resource: str = ""
    """Custom Ray resource (e.g. "synth" on a cluster's CPU pool) render tasks need; empty: any node."""

    def validate(self) -> None:
        super().validate()
        self._check_range("shard_rows", 1, 10_000_000)
        self._check_choice("encoding", ENCODINGS)
        if self.encoding == "raw":
            self._check_range("compression_level", 1, 22)
        else:
            self._check_range("compression_level", 0, 9)
        self._check_range("batch_size", 1, 1_000_000)
        self._check_range("num_cpus_per_task", 0.01, 1024)
        self._check_resource_name("task_resource")

    @classmethod
    def from_dict(cls, data: dict):
        """As `Config.from_dict`, dropping fields that earlier versions wrote (RETIRED_FIELDS)."""
        return super().from_dict({k: v for k, v in data.items() if k not in RETIRED_FIELDS})

    def layout(self) -> dict:
        """The fields that determine the shard files' bytes."""
        return {name: getattr(self, name) for name in LAYOUT_FIELDS}
