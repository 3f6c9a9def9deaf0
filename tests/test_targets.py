"""Target-set loaders, each on a small file written here in the real format."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from fdsl.platform.data.targets import load_target, read_idx, target_kinds


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_set(folder, gz: bool):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)


def test_registry_lists_every_kind():
    assert set(target_kinds()) >= {"digits", "idx", "cifar10", "cifar100", "imagefolder", "parquet"}


def test_digits_split_is_fixed_and_stratified():
    a = load_target("digits")
    b = load_target("digits")
    assert a.num_classes == 10 and a.train_images.dtype == np.uint8 and a.image_shape == (8, 8)
    assert a.train_images.max() == 255
    assert np.array_equal(a.train_labels, b.train_labels) and np.array_equal(a.val_images, b.val_images)
    assert len(a.train_labels) + len(a.val_labels) == 1797
    assert np.bincount(a.val_labels).min() >= 30


def test_low_data_subsets_are_seeded_and_balanced():
    few = load_target("digits", samples_per_class=5, seed=1)
    assert np.array_equal(np.bincount(few.train_labels), np.full(10, 5))
    again = load_target("digits", samples_per_class=5, seed=1)
    other = load_target("digits", samples_per_class=5, seed=2)
    assert np.array_equal(few.train_images, again.train_images)
    assert not np.array_equal(few.train_images, other.train_images)
    tenth = load_target("digits", train_fraction=0.1)
    full = load_target("digits")
    assert abs(len(tenth.train_labels) - 0.1 * len(full.train_labels)) <= 10
    assert len(tenth.val_labels) == len(full.val_labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader(tmp_path, gz):
    make_idx_set(tmp_path, gz)
    data = load_target(f"idx:{tmp_path}")
    assert data.train_images.shape == (40, 28, 28) and data.val_images.shape == (20, 28, 28)
    assert data.num_classes == 10 and data.train_labels[:3].tolist() == [0, 1, 2]


def test_idx_truncated_or_wrong_file_names_the_file(tmp_path):
    make_idx_set(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: .* expected .* \(truncated\?\)"):
        load_target(f"idx:{tmp_path}")
    bad.write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: not an IDX file"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_target(f"idx:{tmp_path}/nope")


def test_fashion_mnist_from_debian_if_installed():
    folder = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(folder):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data = load_target(f"idx:{folder}", samples_per_class=2)
    assert data.num_classes == 10 and data.val_images.shape == (10000, 28, 28)


def write_cifar(folder, names, label_key, num_classes, n=10):
    rng = np.random.default_rng(1)
    for name in names:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 label_key: [int(v) for v in rng.integers(0, num_classes, n)]}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10_and_cifar100(tmp_path):
    c10 = tmp_path / "c10"
    c10.mkdir()
    write_cifar(c10, [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"], b"labels", 10)
    data = load_target(f"cifar10:{c10}")
    assert data.train_images.shape == (50, 32, 32, 3) and data.val_images.shape == (10, 32, 32, 3)
    # fdsl-security: allow-pickle: reads back the batch this test wrote a moment ago
    raw = pickle.loads((c10 / "data_batch_1").read_bytes())[b"data"][0]
    assert np.array_equal(data.train_images[0][..., 0].ravel(), raw[:1024])  # channel-first rows
    c100 = tmp_path / "c100"
    c100.mkdir()
    write_cifar(c100, ["train", "test"], b"fine_labels", 100)
    assert load_target(f"cifar100:{c100}").num_classes == 100


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_refuses_code_and_truncation(tmp_path):
    write_cifar(tmp_path, [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"], b"labels", 10)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_3: not a CIFAR python batch .*refusing"):
        load_target(f"cifar10:{tmp_path}")
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    (tmp_path / "data_batch_3").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_target(f"cifar10:{tmp_path}")


def test_imagefolder(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (12, 10), (k * 40, 0, 0)).save(tmp_path / split / cls / f"{k}.png")
    data = load_target(f"imagefolder:{tmp_path}")
    assert data.class_names == ["cat", "dog"] and data.train_images.shape == (6, 10, 12, 3)
    assert data.val_labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png: not a readable image"):
        load_target(f"imagefolder:{tmp_path}")


def test_bad_specs():
    with pytest.raises(ValueError, match=r"^dataset: got 'mnist', expected one of"):
        load_target("mnist")
    with pytest.raises(ValueError, match="needs a path"):
        load_target("idx")
    with pytest.raises(ValueError, match="train_fraction"):
        load_target("digits", train_fraction=0)


@pytest.mark.parametrize(("batch", "message"), [
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1000]},
     r"labels span 0\.\.1000, expected 0\.\.9"),
    ({b"data": np.full((2, 3072), 1000), b"labels": [0, 1]}, "data must be uint8 pixels 0-255"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 1]}, r"labels span -1\.\.1"),
])
def test_cifar_content_is_checked(tmp_path, batch, message):
    write_cifar(tmp_path, [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"], b"labels", 10)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=message):
        load_target(f"cifar10:{tmp_path}")


def test_imagefolder_decompression_bomb_is_one_line(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / split / "a" / "0.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "train" / "a" / "bomb.png")  # 400 Mpx, a few KB
    with pytest.raises(ValueError, match=r"bomb\.png: not a readable image .*decompression bomb"):
        load_target(f"imagefolder:{tmp_path}")
