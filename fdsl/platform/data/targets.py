"""Target data sets for fine-tuning, all read from local files (nothing downloads).

    load_target("digits")                      # scikit-learn's bundled 8x8 digits: always works
    load_target("idx:/usr/share/.../fashion-mnist")     # MNIST / Fashion-MNIST IDX files (.gz or not)
    load_target("cifar10:/data/cifar-10-batches-py")    # the python-pickle batches (read safely)
    load_target("cifar100:/data/cifar-100-python")
    load_target("imagefolder:/data/set")       # set/train/<class>/*.png and set/val/<class>/*.png
    load_target("parquet:/runs/data/fractaldb") # a folder written by `fdsl generate`

Every loader returns a `TargetData` of uint8 image arrays and int64 labels with a fixed train/val
split; `train_fraction` / `samples_per_class` pick a seeded low-data subset of the training split.
A wrong or truncated file raises ValueError naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_digits as sk_digits

from fdsl.config import Registry
from fdsl.platform.data.manifest import load_manifest
from fdsl.platform.data.shards import read_shard

TARGETS = Registry("dataset", "as KIND or KIND:PATH")
"""Target-set loaders `fn(path) -> TargetData` by kind; `@register_target(kind)` adds one."""
VAL_FRACTION = 0.2  # held-out share of sets that ship without a test split (digits, parquet)


@dataclasses.dataclass
class TargetData:
    """A labelled image set split into train and val."""

    name: str
    """The spec it was loaded from."""
    train_images: np.ndarray
    """(N, H, W) or (N, H, W, 3) uint8."""
    train_labels: np.ndarray
    """(N,) int64 in [0, num_classes)."""
    val_images: np.ndarray
    """(M, H, W) or (M, H, W, 3) uint8."""
    val_labels: np.ndarray
    """(M,) int64."""
    num_classes: int
    """Number of classes."""
    class_names: list[str]
    """A name per class."""

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])


def register_target(kind: str):
    """Decorator: a loader `fn(path) -> TargetData` for specs `kind` or `kind:PATH`."""
    return TARGETS.register(kind)


def target_kinds() -> list[str]:
    return TARGETS.names()


def load_target(spec: str, *, train_fraction: float = 1.0, samples_per_class: int = 0,
                seed: int = 0) -> TargetData:
    """Load a target set by spec (`digits`, `idx:PATH`, ...) and take a seeded low-data subset.

    `samples_per_class` > 0 keeps that many training images per class; `train_fraction` < 1 keeps
    that share of each class. The val split is never subsampled.
    """
    kind, _, path = spec.partition(":")
    loader = TARGETS.get(kind, shown=spec)
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction: got {train_fraction}, expected a value in (0, 1]")
    if samples_per_class < 0:
        raise ValueError(f"samples_per_class: got {samples_per_class}, expected >= 0 (0 keeps all)")
    data = loader(path)
    data.name = spec
    _check_target(spec, data)
    keep = subset_indices(data.train_labels, data.num_classes, train_fraction, samples_per_class, seed)
    data.train_images, data.train_labels = data.train_images[keep], data.train_labels[keep]
    return data


MAX_IMAGE_SIDE = 4096
"""Largest image side a target set may have (a bigger one is refused, not resized)."""


def _check_target(spec: str, data: TargetData) -> None:
    """Labels in [0, num_classes), uint8 images of one shape per split, sides <= MAX_IMAGE_SIDE."""
    for split in ("train", "val"):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        if len(images) != len(labels):
            raise ValueError(f"dataset: {spec} {split} split has {len(images)} images and "
                             f"{len(labels)} labels")
        rgb_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
        if images.dtype != np.uint8 or not rgb_ok:
            raise ValueError(f"dataset: {spec} {split} images are {images.dtype} {list(images.shape[1:])}, "
                             "expected uint8 HxW or HxWx3")
        if max(images.shape[1:3]) > MAX_IMAGE_SIDE:
            raise ValueError(f"dataset: {spec} {split} images are {list(images.shape[1:3])} px, expected at "
                             f"most {MAX_IMAGE_SIDE} px a side; resize the set first")
        if len(labels) and (labels.min() < 0 or labels.max() >= data.num_classes):
            raise ValueError(f"dataset: {spec} {split} labels span {int(labels.min())}..{int(labels.max())}, "
                             f"expected 0..{data.num_classes - 1} ({data.num_classes} classes)")


def subset_indices(labels: np.ndarray, num_classes: int, fraction: float, per_class: int,
                   seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of `labels`."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        count = len(idx)
        if per_class:
            count = min(count, per_class)
        elif fraction < 1.0:
            count = max(1, int(round(fraction * count)))
        keep.append(idx[:count])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def holdout_split(labels: np.ndarray, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a fixed, seeded, stratified VAL_FRACTION held out per class."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(VAL_FRACTION * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _require_dir(path: str, kind: str) -> Path:
    if not path:
        raise ValueError(f"dataset: {kind} needs a path, as {kind}:PATH")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{kind}: folder {p} does not exist")
    return p


def _from_split(name, images, labels, num_classes, class_names) -> TargetData:
    train, val = holdout_split(labels, num_classes)
    return TargetData(name, images[train], labels[train], images[val], labels[val], num_classes,
                      class_names)


# --- digits: scikit-learn's bundled set, the default that always works ---------------------------
@register_target("digits")
def load_digits(path: str = "") -> TargetData:
    """1,797 8x8 handwritten digits (scikit-learn ships them), scaled from 0..16 to 0..255."""
    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    return _from_split("digits", images, labels, 10, [str(d) for d in range(10)])


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes as an array; ValueError if malformed."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX element type {raw[2]:#x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, expected {expected} for shape {dims} (truncated?)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"idx: {folder} has no {stem} or {stem}.gz")


@register_target("idx")
def load_idx(path: str) -> TargetData:
    """MNIST-style IDX files: train-/t10k- images-idx3-ubyte and labels-idx1-ubyte (.gz or not)."""
    folder = _require_dir(path, "idx")
    parts = {}
    for split, (img_stem, lbl_stem) in _IDX_FILES.items():
        img_path, lbl_path = _find(folder, img_stem), _find(folder, lbl_stem)
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{img_path}: {images.shape} images do not match "
                             f"{lbl_path}: {labels.shape} labels")
        parts[split] = (images, labels.astype(np.int64))
    num_classes = int(max(parts["train"][1].max(), parts["val"][1].max())) + 1
    return TargetData("idx", *parts["train"], *parts["val"], num_classes,
                      [str(c) for c in range(num_classes)])


# --- CIFAR python batches, unpickled with an allow-list --------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "list"), ("builtins", "dict")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"cifar: {path} not found")
    try:
        # safe-pickle: the allow-list unpickler above, never pickle.load
        batch = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a CIFAR python batch ({err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise ValueError(f"{path}: not a CIFAR python batch (no data/{label_key.decode()} keys)")
    try:
        raw = np.asarray(batch[b"data"])
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"{path}: not a CIFAR python batch ({err})") from None
    if raw.dtype != np.uint8 and (raw.size == 0 or not np.issubdtype(raw.dtype, np.integer)
                                  or raw.min() < 0 or raw.max() > 255):
        raise ValueError(f"{path}: data must be uint8 pixels 0-255, got {raw.dtype}")
    data = raw.astype(np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072) / (N,)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _load_cifar(path: str, kind: str, train_files: list[str], test_file: str, label_key: bytes,
                num_classes: int) -> TargetData:
    folder = _require_dir(path, kind)
    parts = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    val_x, val_y = _read_cifar_batch(folder / test_file, label_key)
    return TargetData(kind, train_x, train_y, val_x, val_y, num_classes,
                      [str(c) for c in range(num_classes)])


@register_target("cifar10")
def load_cifar10(path: str) -> TargetData:
    """CIFAR-10 python batches: data_batch_1..5 and test_batch."""
    return _load_cifar(path, "cifar10", [f"data_batch_{k}" for k in range(1, 6)], "test_batch",
                       b"labels", 10)


@register_target("cifar100")
def load_cifar100(path: str) -> TargetData:
    """CIFAR-100 python batches: train and test (fine labels)."""
    return _load_cifar(path, "cifar100", ["train"], "test", b"fine_labels", 100)


# --- ImageFolder ---------------------------------------------------------------------------
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _read_tree(root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels, shape = [], [], None
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
                raise ValueError(f"{file}: not a readable image ({err})") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise ValueError(f"{file}: size {arr.shape[:2]}, expected {shape[:2]} like the others "
                                 "(resize the set to one size first)")
            images.append(arr)
            labels.append(label)
    if not images:
        raise ValueError(f"imagefolder: no images under {root}")
    return np.stack(images), np.asarray(labels, np.int64)


@register_target("imagefolder")
def load_imagefolder(path: str) -> TargetData:
    """PATH/train/<class>/* and PATH/val/<class>/* (RGB, all one size)."""
    folder = _require_dir(path, "imagefolder")
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"imagefolder: {folder / split} not found (need train/ and val/)")
    classes = sorted(d.name for d in (folder / "train").iterdir() if d.is_dir())
    val_classes = sorted(d.name for d in (folder / "val").iterdir() if d.is_dir())
    if not classes or val_classes != classes:
        raise ValueError(f"imagefolder: class folders of train/ {classes} and val/ {val_classes} differ")
    train_x, train_y = _read_tree(folder / "train", classes)
    val_x, val_y = _read_tree(folder / "val", classes)
    return TargetData("imagefolder", train_x, train_y, val_x, val_y, len(classes), classes)


# --- our own shard format --------------------------------------------------------------------
@register_target("parquet")
def load_parquet(path: str) -> TargetData:
    """A folder written by `fdsl generate` (checked against its manifest); 20% held out per class."""
    folder = _require_dir(path, "parquet")
    manifest = load_manifest(folder)
    parts = []
    for entry in manifest["shards"]:
        file = folder / entry["file"]
        if not file.is_file():
            raise FileNotFoundError(f"parquet: {file} listed in the manifest is missing "
                                    "(re-run `fdsl generate` to restore it)")
        try:
            parts.append(read_shard(file))
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise ValueError(f"{file}: unreadable shard ({err}); run `fdsl verify {folder}`") from None
    images = np.concatenate([p["image"] for p in parts])
    labels = np.concatenate([p["label"] for p in parts]).astype(np.int64)
    num_classes = int(manifest["num_classes"])
    return _from_split("parquet", images, labels, num_classes, [str(c) for c in range(num_classes)])
