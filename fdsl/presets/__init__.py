"""Named experiments: functions that return an `Experiment`, in one registry.

    fdsl presets                    # list them
    fdsl show fractaldb-1k          # print one as JSON
Each full-size preset has a `debug-*` sibling that renders on 2 CPU cores in seconds (tests run
those), and each family a `laptop-*` preset: one whole experiment (data, pre-training, fine-tuning)
that shows the FDSL effect on a 2-core machine in minutes (measured in docs/finetune.md).
"""

from __future__ import annotations

from fdsl.presets import data, laptop, training  # noqa: F401  (registers their presets)
from fdsl.presets.registry import PRESETS, get_preset, preset, preset_names, preset_or_run, preset_summary

__all__ = ["PRESETS", "get_preset", "preset", "preset_names", "preset_or_run", "preset_summary"]
