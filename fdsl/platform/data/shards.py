"""Shard files: the synthesis plan, the one render adapter, image encodings, atomic Parquet writes.

No Ray here: these functions run inside Ray tasks (or any process) and are tested directly.

Rows are numbered class-major: row r is (label r // num_instances, instance r % num_instances), so a
shard holds consecutive instances of few classes and a worker finds each class's system once.
Shard k holds rows [k * shard_rows, min((k + 1) * shard_rows, num_rows)).

Parquet schema of `shard-NNNNN.parquet` (docs/synthesis.md):
    image     binary   encoded pixels ("raw": uint8 bytes of an HxW or HxWx3 array, row-major; "png")
    label     int32    class id
    instance  int32    instance id within the class
and the file's key-value metadata b"fdsl" holds JSON {"encoding", "image_shape", "shard", "first_row"}.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fdsl.atomic import atomic_path
from fdsl.generators import Generator, build_generator, generator_class
from fdsl.platform.data.synthesis_config import SynthesisConfig

SHARD_GLOB = "shard-*.parquet"
TMP_GLOB = ".shard-*.parquet.*.tmp*"
HASH_CHUNK = 4 << 20


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Fixed shards of class-major rows: a pure function of (num_classes, num_instances, shard_rows)."""

    num_classes: int
    num_instances: int
    shard_rows: int

    @property
    def num_rows(self) -> int:
        return self.num_classes * self.num_instances

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.shard_rows)

    def rows(self, shard: int) -> range:
        assert 0 <= shard < self.num_shards, shard
        return range(shard * self.shard_rows, min((shard + 1) * self.shard_rows, self.num_rows))

    def label_instance(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        return (rows // self.num_instances).astype(np.int32), (rows % self.num_instances).astype(np.int32)

    def locate(self, label: int, instance: int) -> tuple[int, int]:
        """(shard, offset within the shard) of one image."""
        return divmod(label * self.num_instances + instance, self.shard_rows)


def plan_of(experiment) -> ShardPlan:
    return ShardPlan(experiment.data.num_classes, experiment.data.num_instances,
                     experiment.synthesis.shard_rows)


# --- the render adapter: the only place Ray Data meets a generator ------------------------------
@functools.lru_cache(maxsize=4)
def _generator(generator: str, data_json: str) -> Generator:
    """One generator per process and config, so its per-class cache survives across batches."""
    data = generator_class(generator).config_cls.from_dict(json.loads(data_json))
    return build_generator(generator, data)


def generator_key(experiment) -> tuple[str, str]:
    """Hashable, picklable identity of an experiment's generator (name, canonical config JSON)."""
    return experiment.generator, json.dumps(experiment.data.to_dict(), sort_keys=True)


def render_batch(batch: dict[str, np.ndarray], *, generator: tuple[str, str],
                 num_instances: int) -> dict[str, np.ndarray]:
    """Ray Data adapter: rows {"id": int64 row numbers} -> {"image", "label", "instance"}.

    `image` is a uint8 array (B, H, W) or (B, H, W, 3); rows are class-major (see module doc).
    """
    gen = _generator(*generator)
    rows = np.asarray(batch["id"], dtype=np.int64)
    labels = (rows // num_instances).astype(np.int32)
    instances = (rows % num_instances).astype(np.int32)
    images = [gen.render(int(c), int(i)) for c, i in zip(labels, instances, strict=True)]
    return {"image": np.stack(images) if images else np.zeros((0, 0, 0), np.uint8),
            "label": labels, "instance": instances}


# --- encodings ------------------------------------------------------------------------------
def encode_images(images: np.ndarray, encoding: str, level: int) -> list[bytes]:
    """Bytes of each image of a (B, H, W[, C]) uint8 batch."""
    if encoding == "raw":  # compressed by the Parquet column (zstd), not per image
        return [np.ascontiguousarray(img).tobytes() for img in images]
    if encoding == "png":
        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", compress_level=level)
            out.append(buf.getvalue())
        return out
    raise ValueError(f"encoding: got {encoding!r}, expected one of ['raw', 'png']")


def decode_images(blobs, encoding: str, image_shape) -> np.ndarray:
    """A (B, *image_shape) uint8 array from the encoded bytes of B images."""
    shape = tuple(int(s) for s in image_shape)
    if encoding == "raw":
        flat = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=np.uint8)
        return flat.reshape((len(blobs), *shape))
    if encoding == "png":
        out = np.empty((len(blobs), *shape), dtype=np.uint8)
        for k, blob in enumerate(blobs):
            out[k] = np.asarray(Image.open(io.BytesIO(bytes(blob))))
        return out
    raise ValueError(f"encoding: got {encoding!r}, expected one of ['raw', 'png']")


# --- hashing --------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def update_content_hash(h, images: np.ndarray, labels: np.ndarray, instances: np.ndarray) -> None:
    """Feed samples to a content hash: label, instance, shape and pixels of each row (encoding-free)."""
    for img, label, instance in zip(images, labels, instances, strict=True):
        h.update(np.array([label, instance, *img.shape], dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(img).tobytes())


def combine_content(shard_digests: list[str]) -> str:
    """Dataset content_sha256: sha256 of the shards' content digests, in shard order."""
    h = hashlib.sha256()
    for digest in shard_digests:
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


# --- writing one shard ----------------------------------------------------------------------
def write_shard(out_dir: str | os.PathLike, shard: int, *, generator: tuple[str, str],
                synthesis: dict) -> dict:
    """Render shard `shard` of a data set and write it atomically; returns its manifest entry.

    `generator` is `generator_key(experiment)`, `synthesis` the experiment's synthesis section as a
    dict (both plain data, cheap to ship to a Ray task).

    Row groups of `batch_size` rows are rendered, encoded and written one at a time (memory stays
    at one batch), to a hidden temporary file that is fsynced and renamed into place. On any error
    the temporary file is removed: a final name only ever holds a complete shard.
    """
    syn = SynthesisConfig.from_dict(synthesis)
    data = _generator(*generator).config
    plan = ShardPlan(data.num_classes, data.num_instances, syn.shard_rows)
    rows = plan.rows(shard)
    final = Path(out_dir) / shard_name(shard)
    key = generator
    content = hashlib.sha256()
    schema = pa.schema([("image", pa.binary()), ("label", pa.int32()), ("instance", pa.int32())])
    compression = ({"image": "zstd", "label": "zstd", "instance": "zstd"} if syn.encoding == "raw"
                   else {"image": "none", "label": "zstd", "instance": "zstd"})
    image_shape = None
    writer = None
    started = time.perf_counter()
    with atomic_path(final) as tmp:  # fsynced and renamed on success, removed on any error
        try:
            for start in range(rows.start, rows.stop, syn.batch_size):
                ids = np.arange(start, min(start + syn.batch_size, rows.stop), dtype=np.int64)
                batch = render_batch({"id": ids}, generator=key, num_instances=plan.num_instances)
                if image_shape is None:
                    image_shape = list(batch["image"].shape[1:])
                    meta = {"encoding": syn.encoding, "image_shape": image_shape, "shard": shard,
                            "first_row": rows.start}
                    writer = pq.ParquetWriter(
                        tmp, schema.with_metadata({"fdsl": json.dumps(meta)}), compression=compression,
                        compression_level=syn.compression_level if syn.encoding == "raw" else None,
                        use_dictionary=["label", "instance"], write_statistics=["label", "instance"])
                assert list(batch["image"].shape[1:]) == image_shape, "a generator changed image shape"
                update_content_hash(content, batch["image"], batch["label"], batch["instance"])
                blobs = encode_images(batch["image"], syn.encoding, syn.compression_level)
                writer.write_table(pa.table({"image": pa.array(blobs, pa.binary()),
                                             "label": pa.array(batch["label"], pa.int32()),
                                             "instance": pa.array(batch["instance"], pa.int32())},
                                            schema=writer.schema), row_group_size=syn.batch_size)
            writer.close()
            writer = None
            digest, size = file_sha256(tmp), tmp.stat().st_size
        finally:
            if writer is not None:
                writer.close()
    return {"shard": shard, "file": final.name, "rows": len(rows), "first_row": rows.start,
            "bytes": size, "sha256": digest, "content_sha256": content.hexdigest(),
            "image_shape": image_shape, "seconds": round(time.perf_counter() - started, 4)}


def read_shard(path: str | os.PathLike, offsets: list[int] | None = None) -> dict[str, np.ndarray]:
    """{"image", "label", "instance"} arrays of the rows at `offsets` of one shard (all if None)."""
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"fdsl"])
    if offsets is not None:
        table = table.take(offsets)
    return {"image": decode_images(table.column("image").to_pylist(), meta["encoding"], meta["image_shape"]),
            "label": table.column("label").to_numpy(), "instance": table.column("instance").to_numpy()}
