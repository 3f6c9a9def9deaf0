"""Every picture fdsl draws goes through here: matplotlib's headless (Agg) backend, set once, and
`save_figure`, which writes a figure atomically and closes it.

    from fdsl.figures import plt, save_figure
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files (on nodes with no display)
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from fdsl.atomic import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: str | os.PathLike, dpi: int = 90) -> Path:
    """A matplotlib figure as a PNG at `path`, written atomically (`atomic_path`), then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)
