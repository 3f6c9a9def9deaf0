"""Guard rail of the restructuring: every shipped preset and sweep resolves to the config it did.

tests/golden/*.json were written by `fdsl show` (to_dict) of every preset and sweep before the
training configs were rebuilt from shared sections. Each field path there must keep its value; the
only differences allowed are listed here (fields added by the shared sections, with the defaults that
reproduce the old behaviour, and the two synthesis fields that nothing read).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdsl.presets import get_preset, preset_names
from fdsl.sweeps import get_sweep, sweep_names

GOLDEN = Path(__file__).parent / "golden"
RETIRED = {"synthesis.source", "synthesis.dataset_dir"}
ADDED = {"finetune.mixup_prob", "finetune.mixup_switch_prob", "finetune.max_steps", "ssl.max_steps",
         "ssl.warmup_lr", "ssl.max_failures"}


def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix.count(".") < 1:
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


PRESETS = json.loads((GOLDEN / "presets.json").read_text())


def test_the_golden_set_is_every_shipped_preset():
    assert sorted(PRESETS) == preset_names()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_resolves_as_before(name):
    have, want = leaves(get_preset(name).to_dict()), leaves(PRESETS[name])
    assert {k: v for k, v in want.items() if k not in RETIRED} == {k: have.get(k) for k in want
                                                                   if k not in RETIRED}
    assert set(have) - set(want) <= ADDED
    assert not set(have) & RETIRED


def test_added_fields_keep_the_old_behaviour():
    exp = get_preset("debug-finetune")
    assert (exp.finetune.mixup_prob, exp.finetune.max_steps, exp.ssl.max_steps, exp.ssl.warmup_lr) == \
        (1.0, 0, 0, 0.0)


def test_sweeps_resolve_as_before():
    golden = json.loads((GOLDEN / "sweeps.json").read_text())
    assert sorted(golden) == sweep_names()
    assert {name: get_sweep(name).to_dict() for name in golden} == golden
