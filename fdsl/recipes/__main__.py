"""python -m fdsl.recipes > docs/recipes.md"""

from fdsl.recipes import render_markdown

print(render_markdown(), end="")
