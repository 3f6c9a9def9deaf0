"""Per-image cost of the FractalDB-family renderers on one core, against the reference.

    NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/generators.py [--categories 24]

The reference (../shared/bench/reference, or $FDSL_REFERENCE_DIR) re-creates the original public
renderer's per-image work; it runs in this same process, so the ratios compare like with like.
Per image means per dataset image: the reference renders one instance and writes its 4 flips, so
its per-image cost is a call / 4; ours renders a base once and serves its 4 flips from it, the same
sharing. We also print the cost without sharing (each image a fresh rendering). Encoding is off
on both sides (`encode=False`): this compares renderers. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from fdsl.generators import get_generator, ifs  # noqa: E402
from fdsl.generators.rng import derive_seed  # noqa: E402

REFERENCE = Path(os.environ.get("FDSL_REFERENCE_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "bench" / "reference"))
FRACTALDB = dict(image_size=362, pad=6, num_points=200_000, draw_mode="patch", color="gray")


def per_image(gen, classes, instances) -> float:
    """Mean seconds per rendered image over classes x instances (class systems found beforehand)."""
    for c in classes:
        gen.system(c)
    start = time.perf_counter()
    count = 0
    for c in classes:
        for i in instances:
            gen.render(c, i)
            count += 1
    return (time.perf_counter() - start) / count


def search_time(num: int, seed: int = 0) -> float:
    """Seconds per accepted category of our search (FractalDB-1k settings)."""
    kwargs = dict(n_min=2, n_max=7, param_range=1.0, fill_rate=0.2, num_points=100_000, size=512,
                  pad=6, max_tries=1_000_000)
    start = time.perf_counter()
    for k in range(num):
        ifs.search_system(derive_seed(seed, "bench", k), **kwargs)
    return (time.perf_counter() - start) / num


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--categories", type=int, default=24, help="categories averaged over")
    ap.add_argument("--ref-images", type=int, default=16, help="reference images (multiple of 4)")
    ap.add_argument("--ref-search", type=int, default=24,
                    help="reference categories to search (its cost per category varies several-fold)")
    args = ap.parse_args()

    # warm-up: numba compilation (or cache load) stays outside the timed region
    get_generator("fractaldb", num_classes=1, num_instances=4, **FRACTALDB).render(0, 0)
    search_time(1, seed=99)

    classes = range(args.categories)
    results: dict[str, float] = {}
    fdb = get_generator("fractaldb", num_classes=args.categories, num_instances=1000, **FRACTALDB)
    results["fractaldb_patch_s"] = per_image(fdb, classes, range(8))           # 2 bases x 4 flips
    results["fractaldb_patch_noshare_s"] = per_image(fdb, classes, range(0, 32, 4))  # 8 fresh bases
    col = get_generator("fractaldb", num_classes=args.categories, num_instances=1000,
                        **{**FRACTALDB, "color": "color"})
    results["fractaldb_patch_color_s"] = per_image(col, classes, range(8))
    sig = get_generator("fractaldb", num_classes=args.categories, num_instances=1000, sampling="sigma",
                        **FRACTALDB)
    results["fractaldb_sigma_patch_s"] = per_image(sig, classes, range(8))
    one = get_generator("onepfrac", num_classes=args.categories, num_instances=1000, **FRACTALDB)
    results["onepfrac_patch_s"] = per_image(one, classes, range(8))
    results["search_per_category_s"] = search_time(args.categories)

    ref_note = None
    if REFERENCE.is_dir():
        sys.path.insert(0, str(REFERENCE))
        import fractaldb_ref  # noqa: PLC0415
        import time_ref  # noqa: PLC0415

        results["ref_fractaldb_patch_s"] = time_ref.time_kind("fractaldb", args.ref_images, encode=False)
        start = time.perf_counter()
        fractaldb_ref.search_categories(args.ref_search, seed=1)
        results["ref_search_per_category_s"] = (time.perf_counter() - start) / args.ref_search
        results["speedup_fractaldb_patch"] = results["ref_fractaldb_patch_s"] / results["fractaldb_patch_s"]
        results["speedup_fractaldb_patch_noshare"] = (results["ref_fractaldb_patch_s"]
                                                     / results["fractaldb_patch_noshare_s"])
        results["speedup_search"] = results["ref_search_per_category_s"] / results["search_per_category_s"]
    else:
        ref_note = f"reference folder {REFERENCE} absent: ratios skipped"
        print(f"NOTE: {ref_note}")

    print(f"{'renderer (362x362, 200k points, one core)':48s} {'ms/image':>10s}")
    for key, value in results.items():
        if key.endswith("_s"):
            print(f"{key[:-2]:48s} {value * 1e3:10.3f}")
    for key, value in results.items():
        if key.startswith("speedup"):
            print(f"{key:48s} {value:10.1f}x")
    print(json.dumps({"benchmark": "generators", "numba_threads": os.environ["NUMBA_NUM_THREADS"],
                      "categories": args.categories, "note": ref_note,
                      **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in results.items()},
                      "targets": {"speedup_fractaldb_patch": 300, "speedup_search": 100},
                      "numpy": np.__version__}))


if __name__ == "__main__":
    main()
