"""Pre-training on a real local Ray (2 CPUs, started once for this module) with real DeepSpeed (gloo).

debug-vit: timm's test_vit at 32px on the 8 x 8 debug FractalDB, 2 workers. Covers learning (ZeRO-3,
fp32), export to timm against DeepSpeed's own consolidation, resume of a finished run, recovery from a
killed worker (ZeRO-2, bf16, full recipe, streamed data), and the user errors that must stop a run
before any worker starts. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from fdsl.cli import main
from fdsl.experiment import load_run_experiment
from fdsl.platform.data.synthesis import generate
from fdsl.platform.train.checkpoints import CKPT_TAG
from fdsl.platform.train.pretrain import pretrain
from fdsl.platform.train.run import EVENTS_FILE, read_metrics
from fdsl.platform.train.streams import open_source, training_dataset
from fdsl.platform.train.weights import load_pretrained
from fdsl.presets import get_preset

pytestmark = pytest.mark.slow  # Ray and real training runs

# No stochastic regularisation: a clear learning signal within a few dozen steps.
EASY = ["pretrain.mixup=0", "pretrain.cutmix=0", "pretrain.randaugment=", "pretrain.random_erasing=0",
        "pretrain.label_smoothing=0", "pretrain.crop_scale_min=0.5"]


@pytest.fixture(scope="module")
def data(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain-data") / "debug"
    generate(get_preset("debug-fractaldb"), out)
    return out


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """debug-vit with EASY augmentation and ZeRO-3 (parameters partitioned), 48 steps, checkpoints
    every 16."""
    out = tmp_path_factory.mktemp("pretrain-run") / "run"
    experiment = get_preset("debug-vit", [*EASY, "pretrain.zero_stage=3", "pretrain.max_steps=48",
                                          "pretrain.checkpoint_every=16"])
    start = time.perf_counter()
    summary = pretrain(experiment, str(data), out)
    return out, summary, time.perf_counter() - start


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / EVENTS_FILE).read_text().splitlines()]


def _ray_checkpoints(run_dir) -> list:
    return sorted(p for p in (run_dir / "train").glob("checkpoint_*") if p.is_dir())


def test_loss_decreases(trained):
    out, summary, seconds = trained
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 49))
    first = sum(r["loss"] for r in rows[:8]) / 8
    last = sum(r["loss"] for r in rows[-8:]) / 8
    assert last < first - 0.05, (first, last)
    assert summary["steps"] == 48 and summary["images_per_s"] > 0
    assert {"epoch", "lr", "images_per_s", "data_wait_s", "step_s"} <= set(rows[0])
    lrs = [r["lr"] for r in rows]  # the learning rate each step used: warm-up, then cosine
    warmup = get_preset("debug-vit").pretrain.schedule(64)["warmup_steps"]
    assert lrs[0] == pytest.approx(1e-6) and lrs[:warmup + 1] == sorted(lrs[:warmup + 1])
    assert max(lrs) == pytest.approx(2e-3, rel=0.03) and lrs[warmup:] == sorted(lrs[warmup:], reverse=True)
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)
    assert [c.name for c in _ray_checkpoints(out)] == ["checkpoint_000000032", "checkpoint_000000048"]
    print(f"debug-vit 48 steps: {seconds:.0f} s, loss {first:.3f} -> {last:.3f}")


def test_exported_safetensors_reproduce_the_logits(trained):
    import timm

    out, _, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("architecture", "img_size", "patch_size", "num_classes")} == \
        {"architecture": "test_vit", "img_size": 32, "patch_size": 4, "num_classes": 8}
    model = load_pretrained(out).eval()

    # The reference: DeepSpeed's own offline consolidation of the last checkpoint's ZeRO-3 shards.
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(_ray_checkpoints(out)[-1]), tag=CKPT_TAG)
    reference = timm.create_model("test_vit", img_size=32, patch_size=4, num_classes=8)
    reference.load_state_dict(state)
    reference.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-6)

    # the DESIGN.md contract call, and a fresh head for fine-tuning
    direct = timm.create_model("test_vit", pretrained=True, num_classes=8, img_size=32, patch_size=4,
                               pretrained_cfg_overlay=dict(file=str(out / "model.safetensors"),
                                                           num_classes=8)).eval()
    with torch.no_grad():
        torch.testing.assert_close(direct(x), reference(x), rtol=0, atol=1e-6)
    finetune = load_pretrained(out, num_classes=10)
    assert finetune.head.out_features == 10
    torch.testing.assert_close(finetune.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("size", [[], ["pretrain.min_pass_images=1"]], ids=["small-set", "large-set"])
def test_same_config_same_losses_on_one_worker(data, tmp_path, size):
    """Every draw is seeded: a small set's stream row by row, a large set's shuffle and augmentation per
    pass (here 3 passes of 2 steps), Mixup/CutMix on the worker. Two runs of the same config see the
    same images and log the same losses. In local mode with the plain engine (one process, as one
    worker: a test below checks that local mode and a worker log the same losses), which keeps
    this test at seconds."""
    experiment = get_preset("debug-vit", ["pretrain.num_workers=0", "pretrain.max_steps=6",
                                          "pretrain.use_deepspeed=false", "pretrain.zero_stage=0", *size])
    runs = []
    for name in ("a", "b"):
        pretrain(experiment, str(data), tmp_path / name)
        runs.append([row["loss"] for row in read_metrics(tmp_path / name)])
    assert len(runs[0]) == 6 and len(set(runs[0])) > 1
    assert runs[0] == runs[1]


def test_large_set_passes_are_seeded_and_differ(data):
    """Read anew every pass, a large set is shuffled and augmented from (seed, pass): the same config
    gives the same passes, and one pass differs from the next."""
    experiment = get_preset("debug-vit", ["pretrain.min_pass_images=1"])

    def two_passes():
        ds = training_dataset(open_source(experiment, str(data)), experiment.pretrain, 64)
        ds.context.execution_options.preserve_order = True
        return [ds.take_all() for _ in range(2)]

    def images(rows):
        return np.stack([r["image"] for r in rows])

    first, again = two_passes(), two_passes()
    labels = [sorted(r["label"] for r in rows) for rows in first]
    assert len(first[0]) == 64 and labels[0] == labels[1]  # each pass: the whole set once
    assert np.array_equal(images(first[0]), images(again[0]))
    assert np.array_equal(images(first[1]), images(again[1]))
    assert not np.array_equal(images(first[0]), images(first[1]))


def test_resume_continues_at_its_step(trained, data):
    out, _, _ = trained
    experiment = load_run_experiment(out, "debug-vit", ["pretrain.max_steps=56"])
    summary = pretrain(experiment, str(data), out, resume=True)
    assert summary["steps"] == 56
    resumed = [e for e in _events(out) if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 48
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 57))
    assert _ray_checkpoints(out)[-1].name == "checkpoint_000000056"


def _kill_a_train_worker(run_dir, killed: list, stop: threading.Event) -> None:
    """SIGKILL one Ray Train worker of this test process once Ray Train has registered checkpoint
    10 (reports reach the controller asynchronously, every ~2 s)."""
    me = psutil.Process()
    snapshot = run_dir / "train" / "checkpoint_manager_snapshot.json"
    while not stop.is_set() and not killed:
        registered = snapshot.exists() and "checkpoint_000000010" in snapshot.read_text()
        rows = read_metrics(run_dir) if registered else []
        if rows:
            for proc in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "RayTrainWorker" in " ".join(proc.cmdline()):
                        proc.kill()
                        killed.append((proc.pid, rows[-1]["step"]))
                        return
        time.sleep(0.05)


@pytest.mark.drill  # a kill-and-recover drill: make test-drills (docs/reliability.md)
def test_killed_worker_recovers_from_last_checkpoint(ray_local, tmp_path):
    """bf16 + ZeRO-2, the full DeiT recipe, streamed data: a worker dies after checkpoint 10; the
    run restarts from the last registered checkpoint and finishes with every step logged once."""
    out = tmp_path / "run"
    experiment = get_preset("debug-vit", ["pretrain.precision=bf16", "pretrain.zero_stage=2",
                                          "pretrain.max_steps=60", "pretrain.checkpoint_every=10"])
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_a_train_worker, args=(out, killed, stop))
    killer.start()
    try:
        summary = pretrain(experiment, "stream", out)
    finally:
        stop.set()
        killer.join()
    assert killed, "no train worker was seen running"
    assert killed[0][1] < 60, "the run ended before the kill"
    assert summary["steps"] == 60
    resumed = [e for e in _events(out) if e["event"] == "resume"]
    assert resumed, "the run did not restart from a checkpoint"
    assert resumed[0]["step"] % 10 == 0 and 10 <= resumed[0]["step"] <= killed[0][1]
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 61))
    assert (out / "model.safetensors").exists()


# --- user errors: exit 2, one line, before any worker starts (no run folder is created) -----------
@pytest.mark.parametrize(("args", "message"), [
    (["--data", "{missing}"], "does not exist"),
    (["--data", "{data}", "--set", "data.num_points=6000"], "holds other images"),
    (["--data", "{data}", "--set", "pretrain.global_batch_size=33"], "multiple of num_workers"),
    (["--data", "{data}", "--set", "pretrain.model=vit_tiny_patch16_24"], "vit_tiny_patch16_224"),
    (["--data", "{data}", "--set", "pretrain.precision=fp16"], "fp16"),
    (["--data", "{data}", "--set", "pretrain.global_batch_size=8192"], "images per pass"),
    (["--data", "{data}", "--resume"], "no run to resume"),
])
def test_bad_input_fails_before_any_worker(data, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    args = [a.format(data=data, missing=tmp_path / "missing") for a in args]
    start = time.perf_counter()
    assert main(["pretrain", "debug-vit", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err  # may hold log lines of this module's Ray too
    lines = [line for line in err.splitlines() if line.startswith("fdsl pretrain")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not out.exists()
    assert time.perf_counter() - start < 30


def test_local_ray_too_small_is_refused_before_any_worker(tmp_path):
    """A local Ray that fdsl starts never grows: a run it cannot hold exits 2 instead of waiting,
    before it runs anything on that Ray."""
    from conftest import run_fdsl

    out = tmp_path / "run"
    res = run_fdsl("pretrain", "debug-vit", "--data", "stream", "--out", str(out),
                   "--set", "pretrain.cpus_per_worker=64")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith("fdsl pretrain")]
    assert len(lines) == 1 and "pretrain.num_workers: 2 workers x 64.0 CPUs" in lines[0], res.stderr[-2000:]
    assert "local Ray has" in lines[0] and not out.exists()
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_tampered_shard_and_used_run_folder_are_refused(data, tmp_path, capsys):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    shard = next(copy.glob("shard-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(["pretrain", "debug-vit", "--data", str(copy), "--out", str(tmp_path / "a")]) == 2
    assert "bad shard" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "experiment.json").write_text("{}")
    assert main(["pretrain", "debug-vit", "--data", str(data), "--out", str(tmp_path / "b")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_late_failure_does_not_block_the_folder(ray_local, tmp_path):
    """A run that fails inside its workers (after experiment.json was written) and left no checkpoint
    is set aside, so the corrected command can use the same --out; the error keeps its type."""
    from fdsl.platform.train.config import PretrainConfig
    from fdsl.platform.train.plans import Memory, PretrainPlan
    from fdsl.platform.train.pretrain import train_func
    from fdsl.platform.train.run import fit, refuse_used_folder, write_experiment

    out = tmp_path / "run"
    experiment = get_preset("debug-vit")
    write_experiment(out, experiment)
    cfg = PretrainConfig(num_workers=1, cpus_per_worker=0.5, max_failures=0, model="no_such_model")
    plan = PretrainPlan(cfg=cfg, num_classes=8, num_images=64, run_dir=None, memory=Memory({}, (32,)))
    with pytest.raises(Exception, match="no_such_model"):
        fit(train_func, plan, cfg, out, {})  # fails in the worker, building the model
    assert refuse_used_folder(out) == out.absolute()  # usable again
    (aside,) = out.glob("failed-*")
    assert (aside / "experiment.json").is_file() and (aside / "train").is_dir()


def test_plain_torch_engine_resumes_and_local_mode_matches_a_worker(data, tmp_path, capsys):
    """use_deepspeed=false: the plain torch engine. A one-worker run checkpoints (one tensor file,
    loaded with weights_only) and a resumed longer run continues from it; the same config in Ray
    Train's local mode (num_workers=0: the loop in this process) logs the same losses step for step,
    writes its own checkpoints (renamed into place whole, listed in a snapshot of Ray's schema) and
    resumes from them."""
    plain = [*EASY, "pretrain.use_deepspeed=false", "pretrain.zero_stage=0", "pretrain.threads_per_worker=1",
             "pretrain.checkpoint_every=4", "pretrain.cpus_per_worker=0.5"]
    worker = get_preset("debug-vit", [*plain, "pretrain.num_workers=1", "pretrain.max_steps=8"])
    pretrain(worker, str(data), tmp_path / "worker")
    checkpoints = _ray_checkpoints(tmp_path / "worker")
    assert [c.name for c in checkpoints] == ["checkpoint_000000004", "checkpoint_000000008"]
    assert (checkpoints[-1] / CKPT_TAG / "torch_state.pt").is_file()
    longer = get_preset("debug-vit", [*plain, "pretrain.num_workers=1", "pretrain.max_steps=12"])
    pretrain(longer, str(data), tmp_path / "worker", resume=True)
    assert [r["step"] for r in read_metrics(tmp_path / "worker")] == list(range(1, 13))
    resumed = [e for e in _events(tmp_path / "worker") if e["event"] == "resume"]
    assert [e["step"] for e in resumed] == [8]

    local = get_preset("debug-vit", [*plain, "pretrain.num_workers=0", "pretrain.max_steps=8"])
    summary = pretrain(local, str(data), tmp_path / "local")
    assert [r["loss"] for r in read_metrics(tmp_path / "local")] == \
        [r["loss"] for r in read_metrics(tmp_path / "worker")][:8]
    assert [c.name for c in _ray_checkpoints(tmp_path / "local")] == ["checkpoint_000000004"]  # not the end's
    assert load_pretrained(summary["model"]).get_classifier().out_features == 8
    longer_local = get_preset("debug-vit", [*plain, "pretrain.num_workers=0", "pretrain.max_steps=12"])
    pretrain(longer_local, str(data), tmp_path / "local", resume=True)
    assert [r["step"] for r in read_metrics(tmp_path / "local")] == list(range(1, 13))
    assert [e["step"] for e in _events(tmp_path / "local") if e["event"] == "resume"] == [4]
    assert [c.name for c in _ray_checkpoints(tmp_path / "local")] == ["checkpoint_000000004",
                                                                      "checkpoint_000000008"]


def test_placement_groups_are_released_and_watched(trained):
    """After a worker-group run no placement group is left, and Ray Train's PlacementGroupCleaner
    could ask the State API about its controller (it warns every second when it cannot, e.g.
    without a dashboard: then it could not remove a dead run's group either); no preemption
    watcher ran."""
    import ray

    states = [pg["state"] for pg in ray.util.placement_group_table().values()]
    assert states and set(states) == {"REMOVED"}, states
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    errs = {p: p.read_text(errors="replace") for p in logs.glob("worker-*.err")}
    cleaner = [text for text in errs.values() if "PlacementGroupCleaner" in text]
    assert cleaner  # it ran
    assert not [text for text in cleaner if "Failed to query Ray Train Controller" in text]
    # a local Ray runs no preemption watcher (connect.LOCAL_TRAIN_ENV): nothing drains its node
    assert not [text for text in errs.values() if ":actor_name:PreemptionWatcher" in text]


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("craft", ["pickle", "not-torch", "client-state", "snapshot"])
def test_crafted_checkpoint_is_refused_before_any_worker(trained, data, tmp_path, capsys, craft):
    """`--resume` of a folder whose checkpoint would run code when DeepSpeed loads it (pickle, with
    weights_only=False), or whose files are not torch checkpoints, or whose client state is damaged:
    one line, exit 2, nothing ran, no worker started."""
    import shutil

    run, marker = tmp_path / "run", tmp_path / "ran"
    shutil.copytree(trained[0], run)
    state = sorted(run.glob("train/checkpoint_*/state"))[-1]
    if craft == "pickle":
        torch.save({"x": _RunsAShellCommand(marker)}, next(state.glob("zero_pp_rank_0_*optim_states.pt")))
    elif craft == "not-torch":
        next(state.glob("*model_states.pt")).write_bytes(b"\x80\x04K\x01.")  # a bare pickle
    elif craft == "client-state":
        path = next(state.glob("*model_states.pt"))
        states = torch.load(path, weights_only=True)
        torch.save({**states, "scheduler": [1, 2]}, path)
    else:  # Ray's snapshot pointed at a folder outside the run, which the scan never looked at
        snapshot = run / "train" / "checkpoint_manager_snapshot.json"
        snapshot.write_text(snapshot.read_text().replace(state.parent.name, "../../elsewhere"))
    start = time.perf_counter()
    assert main(["pretrain", "debug-vit", "--data", str(data), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fdsl pretrain")]
    expected = {"pickle": "names 'posix.system'", "not-torch": "is not a checkpoint file",
                "client-state": "client state is damaged (scheduler is not dict)",
                "snapshot": "names checkpoint '../../elsewhere', not a checkpoint folder"}[craft]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err
    assert not marker.exists() and time.perf_counter() - start < 30


def test_a_cut_checkpoint_write_is_set_aside_and_the_snapshot_rebuilt(trained, tmp_path):
    """Ctrl-C, a kill or a full disk during a checkpoint write: a folder Ray's snapshot never listed
    is set aside; a snapshot whose rewrite was cut is written again from the complete folders, the
    newest one set aside when its files are cut short. The run then resumes from the newest complete
    checkpoint (the drill in test_drills.py resumes one)."""
    import shutil

    from fdsl.platform.train.checkpoints import (
        SNAPSHOT_FILE,
        check_checkpoints,
        newest_checkpoint_step,
        repair_checkpoints,
    )

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    train = run / "train"
    previous, newest = _ray_checkpoints(run)[-2:]  # 32 and 48, or 48 and 56 after the resume test
    step = int(newest.name.rpartition("_")[2])
    assert newest_checkpoint_step(run) == step
    partial = train / f"checkpoint_{step + 16:09d}"  # a copy cut short, never listed
    shutil.copytree(newest, partial)
    cut = next(partial.rglob("*model_states.pt"))
    cut.write_bytes(cut.read_bytes()[:100])
    notes = repair_checkpoints(run, world=2)
    assert len(notes) == 1 and partial.name in notes[0] and "never listed" in notes[0]
    assert not partial.exists() and (train / "torn" / partial.name).is_dir()
    assert repair_checkpoints(run, world=2) == []  # nothing left to repair

    snapshot = train / SNAPSHOT_FILE  # now the snapshot's rewrite and the newest copy were both cut
    snapshot.write_text(snapshot.read_text()[:200])
    (newest / "rng-rank1.pt").unlink()
    notes = repair_checkpoints(run, world=2)
    assert "rng-rank1.pt is missing" in notes[0] and "rewritten" in notes[1], notes
    assert newest_checkpoint_step(run) == int(previous.name.rpartition("_")[2])
    assert _ray_checkpoints(run) == [previous]
    assert check_checkpoints(run) > 0  # what is left passes the resume's checks
    listed = json.loads(snapshot.read_text())
    assert listed["latest_checkpoint_result"]["checkpoint_dir_name"] == previous.name
    assert listed["current_report_index"] == 1


def test_a_stop_before_the_first_snapshot_keeps_the_run_for_resume(trained, tmp_path):
    """Stopped after Ray copied a checkpoint folder but before its snapshot listed it (what a
    Ctrl-C right at the first checkpoint leaves): the run stays in its folder (a failed fit keeps it),
    so the stop's line says `--resume` (which rebuilds the snapshot from the folder), and a quickstart
    continues it instead of clearing it. Without a checkpoint folder the folder is free again."""
    import shutil

    from fdsl.platform.train.checkpoints import SNAPSHOT_FILE, newest_checkpoint_step, repair_checkpoints
    from fdsl.platform.train.run import can_resume
    from fdsl.quickstart import _resumable
    from fdsl.resume import kept_and_next

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    newest = _ray_checkpoints(run)[-1]
    (run / "train" / SNAPSHOT_FILE).unlink()
    assert newest_checkpoint_step(run) is None and can_resume(run)
    kept, resume = kept_and_next("pretrain", run)
    assert resume and "may have cut short" in kept and str(run) in kept, kept
    assert _resumable(run) and run.is_dir()  # kept, not cleared
    notes = repair_checkpoints(run, world=2)
    assert "rewritten" in notes[-1] and newest_checkpoint_step(run) == int(newest.name.rpartition("_")[2])
    assert kept_and_next("pretrain", run)[0].startswith("kept the checkpoint of step")
    shutil.rmtree(run / "train")
    kept, resume = kept_and_next("pretrain", run)
    assert not resume and kept == "no checkpoint was written yet (the folder is free again)"
    assert not _resumable(run) and not run.exists()  # cleared for a run from step 0
