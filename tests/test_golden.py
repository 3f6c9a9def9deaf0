"""Guard rail: every shipped preset and sweep resolves to the config recorded in tests/golden/*.json.

A change to a shipped preset (a new field, a new default, a new preset) must be deliberate: after
one, rewrite the files with

    .venv/bin/python tests/test_golden.py --write

and the diff of tests/golden/ in the commit shows every value that moved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fdsl.presets import get_preset, preset_names
from fdsl.sweeps import get_sweep, sweep_names

GOLDEN = Path(__file__).parent / "golden"


def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix.count(".") < 1:
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def write_golden() -> None:
    presets = {name: get_preset(name).to_dict() for name in preset_names()}
    sweeps = {name: get_sweep(name).to_dict() for name in sweep_names()}
    (GOLDEN / "presets.json").write_text(json.dumps(presets, indent=1, sort_keys=True) + "\n")
    (GOLDEN / "sweeps.json").write_text(json.dumps(sweeps, indent=1, sort_keys=True) + "\n")


PRESETS = json.loads((GOLDEN / "presets.json").read_text())


def test_the_golden_set_is_every_shipped_preset():
    assert sorted(PRESETS) == preset_names()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_resolves_as_recorded(name):
    assert leaves(get_preset(name).to_dict()) == leaves(PRESETS[name])


def test_sweeps_resolve_as_recorded():
    golden = json.loads((GOLDEN / "sweeps.json").read_text())
    assert sorted(golden) == sweep_names()
    assert {name: get_sweep(name).to_dict() for name in golden} == golden


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    write_golden()
