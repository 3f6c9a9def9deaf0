"""Named experiments: functions that return an `Experiment`, in one registry.

    fdsl presets                    # list them
    fdsl show fractaldb-1k          # print one as JSON
Each full-size preset has a `debug-*` sibling that renders on 2 CPU cores in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fdsl.config import apply_overrides
from fdsl.experiment import Experiment
from fdsl.generators.fractaldb import FractalDBConfig
from fdsl.generators.onepfrac import OnePFracConfig

_PRESETS: dict[str, Callable[[], Experiment]] = {}


def preset(name: str):
    """Decorator: register an experiment function under `name`."""

    def wrap(fn: Callable[[], Experiment]) -> Callable[[], Experiment]:
        assert name not in _PRESETS, f"preset {name} registered twice"
        _PRESETS[name] = fn
        return fn

    return wrap


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def preset_summary(name: str) -> str:
    """First line of the preset function's docstring."""
    return (_PRESETS[name].__doc__ or "").strip().splitlines()[0]


def get_preset(name: str, overrides: Iterable[str] = ()) -> Experiment:
    """The validated experiment `name` with `key=value` overrides applied."""
    if name not in _PRESETS:
        raise ValueError(f"preset: got {name!r}, expected one of {preset_names()} (see `fdsl presets`)")
    experiment = _PRESETS[name]()
    experiment.name = name
    return apply_overrides(experiment, overrides)


# --- debug sizes: tiny canvases and point counts, same code paths ---------------------------------
_DEBUG_RENDER = dict(num_classes=8, num_instances=8, image_size=64, pad=2, num_points=5_000,
                     search_points=20_000, search_size=256)


# --- FractalDB family --------------------------------------------------------------------------
@preset("fractaldb-1k")
def fractaldb_1k() -> Experiment:
    """FractalDB-1k (Kataoka et al. ACCV'20): 1,000 categories x 1,000 instances, 362px patch gray."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1000))


@preset("fractaldb-10k")
def fractaldb_10k() -> Experiment:
    """FractalDB-10k: 10,000 categories x 1,000 instances (Nakashima et al. AAAI'22 ViT runs)."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=10_000, num_instances=1000))


@preset("fractaldb-sigma-1k")
def fractaldb_sigma_1k() -> Experiment:
    """FractalDB-1k with sigma-factor sampling instead of the search (Anderson & Farrell WACV'22)."""
    return Experiment(generator="fractaldb",
                      data=FractalDBConfig(num_classes=1000, num_instances=1000, sampling="sigma"))


@preset("ofdb-1k")
def ofdb_1k() -> Experiment:
    """OFDB-1k (Nakamura et al.): 1,000 FractalDB categories, one instance each."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1))


@preset("onepfrac-1k")
def onepfrac_1k() -> Experiment:
    """1p-frac (Nakamura et al. CVPR'24): one system, 1,000 classes perturbed by Delta = 0.1."""
    return Experiment(generator="onepfrac",
                      data=OnePFracConfig(num_classes=1000, num_instances=1000, delta=0.1))


@preset("debug-fractaldb")
def debug_fractaldb() -> Experiment:
    """FractalDB at debug size: 8 classes x 8 instances, 64px, renders in seconds."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(**_DEBUG_RENDER))


@preset("debug-ofdb")
def debug_ofdb() -> Experiment:
    """OFDB at debug size: 8 classes x 1 instance, 64px."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(**{**_DEBUG_RENDER, "num_instances": 1}))


@preset("debug-onepfrac")
def debug_onepfrac() -> Experiment:
    """1p-frac at debug size: 8 classes x 8 instances, 64px."""
    return Experiment(generator="onepfrac", data=OnePFracConfig(**_DEBUG_RENDER))
