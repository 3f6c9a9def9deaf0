"""The seeded small-set stream shared by pre-training, fine-tuning and SSL, and the eval stream.

A set small enough to hold in memory (a target set, a small formula set) goes to Ray's object
store once. A run's training stream is one Ray Data pass of run-long row ids: row i is image
`perm_e[i mod N]` of epoch `e = i // N`, where `perm_e` is a seeded permutation of the N images, so
one pass covers the whole run (no pipeline restart per epoch, whose fixed cost would dwarf a small
set's epoch) and every epoch still sees every image once, in a new order. Each batch of ids is
drawn (`draw`) and augmented in a `map_batches` task by the trainer's own function (`augment_images`,
or SSL's multi-crop); the batch seeds its RNGs from (seed, first row), so the stream's bytes depend on
the config only, however Ray schedules the tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np


def put_source(images: np.ndarray, labels: np.ndarray) -> list:
    """The arrays in Ray's object store, as a one-element list (a list, so that Ray passes the
    reference itself to the tasks instead of resolving it into every call's arguments)."""
    import ray

    return [ray.put((np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)))]


def get_source(source: list) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of `put_source`'s handle (zero-copy from the object store)."""
    import ray

    return ray.get(source[0])


def stream_indices(ids: np.ndarray, num_images: int, seed: int) -> np.ndarray:
    """Image index of each stream row: row i is perm_e[i mod N] with e = i // N."""
    ids = np.asarray(ids, dtype=np.int64)
    epochs = ids // num_images
    out = np.empty_like(ids)
    for e in np.unique(epochs):
        mask = epochs == e
        perm = np.random.default_rng([seed, int(e)]).permutation(num_images)
        out[mask] = perm[ids[mask] % num_images]
    return out


def seed_batch(seed: int, *keys: int) -> None:
    """Seed Python's, numpy's and torch's RNGs of this task for one batch, named by `keys` (e.g. the
    batch's first row)."""
    import torch

    state = int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)


def draw(ids, images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of stream rows `ids`, with this task's RNGs seeded for the batch."""
    ids = np.asarray(ids, dtype=np.int64)
    idx = stream_indices(ids, len(labels), seed)
    seed_batch(seed, int(ids[0]) if len(ids) else 0)
    return images[idx], labels[idx]


def id_rows(num_rows: int, block_rows: int):
    """Rows {"id": 0..num_rows-1} in blocks of about `block_rows` rows.

    Built in memory (`from_items`), not with `ray.data.range`, whose read tasks reserve a whole CPU
    and cannot be scheduled beside the Train workers of a Tune trial on a small machine.
    """
    import ray.data

    return ray.data.from_items([{"id": i} for i in range(num_rows)],
                               override_num_blocks=max(1, -(-num_rows // max(1, block_rows))))


def _draw_and_augment(batch: dict[str, np.ndarray], *, source: list, seed: int, augment: Callable,
                      **kwargs) -> dict[str, np.ndarray]:
    """Ray Data adapter: {"id"} -> `augment(images, labels, **kwargs)` of the drawn rows."""
    images, labels = get_source(source)
    return augment(*draw(batch["id"], images, labels, seed), **kwargs)


def seeded_stream(images: np.ndarray, labels: np.ndarray, *, num_rows: int, seed: int, augment: Callable,
                  batch_size: int, num_cpus: float, **kwargs):
    """The training stream of an in-memory set: `num_rows` seeded draws, augmented in Ray Data tasks
    of `batch_size` rows by `augment(images, labels, **kwargs) -> dict of arrays`."""
    source = put_source(images, labels)
    return id_rows(num_rows, batch_size).map_batches(
        _draw_and_augment, batch_format="numpy", batch_size=batch_size, num_cpus=num_cpus,
        fn_kwargs=dict(source=source, seed=seed, augment=augment, **kwargs))


def resize_batch(batch: dict[str, np.ndarray], *, source: list, img_size: int) -> dict[str, np.ndarray]:
    """Ray Data adapter for evaluation: {"id"} -> {"image" (B,3,S,S) uint8, "label", "index"}.

    `source` holds (images, labels) of the val split; each image is resized (bicubic) to S x S.
    """
    from PIL import Image

    from fdsl.platform.train.augment import to_rgb

    images, labels = get_source(source)
    idx = np.asarray(batch["id"], dtype=np.int64)
    out = np.empty((len(idx), 3, img_size, img_size), dtype=np.uint8)
    for k, i in enumerate(idx):
        pil = to_rgb(images[i]).resize((img_size, img_size), Image.BICUBIC)
        out[k] = np.asarray(pil).transpose(2, 0, 1)
    return {"image": out, "label": labels[idx], "index": idx}


def eval_dataset(images: np.ndarray, labels: np.ndarray, img_size: int, block_rows: int = 512):
    """The val split as a Ray Dataset of resized uint8 CHW images with their row index."""
    return id_rows(len(labels), block_rows).map_batches(
        resize_batch, batch_format="numpy", batch_size=block_rows,
        fn_kwargs=dict(source=put_source(images, labels), img_size=img_size))
