"""The top-level experiment config that presets return and the CLI overrides."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from fdsl.config import Config, apply_overrides
from fdsl.generators import generator_class
from fdsl.generators.fractaldb import FractalDBConfig
from fdsl.platform.data.synthesis_config import SynthesisConfig
from fdsl.platform.train.config import EXPERIMENT_FILE, FinetuneConfig, PretrainConfig, SSLConfig
from fdsl.schema import load_json


@dataclasses.dataclass
class Experiment(Config):
    """A named experiment: which formula generator and its full config."""

    name: str = "custom"
    """Preset name this experiment came from (informational)."""
    generator: str = "fractaldb"
    """Registered generator that renders the data set."""
    data: Config = dataclasses.field(default_factory=FractalDBConfig)
    """The generator's config (its class depends on `generator`)."""
    synthesis: SynthesisConfig = dataclasses.field(default_factory=SynthesisConfig)
    """How the data set is written to shards (`fdsl generate`) and read or streamed by training."""
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    """Supervised pre-training on the data set (`fdsl pretrain`): model, recipe, DeepSpeed, workers."""
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    """Fine-tuning on a target set (`fdsl finetune`): target, low-data subset, recipe, workers."""
    ssl: SSLConfig = dataclasses.field(default_factory=SSLConfig)
    """Small-data self-supervised (DINO) pre-training on a target set (`fdsl ssl`)."""

    def validate(self) -> None:
        expected = generator_class(self.generator).config_cls
        if not isinstance(self.data, expected):
            raise ValueError(f"data: got {type(self.data).__name__}, expected {expected.__name__} "
                             f"for generator {self.generator!r}")
        super().validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        """Build from a dict (experiment.json, a manifest's record): every section and field is checked
        against its type, so a damaged file is a ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError(f"experiment: got {type(data).__name__}, expected an object of sections")
        data = dict(data)
        generator = data.get("generator", "fractaldb")
        if not isinstance(generator, str):
            raise ValueError(f"generator: got {generator!r}, expected a generator name")
        section = data.get("data", {})
        if not isinstance(section, dict):
            raise ValueError(f"data: got {type(section).__name__}, expected an object of fields")
        config_cls = generator_class(generator).config_cls
        try:
            data["data"] = config_cls.from_dict(section)
        except ValueError as err:
            raise ValueError(f"data.{err}") from None
        return super().from_dict(data)


def load_run_experiment(out: str | os.PathLike, preset: str | None = None, overrides=()):
    """The experiment of an existing run folder, with `key=value` overrides (for `--resume`)."""
    path = Path(out) / EXPERIMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out}: no run to resume ({EXPERIMENT_FILE} missing); "
                                "start it without --resume")
    try:
        experiment = Experiment.from_dict(load_json(path, {}, "start the run anew in another --out"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}" if not str(err).startswith(str(path)) else str(err)) from None
    if preset is not None and experiment.name != preset:
        raise ValueError(f"preset: got {preset!r}, expected {experiment.name!r}, the preset of the run "
                         f"in {out}")
    return apply_overrides(experiment, overrides)
