"""Where each full-size preset comes from: field by field, the official value, its source, fdsl's value.

One place holds the table: `RECIPES`. `docs/recipes.md` is generated from it
(`python -m fdsl.recipes > docs/recipes.md`), `fdsl show NAME` prints a preset's source line, and
tests/test_recipes.py checks every row that names a config path against the preset itself, so a
change to a recipe is a change to the preset and to this table together. A row whose fdsl value
differs from the official one carries the reason (`note`): fixed differences are gone, what is left
is a declared choice. Values are written as fdsl's config holds them (an lr the official script
scales by batch / 512 is written scaled).
"""

from __future__ import annotations

from fdsl.recipes.data import DATA_RECIPES
from fdsl.recipes.table import Recipe, Row
from fdsl.recipes.training import TRAINING_RECIPES

__all__ = ["RECIPES", "Recipe", "Row", "recipe_for", "recipe_source", "render_markdown"]

RECIPES: tuple[Recipe, ...] = DATA_RECIPES + TRAINING_RECIPES
"""Every full-size preset's recipe, in the order docs/recipes.md shows them."""


def recipe_for(preset: str) -> Recipe | None:
    """The recipe of a shipped preset, or None (debug and laptop presets are fdsl's own)."""
    return next((r for r in RECIPES if preset in r.presets), None)


def recipe_source(preset: str) -> str:
    """One line for `fdsl show`: where the preset's recipe comes from."""
    recipe = recipe_for(preset)
    if recipe is None:
        return "fdsl's own preset (debug or laptop size; not a paper's recipe)"
    differs = sum(not row.same for row in recipe.rows)
    return f"{recipe.title}. {recipe.source}. {differs} declared difference(s): docs/recipes.md"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "/")


def render_markdown() -> str:
    """docs/recipes.md."""
    out = [
        "# Recipes: every full-size preset against its authors' code",
        "",
        "Generated from `fdsl/recipes/` (`python -m fdsl.recipes > docs/recipes.md`); "
        "tests/test_recipes.py checks each row that names a config path against the preset, and "
        "that this page is the table's current rendering. Values are as applied (an lr that a script "
        'multiplies by batch / 512 is written multiplied). Every "differs" row carries its reason: each '
        'is a declared choice. Where no public script exists, the recipe says "our choice".',
        "",
        "Debug (`debug-*`) and laptop (`laptop-*`) presets are fdsl's own sizes and have no row here; "
        "the laptop presets inherit the generators' semantics below (docs/finetune.md).",
        "",
    ]
    for recipe in RECIPES:
        out += [
            f"## {recipe.title}",
            "",
            "Presets: " + ", ".join(f"`{p}`" for p in recipe.presets) + ".",
            f"Source: {recipe.source}.",
            "",
            "| field | official | source | fdsl | same? |",
            "|---|---|---|---|---|",
        ]
        for row in recipe.rows:
            fdsl = _cell(row.fdsl) + (f" (`{row.path}`)" if row.path else "")
            verdict = "same" if row.same else f"differs: {row.note}"
            out.append(f"| {row.field} | {_cell(row.official)} | {row.source} | {fdsl} | {verdict} |")
        out.append("")
    return "\n".join(out)

