"""The recipe table (fdsl/recipes/) against the presets and docs/recipes.md: a recipe changes in both."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from fdsl.presets import get_preset, preset_names
from fdsl.recipes import RECIPES, recipe_for, render_markdown

ROOT = Path(__file__).resolve().parents[1]
FULL_SIZE = [n for n in preset_names() if not n.startswith(("debug-", "laptop-"))]
PINNED = [(recipe.presets, row) for recipe in RECIPES for row in recipe.rows if row.path]


def value_at(experiment, path: str):
    return functools.reduce(getattr, path.split("."), experiment)


@pytest.mark.parametrize("name", FULL_SIZE)
def test_every_full_size_preset_has_a_recipe_with_sources(name):
    recipe = recipe_for(name)
    assert recipe is not None, f"{name}: add its recipe to fdsl/recipes/"
    assert recipe.source and all(row.source for row in recipe.rows)


@pytest.mark.parametrize(("presets", "row"), PINNED, ids=[f"{p[0]}:{r.path}" for p, r in PINNED])
def test_the_table_holds_each_presets_value(presets, row):
    for name in presets:
        assert value_at(get_preset(name), row.path) == row.fdsl, f"{name} {row.path}"


def test_every_difference_is_declared_with_its_reason():
    for recipe in RECIPES:
        for row in recipe.rows:
            assert row.same or row.note, f"{recipe.title}: {row.field} differs without a reason"


def test_no_recipe_names_a_preset_that_does_not_exist():
    for recipe in RECIPES:
        assert set(recipe.presets) <= set(FULL_SIZE)


def test_docs_page_is_the_tables_rendering():
    assert (ROOT / "docs" / "recipes.md").read_text() == render_markdown(), \
        "regenerate: .venv/bin/python -m fdsl.recipes > docs/recipes.md"


def test_fdsl_show_names_the_source():
    out = subprocess.run([sys.executable, "-m", "fdsl.cli", "show", "onepfrac-1k"], capture_output=True,
                         text=True, check=True)
    assert "SUPER-TADORY/1p-frac" in out.stderr and out.stdout.lstrip().startswith("{")
    own = subprocess.run([sys.executable, "-m", "fdsl.cli", "show", "laptop-fractaldb"], capture_output=True,
                         text=True, check=True)
    assert "fdsl's own" in own.stderr
