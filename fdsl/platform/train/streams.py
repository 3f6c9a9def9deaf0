"""The trainers' data paths: the seeded small-set stream shared by pre-training, fine-tuning and
SSL, the eval stream, and pre-training's read-shuffle-augment path for sets larger than memory.

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
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import ray
import ray.data
import torch
from PIL import Image
from ray.data import RandomSeedConfig

from fdsl.platform.data.datasets import read_dataset, render_dataset, take_all
from fdsl.platform.train.augment import augment_batch, augment_images, to_rgb
from fdsl.platform.train.config import FinetuneConfig, PretrainConfig


def put_source(images: np.ndarray, labels: np.ndarray) -> list:
    """The arrays in Ray's object store, as a one-element list (a list, so that Ray passes the
    reference itself to the tasks instead of resolving it into every call's arguments)."""
    return [ray.put((np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)))]


def get_source(source: list) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of `put_source`'s handle (zero-copy from the object store)."""
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


def id_rows(num_rows: int, block_rows: int, start: int = 0):
    """Rows {"id": start..num_rows-1} in blocks of about `block_rows` rows (`start` > 0: the rest of a
    stream whose first rows a resumed run has consumed already).

    Built on the driver as one Arrow array per block (8 bytes a row, no Python object per row: the
    50M rows of `finetune-sgd` are 400 MB, not 10 GB of dicts), split exactly as `from_items` splits
    (the first `num_rows % blocks` blocks one row longer), so the stream's batches, and its bytes,
    are the same. Not `ray.data.range`, whose read tasks reserve a whole CPU and cannot be
    scheduled beside the Train workers of a Tune trial on a small machine. Not `from_arrow`, which
    reads each block's metadata back in a Ray task: a new job's first task, it waited for a worker
    process to start (0.5-2 s before a fine-tuning's first step); `from_blocks` (Ray Data's
    developer API, the same blocks) takes the metadata here.
    """
    rows = max(0, num_rows - start)
    blocks = min(max(1, -(-rows // max(1, block_rows))), max(1, rows))
    size, extra = divmod(rows, blocks)
    bounds = [start + i * size + min(i, extra) for i in range(blocks + 1)]
    return ray.data.from_blocks([pa.table({"id": np.arange(a, b, dtype=np.int64)})
                                 for a, b in zip(bounds, bounds[1:], strict=False)])


def _draw_and_augment(batch: dict[str, np.ndarray], *, source: list, seed: int, augment: Callable,
                      **kwargs) -> dict[str, np.ndarray]:
    """Ray Data adapter: {"id"} -> `augment(images, labels, **kwargs)` of the drawn rows."""
    images, labels = get_source(source)
    return augment(*draw(batch["id"], images, labels, seed), **kwargs)


def seeded_stream(images: np.ndarray, labels: np.ndarray, *, num_rows: int, seed: int, augment: Callable,
                  batch_size: int, num_cpus: float, start_row: int = 0, **kwargs):
    """The training stream of an in-memory set: `num_rows` seeded draws, augmented in Ray Data tasks
    of `batch_size` rows by `augment(images, labels, **kwargs) -> dict of arrays`; from row
    `start_row` on (a resumed run: the same rows, the same images, in batches cut anew, so their
    augmentation draws differ from the uninterrupted run's)."""
    source = put_source(images, labels)
    return id_rows(num_rows, batch_size, start_row).map_batches(
        _draw_and_augment, batch_format="numpy", batch_size=batch_size, num_cpus=num_cpus,
        fn_kwargs=dict(source=source, seed=seed, augment=augment, **kwargs))


def resize_batch(batch: dict[str, np.ndarray], *, source: list, img_size: int) -> dict[str, np.ndarray]:
    """Ray Data adapter for evaluation: {"id"} -> {"image" (B,3,S,S) uint8, "label", "index"}.

    `source` holds (images, labels) of the val split; each image is resized (bicubic) to S x S.
    """
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


# --- pre-training's data path (runs in Ray Data tasks) ----------------------------------------------
def open_source(experiment, data: str):
    """The Ray Dataset of `data`: "stream" (rendered on the fly) or a folder made by `fdsl generate`."""
    return render_dataset(experiment) if data == "stream" else read_dataset(data)


def _augment_pass(batch: dict[str, np.ndarray], *, seed: int, **augment) -> dict[str, np.ndarray]:
    """Ray Data adapter for a set read anew every pass: seeds the batch's augmentation from (seed,
    pass, its first image's class and instance), then `augment_batch`.

    The pass is the data set's Ray Data execution index, from which Ray Data's own seeded shuffles
    (`RandomSeedConfig`) derive each execution's seed too.
    """
    if len(batch["label"]):
        seed_batch(seed, ray.data.DataContext.get_current()._execution_idx, int(batch["label"][0]),
                   int(batch["instance"][0]))
    return augment_batch(batch, **augment)


def training_dataset(source, cfg: PretrainConfig, num_images: int):
    """The Ray Dataset the trainer splits over its workers: shuffled, augmented, uint8 CHW.

    A data set smaller than `cfg.min_pass_images` is read once into the object store and streamed
    by `seeded_stream`: run-long row ids (the run's total_steps x global_batch_size images), each
    row a seeded draw with seeded augmentation, in parallel blocks; no per-epoch read or all-to-all
    shuffle, whose start-up would cost seconds every few steps. A larger set is read and shuffled
    anew every pass: the shuffle and each batch's augmentation are seeded from (seed, pass), so
    every pass differs and the same config gives the same passes.
    """
    augment = dict(img_size=cfg.img_size, randaugment=cfg.randaugment, crop_scale_min=cfg.crop_scale_min,
                   hflip=cfg.hflip, vflip=cfg.vflip, crop=cfg.crop, crop_padding=cfg.crop_padding,
                   autoaugment=cfg.autoaugment, repeats=cfg.repeated_aug)
    on_device = cfg.augment_on == "device"  # the rows as they are: DeviceAugment crops and repeats them
    if cfg.pass_copies(num_images) > 1:  # a small set: held in the object store and streamed
        rows = take_all(source, "pretrain")
        rows.sort(key=lambda r: (int(r["label"]), int(r["instance"])))  # the set's order, not the read's
        return seeded_stream(np.stack([r["image"] for r in rows]),
                             np.array([r["label"] for r in rows], dtype=np.int64),
                             # each id gives repeated_aug copies (on the device: a micro batch's rows)
                             num_rows=cfg.images_seen(num_images) // cfg.micro_batch_size * loaded_rows(cfg)
                             if on_device else -(-cfg.images_seen(num_images) // cfg.repeated_aug),
                             seed=cfg.seed, augment=raw_rows if on_device else augment_images,
                             batch_size=cfg.augment_batch_size, num_cpus=cfg.augment_cpus, **augment)
    order = RandomSeedConfig(seed=cfg.seed, reseed_after_execution=True)  # a new seeded order each pass
    if cfg.shuffle == "global":
        ds = source.random_shuffle(seed=order)
    else:
        ds = source.randomize_block_order(seed=order)
    if on_device:  # a projection, no task per batch
        return ds.select_columns(["image", "label"])
    return ds.map_batches(_augment_pass, batch_format="numpy", batch_size=cfg.augment_batch_size,
                          num_cpus=cfg.augment_cpus, fn_kwargs=dict(seed=cfg.seed, **augment))


def raw_rows(images, labels, **_) -> dict[str, np.ndarray]:
    """The drawn rows as they are, {"image": uint8 (B,H,W[,3]), "label"}: no per-image CPU work
    (`augment_on="device"`: `DeviceAugment` crops, flips, RandAugments and repeats on the device)."""
    return {"image": np.asarray(images), "label": np.asarray(labels, dtype=np.int64)}


def loaded_rows(cfg: PretrainConfig) -> int:
    """Rows a micro batch loads: micro_batch_size, or with `augment_on="device"` the images whose
    repeated_aug copies fill it (the last one's extra copies dropped: `DeviceAugment`)."""
    on_device = cfg.augment_on == "device"
    return -(-cfg.micro_batch_size // cfg.repeated_aug) if on_device else cfg.micro_batch_size


def micro_batches(shard, cfg: PretrainConfig, device):
    """Endless (images uint8, labels int64) micro batches of a worker's shard, pass after pass (of
    `loaded_rows(cfg)` images each)."""
    buffer = cfg.shuffle_buffer if cfg.shuffle == "local" and cfg.shuffle_buffer > 0 else None
    rows = loaded_rows(cfg)
    while True:
        count = 0
        for batch in shard.iter_torch_batches(batch_size=rows, drop_last=True,
                                              prefetch_batches=cfg.prefetch_batches,
                                              local_shuffle_buffer_size=buffer,
                                              local_shuffle_seed=cfg.seed if buffer else None, device=device,
                                              dtypes={"image": torch.uint8, "label": torch.int64}):
            count += 1
            yield batch["image"], batch["label"]
        if count == 0:
            raise RuntimeError("a worker's data shard holds less than one micro batch; use a smaller "
                               "global_batch_size or fewer workers")


# --- fine-tuning's data path -----------------------------------------------------------------------
def target_stream(data, cfg: FinetuneConfig, img_size: int, from_step: int = 0):
    """All epochs' training rows of the target set `data`, augmented in Ray Data tasks (`seeded_stream`);
    `from_step`: the rows after the first `from_step` optimizer steps' (a resumed run)."""
    rows = cfg.images_seen(len(data.train_labels))
    return seeded_stream(data.train_images, data.train_labels, num_rows=-(-rows // cfg.repeated_aug),
                         start_row=from_step * cfg.global_batch_size // cfg.repeated_aug,
                         seed=cfg.seed, augment=augment_images, batch_size=cfg.augment_batch_size,
                         num_cpus=cfg.augment_cpus, img_size=img_size, randaugment=cfg.randaugment,
                         crop_scale_min=cfg.crop_scale_min, hflip=cfg.hflip, vflip=cfg.vflip, crop=cfg.crop,
                         crop_padding=cfg.crop_padding, autoaugment=cfg.autoaugment, repeats=cfg.repeated_aug)


def measure_loader(ds, num_images: int, batch_size: int) -> dict[str, float]:
    """Images/s of the data path alone (no training): `num_images` rows pulled through `ds`."""
    start = first = time.perf_counter()
    count = 0
    for k, batch in enumerate(ds.limit(num_images).iter_batches(batch_size=batch_size, batch_format="numpy",
                                                                prefetch_batches=2)):
        if k == 0:
            first = time.perf_counter()
        else:
            count += len(batch["label"])
    end = time.perf_counter()
    return {"loader_images_per_s": round(count / max(end - first, 1e-9), 1),
            "loader_startup_s": round(first - start, 3)}
