"""Ray Data streams over an in-memory target set, for fine-tuning and small-data SSL.

The target arrays go to the object store once (`put_source`). A run's training stream is
`ray.data.range(rows)`: row i is image `perm_e[i mod N]` of epoch `e = i // N`, where `perm_e` is a
seeded permutation of the N training images, so one streaming pass covers the whole run (no
pipeline restart per epoch, whose fixed cost would dwarf a small set's epoch) and every epoch still
sees every image once, in a new order. The images are read and augmented in `map_batches` tasks;
each batch seeds its own RNGs from (seed, first row), so augmentation is reproducible however
Ray schedules the tasks.
"""

from __future__ import annotations

import random

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


def stream_dataset(num_rows: int, block_rows: int):
    """Rows {"id": 0..num_rows-1} in blocks of about `block_rows` rows.

    Built in memory (`from_items`), not with `ray.data.range`, whose read tasks reserve a whole CPU
    and cannot be scheduled beside the Train workers of a Tune trial on a small machine.
    """
    import ray.data

    return ray.data.from_items([{"id": i} for i in range(num_rows)],
                               override_num_blocks=max(1, -(-num_rows // max(1, block_rows))))


def to_rgb(image: np.ndarray):
    """A uint8 HxW or HxWx3 array as an RGB PIL image."""
    from PIL import Image

    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def resize_batch(batch: dict[str, np.ndarray], *, source: list, img_size: int) -> dict[str, np.ndarray]:
    """Ray Data adapter for evaluation: {"id"} -> {"image" (B,3,S,S) uint8, "label", "index"}.

    `source` holds (images, labels) of the val split; each image is resized (bicubic) to S x S.
    """
    from PIL import Image

    images, labels = get_source(source)
    idx = np.asarray(batch["id"], dtype=np.int64)
    out = np.empty((len(idx), 3, img_size, img_size), dtype=np.uint8)
    for k, i in enumerate(idx):
        pil = to_rgb(images[i]).resize((img_size, img_size), Image.BICUBIC)
        out[k] = np.asarray(pil).transpose(2, 0, 1)
    return {"image": out, "label": labels[idx], "index": idx}


def eval_dataset(source: list, num_images: int, img_size: int, block_rows: int = 512):
    """The val split as a Ray Dataset of resized uint8 CHW images with their row index."""
    return stream_dataset(num_images, block_rows).map_batches(
        resize_batch, batch_format="numpy", batch_size=block_rows,
        fn_kwargs=dict(source=source, img_size=img_size))


def batch_resized_crop(images: np.ndarray, size: int, scale: tuple[float, float], hflip: float,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)):
    """RandomResizedCrop + horizontal flip of a whole batch at once (one `grid_sample`, bicubic).

    images: (B,H,W) or (B,H,W,3) uint8 -> float tensor (B,3,size,size) in 0..255. Crop area fraction
    ~ U(scale), log aspect ratio ~ U(log ratio), as torchvision/timm (10 tries, else the full image),
    drawn from torch's global RNG. Per-image PIL transforms cost ~0.5 ms an image; this ~0.1 ms.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = (x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).float()
    b, _, h, w = x.shape
    area = torch.empty(b, 10).uniform_(scale[0], scale[1])
    aspect = torch.empty(b, 10).uniform_(float(np.log(ratio[0])), float(np.log(ratio[1]))).exp()
    crop_w = (area * aspect).sqrt() * (h / w) ** 0.5  # fractions of the width and height
    crop_h = (area / aspect).sqrt() * (w / h) ** 0.5
    ok = (crop_w <= 1) & (crop_h <= 1)
    first, rows, found = ok.float().argmax(1), torch.arange(b), ok.any(1)
    crop_w = torch.where(found, crop_w[rows, first], torch.ones(b))
    crop_h = torch.where(found, crop_h[rows, first], torch.ones(b))
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = crop_w * torch.where(torch.rand(b) < hflip, -1.0, 1.0)
    theta[:, 0, 2] = (torch.rand(b) * 2 - 1) * (1 - crop_w)
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = (torch.rand(b) * 2 - 1) * (1 - crop_h)
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp_(0, 255)


def finetune_batch(batch: dict[str, np.ndarray], *, source: list, num_images: int, seed: int,
                   img_size: int, randaugment: str, crop_scale_min: float,
                   hflip: float) -> dict[str, np.ndarray]:
    """Ray Data adapter for training: {"id"} -> {"image" (B,3,S,S) uint8, "label" int64}.

    Without RandAugment: `batch_resized_crop` (RandomResizedCrop + flip, batched). With it:
    pre-training's DeiT-style per-image `augment_batch` (timm: crop, flip, colour jitter, RandAugment).
    """
    import torch

    images, labels = get_source(source)
    ids = np.asarray(batch["id"], dtype=np.int64)
    idx = stream_indices(ids, num_images, seed)
    seed_batch(seed, int(ids[0]) if len(ids) else 0)
    if not randaugment:
        crops = batch_resized_crop(images[idx], img_size, (crop_scale_min, 1.0), hflip)
        return {"image": crops.round_().to(torch.uint8).numpy(), "label": labels[idx]}
    from fdsl.platform.pretrain import augment_batch

    return augment_batch({"image": images[idx], "label": labels[idx]}, img_size=img_size,
                         randaugment=randaugment, crop_scale_min=crop_scale_min, hflip=hflip, repeats=1)
