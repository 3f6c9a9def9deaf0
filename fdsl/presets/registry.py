"""The preset registry: `@preset(name)` registers a function that returns an `Experiment`."""

from __future__ import annotations

from collections.abc import Iterable

from fdsl.config import Registry, apply_overrides
from fdsl.experiment import Experiment, load_run_experiment

PRESETS = Registry("preset", "see `fdsl presets`")
"""Named experiment functions; `@preset(name)` registers one."""
preset = PRESETS.register


def preset_names() -> list[str]:
    return PRESETS.names()


def preset_summary(name: str) -> str:
    """First line of the preset function's docstring."""
    return (PRESETS.get(name).__doc__ or "").strip().splitlines()[0]


def get_preset(name: str, overrides: Iterable[str] = ()) -> Experiment:
    """The validated experiment `name` with `key=value` overrides applied."""
    experiment = PRESETS.get(name)()
    experiment.name = name
    return apply_overrides(experiment, overrides)


def preset_or_run(name: str, overrides: Iterable[str], out, resume: bool) -> Experiment:
    """`get_preset(name, overrides)`; with `resume` (`--resume`), the experiment of the run folder
    `out` (which must be `name`'s) with `overrides`."""
    return load_run_experiment(out, name, overrides) if resume else get_preset(name, overrides)
