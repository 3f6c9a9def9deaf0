"""Pictures of a run, drawn by the driver from the run's files after training (matplotlib, headless).

    curves.png   pre-training and SSL: loss (beside its chance level) and learning rate per step;
                 fine-tuning: val top-1 (beside the raw-pixel baselines) and train / val loss per epoch
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fdsl.figures import plt, save_figure

CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion.png"


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


def save_confusion_png(confusion: np.ndarray, path: Path, title: str, class_names: Sequence[str]) -> Path:
    """The confusion matrix (rows: true, columns: predicted), row-normalised, as a PNG."""
    n = len(confusion)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    side = min(12.0, 3.0 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(rates, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                                color="black" if rates[i, j] > 0.5 else "white")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
