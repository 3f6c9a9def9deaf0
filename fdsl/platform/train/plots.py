"""Pictures of a run, drawn by the driver from the run's files after training (matplotlib, headless).

    curves.png   pre-training and SSL: loss (beside its chance level) and learning rate per step;
                 fine-tuning: val top-1 (beside the raw-pixel baselines) and train / val loss per epoch
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fdsl.atomic import save_figure

CURVES_PNG = "curves.png"


@dataclass
class Panel:
    """One plot of a curves figure: `keys` of the metrics rows against the figure's x key, with
    labelled horizontal reference lines (`refs`: label -> value)."""

    ylabel: str
    keys: Sequence[str]
    refs: dict[str, float] = field(default_factory=dict)
    log_y: bool = False


def save_curves(rows: Sequence[dict], path: Path, title: str, panels: Sequence[Panel],
                x: str = "step") -> Path:
    """Panels side by side, one line per key present in the rows; written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for key in panel.keys:
            points = [(r[x], r[key]) for r in rows if isinstance(r.get(key), int | float) and x in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=key.replace("_", " "), marker="." if len(xs) <= 30 else None)
        for k, (label, value) in enumerate(panel.refs.items()):
            ax.axhline(value, color=f"C{len(panel.keys) + k}", linestyle="--", linewidth=1, label=label)
        if panel.log_y:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if len(panel.keys) + len(panel.refs) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
