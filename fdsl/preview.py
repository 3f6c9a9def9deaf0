"""Preview grids: classes x instances, the first thing a researcher looks at."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from fdsl.atomic import check_writable
from fdsl.figures import plt, save_figure
from fdsl.generators import Generator, build_generator
from fdsl.platform.data.datasets import read_images, validate_dataset_dir


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
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--out: {path} is a folder, expected the path of a PNG file to write "
                                f"(e.g. {path / 'preview.png'})")
    check_writable(path.parent)
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
    return save_figure(fig, path, dpi=100)


def preview_experiment(exp, out: Path, num_classes: int = 8, num_instances: int = 8) -> Path:
    """Render a classes x instances grid of an experiment's data set to `out` (PNG); returns the path."""
    preset = exp.name
    gen = build_generator(exp.generator, exp.data)
    start = time.perf_counter()
    classes, instances, images = render_grid(gen, num_classes, num_instances)
    seconds = time.perf_counter() - start
    title = f"{preset} ({exp.generator}: {gen.num_classes} classes x {gen.num_instances} instances)"
    path = save_grid(out, classes, instances, images, title)
    count = sum(len(r) for r in images)
    print(f"preview: {count} images of {preset} rendered in {seconds:.2f}s -> {path}")
    return path


def preview_dataset(directory: Path, out: Path, num_classes: int = 8, num_instances: int = 8) -> Path:
    """Decode a classes x instances grid from the shards of a generated folder to `out` (PNG)."""
    manifest = validate_dataset_dir(directory)
    classes = spread(num_classes, manifest["num_classes"])
    instances = spread(num_instances, manifest["num_instances"])
    start = time.perf_counter()
    flat = read_images(directory, [(c, i) for c in classes for i in instances])
    seconds = time.perf_counter() - start
    images = [flat[r * len(instances):(r + 1) * len(instances)] for r in range(len(classes))]
    title = (f"{directory.name} ({manifest['generator']['name']}: {manifest['num_classes']} classes x "
             f"{manifest['num_instances']} instances, from shards)")
    path = save_grid(out, classes, instances, images, title)
    print(f"preview: {len(flat)} images of {directory} decoded from shards in {seconds:.2f}s -> {path}")
    return path
