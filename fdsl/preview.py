"""Preview grids: classes x instances, the first thing a researcher looks at."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fdsl.generators import Generator


def spread(count: int, total: int) -> list[int]:
    """`count` indices spread evenly over range(total) (all of them when total <= count)."""
    if total <= count:
        return list(range(total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, count)})


def render_grid(generator: Generator, num_classes: int = 8, num_instances: int = 8):
    """(class ids, instance ids, images[class][instance]) for an even spread of both."""
    classes = spread(num_classes, generator.num_classes)
    instances = spread(num_instances, generator.num_instances)
    images = [[generator.render(c, i) for i in instances] for c in classes]
    return classes, instances, images


def save_grid(path: str | os.PathLike, classes, instances, images, title: str) -> Path:
    """Write the grid as a PNG with class/instance labels (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = len(classes), len(instances)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 0.6, 1.5 * rows + 0.6), squeeze=False)
    for r, row in enumerate(images):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"class {classes[r]}", fontsize=8)
            if r == 0:
                ax.set_title(f"inst {instances[c]}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
