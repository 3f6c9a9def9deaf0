"""How to store images in shards: size, encode and decode time of lossless encodings, one core.

    .venv/bin/python benchmarks/encodings.py [--preset fractaldb-1k] [--images 64]

Every candidate stores the same rendered images in a Parquet `image` column and reads them back to
uint8 arrays, so "bytes/image" is the size on disk and the times include Parquet:
  raw+zstdL   the uint8 pixels as bytes, the column compressed by Parquet with zstd level L
  pngN        one PNG per image (PIL, compress_level N), column uncompressed
  webp        one lossless WebP per image (PIL, method 0), column uncompressed
  zlib6       the pixels deflated per image (stdlib zlib level 6), column uncompressed
Each is measured 3 times after a warm-up; the best time counts. Last line: one JSON object.
docs/synthesis.md explains the choice these numbers support.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fdsl.generators import build_generator
from fdsl.presets import get_preset


def _png(level):
    def encode(img):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()
    return encode


def _webp(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", lossless=True, quality=0, method=0)
    return buf.getvalue()


def _pil_decode(blob, shape):
    image = Image.open(io.BytesIO(blob))
    return np.asarray(image.convert("L") if len(shape) == 2 else image.convert("RGB"))  # WebP is RGB


CANDIDATES = {
    # name: (encode, decode(bytes, shape), parquet compression, level)
    "raw+zstd3": (lambda a: a.tobytes(), lambda b, s: np.frombuffer(b, np.uint8).reshape(s), "zstd", 3),
    "raw+zstd9": (lambda a: a.tobytes(), lambda b, s: np.frombuffer(b, np.uint8).reshape(s), "zstd", 9),
    "raw+snappy": (lambda a: a.tobytes(), lambda b, s: np.frombuffer(b, np.uint8).reshape(s), "snappy", None),
    "png1": (_png(1), _pil_decode, "none", None),
    "png6": (_png(6), _pil_decode, "none", None),
    "webp": (_webp, _pil_decode, "none", None),
    "zlib6": (lambda a: zlib.compress(a.tobytes(), 6),
              lambda b, s: np.frombuffer(zlib.decompress(b), np.uint8).reshape(s), "none", None),
}


def measure(images: list[np.ndarray], name: str, path: str) -> dict:
    encode, decode, compression, level = CANDIDATES[name]
    shape = images[0].shape
    start = time.perf_counter()
    blobs = [encode(img) for img in images]
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), path, compression=compression,
                   compression_level=level, use_dictionary=False)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    column = pq.read_table(path).column("image").to_pylist()
    decoded = [decode(b, shape) for b in column]
    decode_s = time.perf_counter() - start
    assert all(np.array_equal(a, b) for a, b in zip(images, decoded, strict=True)), name
    n = len(images)
    return {"bytes_per_image": round(os.path.getsize(path) / n), "encode_ms": round(encode_s / n * 1e3, 3),
            "decode_ms": round(decode_s / n * 1e3, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fractaldb-1k")
    parser.add_argument("--images", type=int, default=64, help="images (consecutive instances of 2 classes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    experiment = get_preset(args.preset, args.overrides)
    gen = build_generator(experiment.generator, experiment.data)
    per_class = max(1, min(args.images // 2, gen.num_instances))
    gen.render(0, 0), gen.render(1, 0)  # class systems found before timing
    start = time.perf_counter()
    images = [gen.render(c, i) for c in (0, 1) for i in range(per_class)]
    render_ms = (time.perf_counter() - start) / len(images) * 1e3
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CANDIDATES:  # warm-up: first use of each codec and of the Parquet writer
            measure(images[:4], name, os.path.join(tmp, f"{name}.parquet"))
        for name in CANDIDATES:  # best of 3: the machine may be shared
            runs = [measure(images, name, os.path.join(tmp, f"{name}.parquet")) for _ in range(3)]
            results[name] = {key: min(r[key] for r in runs) for key in runs[0]}
    raw = images[0].size
    print(f"{args.preset}: {len(images)} images {images[0].shape}, {raw} raw bytes, "
          f"render {render_ms:.2f} ms/image (one core)")
    print(f"{'encoding':12s} {'bytes/image':>11s} {'ratio':>6s} {'encode ms':>10s} {'decode ms':>10s}")
    for name, r in results.items():
        print(f"{name:12s} {r['bytes_per_image']:11d} {raw / r['bytes_per_image']:6.1f} "
              f"{r['encode_ms']:10.3f} {r['decode_ms']:10.3f}")
    print(json.dumps({"bench": "encodings", "preset": args.preset, "images": len(images),
                      "shape": list(images[0].shape), "render_ms": round(render_ms, 3), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
