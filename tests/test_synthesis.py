"""Distributed synthesis on a real local Ray (2 CPUs, started once for this module).

Reproducible across worker counts, resumable shard by shard, safe against killed workers and bad
output folders; the written folder and the streaming source give the same images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, small_disk

from fdsl.cli import main
from fdsl.generators import build_generator
from fdsl.platform.data.datasets import read_dataset, render_dataset, validate_dataset_dir
from fdsl.platform.data.manifest import verify_dataset
from fdsl.platform.data.synthesis import MAX_SHARDS_PER_TASK, WAVES, generate, task_groups
from fdsl.presets import get_preset

pytestmark = pytest.mark.slow  # Ray and real training runs

# 8 classes x 64 instances in 4 shards of 128 rows: each render task runs ~0.5 s on one core, long
# enough to kill its worker mid-run.
SLOW = ["data.num_instances=64", "synthesis.shard_rows=128", "data.num_points=1000000"]
FAST = ["synthesis.shard_rows=16"]  # 8 x 8 images in 4 shards of 16
PNG = ["synthesis.encoding=png", "synthesis.compression_level=1"]


@pytest.fixture(scope="module")
def reference(ray_local, tmp_path_factory):
    """The SLOW data set rendered by 2 concurrent tasks."""
    out = tmp_path_factory.mktemp("reference") / "data"
    result = generate(get_preset("debug-fractaldb", SLOW), out, num_cpus=2)
    return out, result.manifest


@pytest.mark.parametrize(("shards", "slots"), [(16, 2), (16, 1), (3, 8), (1000, 64), (21000, 64), (7, 2)])
def test_task_groups_cover_every_shard_once_and_balance(shards, slots):
    todo = list(range(5, 5 + shards))
    groups = task_groups(todo, slots)
    assert [k for g in groups for k in g] == todo  # contiguous, in order, each shard once
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= MAX_SHARDS_PER_TASK
    assert len(groups) >= min(shards, slots * WAVES)  # every slot gets work, more than once
    assert task_groups([], slots) == []


def _copy(reference, tmp_path):
    src, manifest = reference
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst, manifest


def test_manifest_and_shards_load_with_pyarrow(reference):
    out, m = reference
    from fdsl.generators import generator_class

    assert m["generator"] == {"name": "fractaldb", "version": generator_class("fractaldb").version}
    assert m["versions"]["fdsl"]
    assert m["experiment"]["data"]["num_points"] == 1_000_000  # the full, validated config
    assert (m["num_shards"], m["num_rows"], m["image_shape"], m["encoding"]) == (4, 512, [64, 64], "raw")
    assert [s["rows"] for s in m["shards"]] == [128] * 4
    assert m["num_bytes"] == sum(os.path.getsize(out / s["file"]) for s in m["shards"])
    table = pq.read_table(out / "shard-00001.parquet")
    assert table.schema.field("image").type == pa.binary()
    assert table.schema.field("label").type == pa.int32() == table.schema.field("instance").type
    meta = json.loads(table.schema.metadata[b"fdsl"])
    assert meta == {"encoding": "raw", "image_shape": [64, 64], "shard": 1, "first_row": 128}
    assert table.column("label").to_pylist() == [2] * 64 + [3] * 64  # class-major rows
    image = np.frombuffer(table.column("image")[5].as_py(), np.uint8).reshape(64, 64)
    generator = build_generator("fractaldb", get_preset("debug-fractaldb", SLOW).data)
    assert np.array_equal(image, generator.render(2, 5))
    assert not list(out.glob(".shard-*")) and not (out / "_progress.jsonl").exists()


def test_same_content_with_one_worker(reference, tmp_path):
    _, m = reference
    result = generate(get_preset("debug-fractaldb", SLOW), tmp_path / "one", num_cpus=1)
    assert result.manifest["content_sha256"] == m["content_sha256"]
    assert [s["sha256"] for s in result.manifest["shards"]] == [s["sha256"] for s in m["shards"]]
    assert result.manifest == m  # the whole manifest: nothing in it depends on scheduling


def _kill_first_render_worker(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first worker of this test's own Ray (our descendants) running a render task."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "_write_shards" in " ".join(proc.cmdline()):
                    proc.kill()
                    killed.append(proc.pid)
                    return
        time.sleep(0.01)


def test_killed_worker_still_gives_the_same_dataset(reference, tmp_path):
    _, m = reference
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_render_worker, args=(killed, stop))
    killer.start()
    try:
        result = generate(get_preset("debug-fractaldb", SLOW), tmp_path / "killed", num_cpus=2)
    finally:
        stop.set()
        killer.join()
    assert killed, "no render worker was seen running"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert result.manifest["content_sha256"] == m["content_sha256"]
    assert verify_dataset(tmp_path / "killed").ok
    assert not list((tmp_path / "killed").glob(".shard-*"))


def test_deleted_shard_is_restored_alone(reference, tmp_path):
    out, m = _copy(reference, tmp_path)
    (out / "shard-00002.parquet").unlink()
    before = {n: os.stat(out / f"shard-0000{n}.parquet") for n in (0, 1, 3)}
    with pytest.raises(ValueError, match="1 bad shard"):
        validate_dataset_dir(out)
    result = generate(get_preset("debug-fractaldb", SLOW), out)
    assert result.rendered == [2]
    for n, st in before.items():  # untouched: same inode, same mtime
        now = os.stat(out / f"shard-0000{n}.parquet")
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert (out / "manifest.json").read_bytes() == (reference[0] / "manifest.json").read_bytes()


def test_truncated_shard_found_by_verify_and_resume(reference, tmp_path, capsys):
    out, m = _copy(reference, tmp_path)
    with open(out / "shard-00001.parquet", "r+b") as f:
        f.truncate(1000)
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "shard-00001.parquet" in printed and "shard-00000.parquet" not in printed
    result = generate(get_preset("debug-fractaldb", SLOW), out)
    assert result.rendered == [1] and result.manifest["content_sha256"] == m["content_sha256"]
    assert main(["verify", str(out)]) == 0
    # a complete folder is verified and left as it is
    start = time.perf_counter()
    again = generate(get_preset("debug-fractaldb", SLOW), out)
    assert again.rendered == [] and time.perf_counter() - start < 5
    assert "complete and verified" in capsys.readouterr().out


def test_other_config_is_refused(reference, tmp_path):
    out, _ = _copy(reference, tmp_path)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match=r"another config \(data.num_points: 1000000 in the folder, 900000"):
        generate(get_preset("debug-fractaldb", [*SLOW, "data.num_points=900000"]), out)
    with pytest.raises(ValueError, match="synthesis.encoding: 'raw' in the folder, 'png' requested"):
        generate(get_preset("debug-fractaldb", [*SLOW, *PNG]), out)
    assert (out / "manifest.json").read_bytes() == before
    # a folder with foreign files is refused too
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no fdsl data set"):
        generate(get_preset("debug-fractaldb", FAST), tmp_path / "foreign")


def test_read_and_stream_give_the_same_images(reference, ray_local):
    out, _ = reference
    experiment = get_preset("debug-fractaldb", SLOW)
    read = {(r["label"], r["instance"]): r["image"] for r in read_dataset(out, verify=True).take_all()}
    streamed = render_dataset(experiment).take_all()
    assert len(read) == len(streamed) == 512
    for row in streamed:
        assert row["image"].dtype == np.uint8 and row["image"].shape == (64, 64)
        assert np.array_equal(read[(row["label"], row["instance"])], row["image"])
    batch = next(iter(read_dataset(out).iter_batches(batch_size=8, batch_format="numpy")))
    assert batch["image"].shape == (8, 64, 64) and batch["label"].dtype == np.int32
    assert batch["instance"].dtype == np.int32


def test_png_encoding_round_trips(ray_local, tmp_path):
    experiment = get_preset("debug-fractaldb", [*FAST, *PNG])
    result = generate(experiment, tmp_path / "png")
    first = pq.read_table(tmp_path / "png" / "shard-00000.parquet").column("image")[0].as_py()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_dataset(tmp_path / "png").take_all()
    streamed = {(r["label"], r["instance"]): r["image"] for r in render_dataset(experiment).take_all()}
    assert all(np.array_equal(streamed[(r["label"], r["instance"])], r["image"]) for r in rows)
    raw = generate(get_preset("debug-fractaldb", FAST), tmp_path / "raw")
    assert result.manifest["content_sha256"] == raw.manifest["content_sha256"]  # content is encoding-free


def test_missing_folder_and_manifest_are_clear(ray_local, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="other images than experiment"):
        validate_dataset_dir(_make_fast(tmp_path), get_preset("debug-fractaldb", ["data.seed=3"]))


def _make_fast(tmp_path):
    out = tmp_path / "fast"
    generate(get_preset("debug-fractaldb", FAST), out)
    return out


def test_unwritable_location_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"--out: .*/file \(on the way to .*file/data\) is a file, not a"):
        generate(get_preset("debug-fractaldb", FAST), tmp_path / "file" / "data")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a full file system needs root")
def test_full_disk_leaves_no_partial_shard(ray_local, tmp_path):
    with small_disk(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "20k") as disk:
        with pytest.raises(OSError, match="No space left on device.*run the same command to resume"):
            generate(get_preset("debug-fractaldb", FAST), disk / "data", num_cpus=1)
        files = sorted(p.name for p in (disk / "data").iterdir())
        assert not [f for f in files if f.endswith(".tmp")], files
        assert "manifest.json" not in files
        for shard in (disk / "data").glob("shard-*.parquet"):  # whatever has a final name is whole
            assert pq.read_table(shard).num_rows == 16
        verification = verify_dataset(disk / "data")
        assert not verification.complete and verification.bad


def test_cli_generate_job_verify_preview(ray_local, tmp_path, capsys):
    out = tmp_path / "cli"
    # the Ray-job entrypoint in a fresh process: same arguments as `fdsl generate`, its own local Ray
    res = _job("debug-fractaldb", "--out", str(out), "--set", "synthesis.shard_rows=16", "--num-cpus", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "generate: 64 images (4 of 4 shards)" in res.stdout
    assert main(["verify", str(out)]) == 0
    assert main(["preview", str(out), "--out", str(tmp_path / "grid.png"), "--classes", "3"]) == 0
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["generate", "debug-fractaldb", "--out", str(out), "--set", "synthesis.shard_rows=16"]) == 0
    assert "complete and verified" in capsys.readouterr().out
    # user mistakes: exit 2, one line
    assert main(["generate", "debug-fractaldb", "--out", str(out)]) == 2  # other shard_rows
    assert main(["generate", "no-such-preset", "--out", str(tmp_path / "x")]) == 2
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    assert main(["preview", str(out), "--out", str(tmp_path / "g.png"), "--set", "data.seed=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "another config" in err[0] and "Traceback" not in "".join(err)


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fdsl.jobs.generate", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=os.environ.copy())


def test_job_module_user_error():
    res = _job("no-such-preset", "--out", "/tmp/fdsl-never-written")
    assert res.returncode == 2 and "preset: got 'no-such-preset'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
