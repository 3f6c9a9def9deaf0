"""Per-image cost of the RCDB, VisualAtom and ExFractalDB renderers on one core, against the reference.

    NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/generators_contour.py [--rounds 3]

The references (../shared/bench/reference, or $FDSL_REFERENCE_DIR) re-create the original public
renderers' per-image work for RCDB and VisualAtom (512x512); they run in this same process, in
blocks of 16 reference images alternating with blocks of ours, and each side reports its median
round, so the ratios compare like with like on a shared machine (wall time, as time_ref reports,
and CPU time, which is less disturbed by other processes). Encoding is off on both sides
(`encode=False`): this compares renderers. The cost of an image depends on its category (about
vertices x contours), so ours is averaged over many categories (one image each) and the sample's
mean work is printed against the distribution's mean. ExFractalDB has no reference (the original
needs OpenGL); its target is absolute: under 10 ms per 224x224 image, the one-off category search
timed apart.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from fdsl.generators import get_generator  # noqa: E402
from fdsl.generators.rcdb import truncated_exponential_int  # noqa: E402

REFERENCE = Path(os.environ.get("FDSL_REFERENCE_DIR",
                                Path(__file__).resolve().parents[2] / "shared" / "bench" / "reference"))
TARGET_SPEEDUP = {"rcdb": 20.0, "visualatom": 50.0}
TARGET_EXFRACTALDB_MS = 10.0
BLOCK = 16  # reference images per block: one stratification block of time_ref


def per_image(gen, classes, instances_per_class: int = 1) -> tuple[float, float]:
    """Mean (wall, CPU) seconds per image over `classes` x the first instances (search/JIT done
    before)."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    for c in classes:
        for i in range(instances_per_class):
            gen.render(c, i)
            count += 1
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def interleaved(gen, name: str, num: int, ref_n: int, time_ref) -> dict[str, float]:
    """One round: ours on `num` categories and the reference on `ref_n` images, alternating in
    blocks of 16 reference images (whole stratification blocks) so both see the same load.
    Seconds per image, wall and CPU, for each side."""
    blocks = max(1, ref_n // BLOCK) if time_ref is not None else 1
    out = dict.fromkeys(("ours_wall", "ours_cpu", "ref_wall", "ref_cpu"), 0.0)
    for j, classes in enumerate(np.array_split(np.arange(num), blocks)):
        wall, cpu = per_image(gen, classes.tolist())
        out["ours_wall"] += wall * len(classes) / num
        out["ours_cpu"] += cpu * len(classes) / num
        if time_ref is not None:
            start = time.process_time()
            out["ref_wall"] += time_ref.time_kind(name, BLOCK, seed=j * BLOCK, encode=False) / blocks
            out["ref_cpu"] += (time.process_time() - start) / BLOCK / blocks
    return out


def mean_work(gen, classes) -> float:
    """Mean vertices x contours (the cost driver) of the categories."""
    return float(np.mean([p["n_vertex"] * p["n_lines"] for p in map(gen.category_params, classes)]))


def expected_work(name: str, cfg) -> float:
    """The distribution's mean vertices x contours (the two are drawn independently)."""
    lines = (cfg.num_lines_min + cfg.num_lines_max) / 2
    if name == "visualatom":
        return (cfg.vertex_min + cfg.vertex_max) / 2 * lines
    u = (np.arange(200_000) + 0.5) / 200_000
    vertices = np.mean([truncated_exponential_int(x, cfg.vertex_mean, cfg.vertex_min, cfg.vertex_max)
                        for x in u])
    return float(vertices * lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    ap.add_argument("--rcdb-categories", type=int, default=2048)
    ap.add_argument("--visualatom-categories", type=int, default=1024)
    ap.add_argument("--exfractaldb-categories", type=int, default=64)
    ap.add_argument("--exfractaldb-instances", type=int, default=16)
    ap.add_argument("--ref-rcdb", type=int, default=512, help="reference RCDB images per round")
    ap.add_argument("--ref-visualatom", type=int, default=64, help="reference VisualAtom images per round")
    args = ap.parse_args()

    time_ref = None
    note = None
    if REFERENCE.is_dir():
        sys.path.insert(0, str(REFERENCE))
        import time_ref  # noqa: PLC0415
    else:
        note = f"reference folder {REFERENCE} absent: reference timings and ratios skipped"
        print(f"NOTE: {note}")

    results: dict[str, dict] = {}
    for name, num, ref_n in (("rcdb", args.rcdb_categories, args.ref_rcdb),
                             ("visualatom", args.visualatom_categories, args.ref_visualatom)):
        gen = get_generator(name, num_classes=num, num_instances=1000, image_size=512)
        gen.render(0, 0)  # warm-up: numba compilation or cache load
        if time_ref is not None:
            time_ref.time_kind(name, 1, seed=10_000, encode=False)  # warm-up: imports, loop compile
        rounds = [interleaved(gen, name, num, ref_n, time_ref) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        row = {"image_size": 512, "categories": num, "ms_per_image": med["ours_wall"] * 1e3,
               "cpu_ms_per_image": med["ours_cpu"] * 1e3,
               "rounds_ms": [round(r["ours_wall"] * 1e3, 4) for r in rounds],
               "sample_work_vs_mean": mean_work(gen, range(num)) / expected_work(name, gen.config)}
        if time_ref is not None:
            row["reference_images"] = max(1, ref_n // BLOCK) * BLOCK
            row["reference_ms_per_image"] = med["ref_wall"] * 1e3
            row["reference_cpu_ms_per_image"] = med["ref_cpu"] * 1e3
            row["reference_rounds_ms"] = [round(r["ref_wall"] * 1e3, 3) for r in rounds]
            row["speedup"] = med["ref_wall"] / med["ours_wall"]
            row["speedup_cpu"] = med["ref_cpu"] / med["ours_cpu"]
            row["target_speedup"] = TARGET_SPEEDUP[name]
            row["met"] = row["speedup"] >= TARGET_SPEEDUP[name]
        results[name] = row

    num, inst = args.exfractaldb_categories, args.exfractaldb_instances
    gen = get_generator("exfractaldb", num_classes=num, num_instances=1000, image_size=224)
    gen.render(0, 0)
    start = time.perf_counter()
    for c in range(1, num):
        gen.system(c)
    search_ms = (time.perf_counter() - start) / max(num - 1, 1) * 1e3
    # instances 0..inst-1 are distinct weight rows and viewpoints (145 rows)
    ex = [per_image(gen, range(num), inst) for _ in range(args.rounds)]
    ms = statistics.median(t[0] for t in ex) * 1e3
    results["exfractaldb"] = {"image_size": 224, "categories": num, "instances_per_category": inst,
                              "ms_per_image": ms,
                              "cpu_ms_per_image": statistics.median(t[1] for t in ex) * 1e3,
                              "rounds_ms": [round(t[0] * 1e3, 4) for t in ex],
                              "target_ms": TARGET_EXFRACTALDB_MS, "met": ms < TARGET_EXFRACTALDB_MS,
                              "search_ms_per_category": search_ms}

    print(f"{'renderer (one core, no encoding)':30s} {'ours ms/img':>11s} {'ref ms/img':>10s} "
          f"{'speedup':>8s} {'(CPU time)':>10s} {'target':>8s} {'met':>5s}")
    for name, row in results.items():
        ref = f"{row['reference_ms_per_image']:.2f}" if "reference_ms_per_image" in row else "-"
        speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        speedup_cpu = f"{row['speedup_cpu']:.1f}x" if "speedup_cpu" in row else "-"
        if "target_ms" in row:
            target = f"<{row['target_ms']:.0f} ms"
        else:
            target = f">={row['target_speedup']:.0f}x" if "target_speedup" in row else "-"
        label = f"{name} {row['image_size']}x{row['image_size']}"
        print(f"{label:30s} {row['ms_per_image']:11.3f} {ref:>10s} {speedup:>8s} {speedup_cpu:>10s} "
              f"{target:>8s} {str(row.get('met', '-')):>5s}")
    for name in ("rcdb", "visualatom"):
        print(f"{name}: mean work (vertices x contours) of our {results[name]['categories']} categories "
              f"= {results[name]['sample_work_vs_mean']:.3f} x the distribution's mean")
    print(f"exfractaldb: category search {search_ms:.2f} ms per category (one-off, not in ms/image)")
    print(json.dumps({"benchmark": "generators_contour", "numba_threads": os.environ["NUMBA_NUM_THREADS"],
                      "rounds": args.rounds, "note": note,
                      **{k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                         for k, v in results.items()}}))


if __name__ == "__main__":
    main()
