"""Data-set presets: each family's full-size sets and their `debug-*` siblings."""

from __future__ import annotations

from fdsl.experiment import Experiment
from fdsl.generators.exfractaldb import ExFractalDBConfig
from fdsl.generators.fractaldb import FractalDBConfig
from fdsl.generators.onepfrac import OnePFracConfig
from fdsl.generators.rcdb import RCDBConfig
from fdsl.generators.visualatom import VisualAtomConfig
from fdsl.presets.registry import preset

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
    """FractalDB-1k, sigma-factor sampling (Anderson & Farrell WACV'22: N in 2..4) instead of the search."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1000,
                                                                 sampling="sigma", num_maps_max=4))


@preset("ofdb-1k")
def ofdb_1k() -> Experiment:
    """OFDB-1k (Nakamura et al. ICCV'23): 1,000 FractalDB categories, one image each (weight row 0)."""
    return Experiment(generator="fractaldb", data=FractalDBConfig(num_classes=1000, num_instances=1))


@preset("onepfrac-1k")
def onepfrac_1k() -> Experiment:
    """1p-frac (Nakamura et al. ECCV'24): one N=2 system, 1k classes x 1 image, Delta 0.1: x U(0.9, 1.1)."""
    return Experiment(generator="onepfrac", data=OnePFracConfig(num_classes=1000, delta=0.1))


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


# --- contour and 3-D families (RCDB, VisualAtom, ExFractalDB) -----------------------------------
_DEBUG_SMALL = dict(num_classes=8, num_instances=8, image_size=128)


@preset("rcdb-1k")
def rcdb_1k() -> Experiment:
    """RCDB-1k (Kataoka et al. CVPR'22): 1,000 categories x 1,000 instances, 512px gray contours."""
    return Experiment(generator="rcdb", data=RCDBConfig(num_classes=1000, num_instances=1000))


@preset("rcdb-21k")
def rcdb_21k() -> Experiment:
    """RCDB-21k (Kataoka et al. CVPR'22): 21,000 categories x 1,000 instances, 512px."""
    return Experiment(generator="rcdb", data=RCDBConfig(num_classes=21_000, num_instances=1000))


@preset("visualatom-1k")
def visualatom_1k() -> Experiment:
    """VisualAtom-1k (Takashima et al. CVPR'23): 1,000 categories x 1,000 instances, 512px."""
    return Experiment(generator="visualatom", data=VisualAtomConfig(num_classes=1000, num_instances=1000))


@preset("visualatom-21k")
def visualatom_21k() -> Experiment:
    """VisualAtom-21k (Takashima et al. CVPR'23): 21,000 categories x 1,000 instances, 512px."""
    return Experiment(generator="visualatom",
                      data=VisualAtomConfig(num_classes=21_000, num_instances=1000))


@preset("exfractaldb-1k")
def exfractaldb_1k() -> Experiment:
    """ExFractalDB-1k (Kataoka et al. CVPR'22): 1,000 3-D categories x 1,000 views, 224px."""
    return Experiment(generator="exfractaldb",
                      data=ExFractalDBConfig(num_classes=1000, num_instances=1000))


@preset("exfractaldb-21k")
def exfractaldb_21k() -> Experiment:
    """ExFractalDB-21k (Kataoka et al. CVPR'22): 21,000 3-D categories x 1,000 views, 224px."""
    return Experiment(generator="exfractaldb",
                      data=ExFractalDBConfig(num_classes=21_000, num_instances=1000))


@preset("debug-rcdb")
def debug_rcdb() -> Experiment:
    """RCDB at debug size: 8 classes x 8 instances, 128px."""
    return Experiment(generator="rcdb", data=RCDBConfig(**_DEBUG_SMALL))


@preset("debug-visualatom")
def debug_visualatom() -> Experiment:
    """VisualAtom at debug size: 8 classes x 8 instances, 128px."""
    return Experiment(generator="visualatom", data=VisualAtomConfig(**_DEBUG_SMALL))


@preset("debug-exfractaldb")
def debug_exfractaldb() -> Experiment:
    """ExFractalDB at debug size: 8 classes x 8 instances, 128px."""
    return Experiment(generator="exfractaldb", data=ExFractalDBConfig(**_DEBUG_SMALL))
