"""The data-path benchmarks run (benchmarks/: figures in docs/benchmarks.md, never asserted here):
the GPU check at debug size on the CPU with Ray, DeepSpeed and MLflow made unimportable (a lent GPU
machine has none of them), and benchmarks/datapath.py on a few images."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

BLOCKED = "import sys, runpy\nfor m in ('ray', 'deepspeed', 'mlflow'): sys.modules[m] = None\n"


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_gpu_check_runs_without_ray_or_deepspeed():
    code = BLOCKED + ("sys.argv = ['gpu_check.py', '--debug']\n"
                      "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = _last_json(res.stdout)
    assert out["train_images_per_s"] > 0 and out["train_gflop_per_image"] > 0 and out["mfu"] is None
    assert out["device_augment_images_per_s"] > 0 and out["shards_to_device_images_per_s"] > 0


def test_datapath_benchmark_prints_the_four_paths():
    argv = ["benchmarks/datapath.py", "--images", "16", "--families", "rcdb-1k"]
    res = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = _last_json(res.stdout)
    assert set(out["ms_per_image"]) == {"a_anchor_png_timm", "b_shards_cpu_augment", "c_shards_decode_cpu",
                                        "c_device_augment"}
    assert set(out["stream"]) == {"rcdb-1k"} and set(out["cpu_cores_per_gpu"]) == {
        "vit_base_patch16_224", "vit_tiny_patch16_224"}
    assert "(a) anchor" in res.stdout and "(d) stream rcdb-1k" in res.stdout
