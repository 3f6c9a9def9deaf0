"""Interruption drills (docs/reliability.md): real `fdsl` processes, real signals, debug size.

Each command runs in a process group of its own, as a terminal runs it; at a chosen moment SIGINT
goes to the whole group (what Ctrl-C sends) or SIGTERM to the command (what `kill PID`, Kubernetes or
a spot preemption sends; a SIGTERM to the whole group also ends the local Ray's own processes, which
block only SIGINT: docs/reliability.md). The contract: the command stops within seconds, prints one
line saying what it kept and the exact command that continues it, exits 130 / 143, and the command it
names finishes the work. Marked `drill` (several minutes): `make test-drills`, which `.ci/run` runs
after `make test`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_disk

from fdsl.platform.train.checkpoints import newest_checkpoint_step

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]

FDSL = str(Path(sys.executable).parent / "fdsl")


def interrupt(argv: list[str], sig: int, ready, timeout: float = 400, **popen) -> tuple[int, str, float]:
    """Run `fdsl argv` (`popen`: cwd, env); once `ready()` holds, send `sig` (SIGINT: to its process
    group, SIGTERM: to the command). Returns (exit code, stderr, seconds from the signal to the exit)."""
    proc = subprocess.Popen([FDSL, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"finished before the signal: {proc.communicate()[1][-2000:]}"
    sent = time.monotonic()
    (os.killpg if sig == signal.SIGINT else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, time.monotonic() - sent


def stopped_line(err: str, command: str, sig: str) -> str:
    """The one line of the contract; nothing else of ours (nor Tune's stop notices) on stderr."""
    lines = [line for line in err.splitlines() if line.startswith("fdsl ")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"fdsl {command}: stopped by {sig}; ") and "continue with: fdsl " in lines[0]
    assert "Traceback" not in err and "Stop signal received" not in err, err[-3000:]
    return lines[0]


def continue_with(line: str, **run) -> subprocess.CompletedProcess:
    """Run the command the line names, exactly (`run`: cwd, env)."""
    argv = shlex.split(line.split("continue with: ", 1)[1])
    assert argv[0] == "fdsl"
    return subprocess.run([FDSL, *argv[1:]], capture_output=True, text=True, timeout=600, **run)


def rows(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_pretrain_sigint_mid_step_and_a_cut_snapshot_then_resume_finishes_every_step(tmp_path):
    """Ray Train workers (debug-vit, 2 workers, checkpoints every 20 steps): Ctrl-C mid-step; the
    snapshot's rewrite is then cut short, as a stop during Ray's in-place write leaves it; the
    printed `--resume` rebuilds it and continues from step 20 to the end, every step logged once."""
    out = tmp_path / "run"
    argv = ["pretrain", "debug-vit", "--data", "stream", "--out", str(out), "--set", "pretrain.max_steps=100"]
    code, err, took = interrupt(argv, signal.SIGINT, lambda: rows(out / "metrics.jsonl") >= 30)
    line = stopped_line(err, "pretrain", "SIGINT")
    assert code == 130 and took < 30, (code, took)
    assert "kept the checkpoint of step" in line and line.endswith("--resume"), line
    snapshot = out / "train" / "checkpoint_manager_snapshot.json"
    snapshot.write_text(snapshot.read_text()[:150])
    done = continue_with(line)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rewritten from the checkpoint folders" in done.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 101))
    resumed = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()
               if '"resume"' in x]
    assert len(resumed) == 1 and resumed[0]["step"] >= 20


def test_local_mode_pretrain_sigterm_then_resume_from_its_checkpoint(tmp_path):
    """A laptop-style run (num_workers=0: the loop in the command's process; its checkpoints are
    fdsl's own, renamed into place whole): SIGTERM mid-step stops it in seconds, the line names the
    newest checkpoint and `--resume`; a checkpoint write that was cut is removed, and the resumed run
    continues from that checkpoint to the end, every step logged once."""
    out = tmp_path / "run"
    argv = ["pretrain", "debug-vit", "--data", "stream", "--out", str(out), "--set", "pretrain.max_steps=150",
            "--set", "pretrain.num_workers=0", "--set", "pretrain.use_deepspeed=false",
            "--set", "pretrain.zero_stage=0", "--set", "pretrain.checkpoint_every=20"]
    code, err, took = interrupt(argv, signal.SIGTERM, lambda: rows(out / "metrics.jsonl") >= 50)
    line = stopped_line(err, "pretrain", "SIGTERM")
    assert code == 143 and took < 30, (code, took, line)
    kept = int(line.split("kept the checkpoint of step ", 1)[1].split()[0])
    assert kept >= 40 and line.endswith("--resume"), line
    (out / "train" / f".checkpoint_{kept + 20:09d}.staging").mkdir()  # as a stop mid-write leaves it
    done = continue_with(line)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "a checkpoint write that was cut" in done.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 151))
    resumed = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"resume"' in x]
    assert [r["step"] for r in resumed] == [kept]
    assert sorted(p.name for p in (out / "train").glob("*checkpoint_0*")) == [
        "checkpoint_000000120", "checkpoint_000000140"]  # keep_checkpoints=2, no staging left


def test_sweep_sigint_mid_trial_writes_no_report_and_resume_finishes(tmp_path):
    """Ctrl-C while a trial runs: Tune saves its state, no report is written (a stopped sweep never
    looks final), exit 130; the printed `--resume` finishes every trial and writes the report. Then
    (root only) the report is written again on a full disk (`report_on_a_full_disk`)."""
    out = tmp_path / "sweep"
    code, err, took = interrupt(["sweep", "debug-variety", "--out", str(out)], signal.SIGINT,
                                lambda: any(out.glob("trials/*/trial.json")))
    line = stopped_line(err, "sweep", "SIGINT")
    assert code == 130 and took < 60 and line.endswith("--resume"), (code, took, line)
    assert not (out / "report.html").exists()
    done = continue_with(line)
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = [json.loads(p.read_text())["status"] for p in out.glob("trials/*/trial.json")]
    assert (out / "report.html").is_file() and statuses == ["done"] * 4, statuses
    if os.geteuid() == 0:
        report_on_a_full_disk(out, tmp_path / "disk")


def report_on_a_full_disk(sweep: Path, mount: Path) -> None:
    """`fdsl report` on a copy of the finished sweep on a disk then filled up: exit 2, one line
    naming the file it could not write, and the report that was there is kept byte for byte."""
    size = sum(p.stat().st_size for p in sweep.rglob("*") if p.is_file())
    with small_disk(mount, f"{2 * size // 2**20 + 8}m") as disk:
        copy = disk / "sweep"
        shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("logs"))
        before = (copy / "report.html").read_bytes()
        stat = os.statvfs(disk)
        (disk / "filler").write_bytes(bytes(stat.f_bavail * stat.f_frsize - 8192))
        res = subprocess.run([FDSL, "report", str(copy)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
        assert res.stderr.startswith(f"fdsl report: error: No space left on device writing {copy}/"), \
            res.stderr
        assert (copy / "report.html").read_bytes() == before


def test_generate_sigterm_then_the_same_command_gives_the_same_data_set(tmp_path):
    """SIGTERM once the first shard is on disk; the same command finishes the folder, and its content
    hash is the one an uninterrupted run gives."""
    args = ["--set", "data.num_classes=32", "--set", "synthesis.shard_rows=16"]
    out = tmp_path / "data"
    code, err, took = interrupt(["generate", "debug-fractaldb", "--out", str(out), *args], signal.SIGTERM,
                                lambda: any(out.glob("shard-*.parquet")))
    line = stopped_line(err, "generate", "SIGTERM")
    assert code == 143 and took < 30 and not (out / "manifest.json").exists(), (code, took)
    assert continue_with(line).returncode == 0
    whole = subprocess.run([FDSL, "generate", "debug-fractaldb", "--out", str(tmp_path / "whole"), *args],
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    digest = [json.loads((p / "manifest.json").read_text())["content_sha256"]
              for p in (out, tmp_path / "whole")]
    assert digest[0] == digest[1]


RESUMED = {  # a run to stop and resume: (argv, rows of metrics.jsonl before the signal)
    "finetune": (["finetune", "debug-finetune", "--weights", "scratch", "--set", "finetune.epochs=8"], 3),
    "ssl": (["ssl", "debug-dino", "--set", "ssl.epochs=4", "--set", "ssl.num_workers=0",
             "--set", "ssl.checkpoint_every=1"], 30),
}


@pytest.mark.parametrize("command,sig", [("finetune", signal.SIGINT), ("ssl", signal.SIGTERM)])
def test_finetune_and_ssl_stop_then_resume_from_their_checkpoint(tmp_path, command, sig):
    """Fine-tuning (2 Ray Train workers, a checkpoint at every evaluation) and SSL (local mode, a
    checkpoint every epoch) stopped mid-run: nothing half-written where the results go, the line
    names the newest checkpoint and `--resume`, which finishes the run, every row logged once."""
    out = tmp_path / "run"
    argv, before = RESUMED[command]
    code, err, took = interrupt([*argv, "--out", str(out)], sig,
                                lambda: rows(out / "metrics.jsonl") >= before)
    line = stopped_line(err, command, signal.Signals(sig).name)
    assert code == 128 + sig and took < 30 and line.endswith("--resume"), (code, took, line)
    assert not any((out / name).exists() for name in ("metrics.json", "model.safetensors"))
    kept = int(line.split("kept the checkpoint of step ", 1)[1].split()[0])
    done = continue_with(line)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("resume", kept)]
    assert logged == sorted(set(logged)) and logged[-1] == events[0]["total_steps"], logged
    assert (out / "model.safetensors").is_file()
    if command == "finetune":  # a row per epoch, in metrics.jsonl and in the summary's curve
        curve = json.loads((out / "metrics.json").read_text())["curve"]
        assert len(logged) == 8 and [r["epoch"] for r in curve] == list(range(1, 9))
    else:  # a row per step
        assert logged == list(range(1, len(logged) + 1))


def test_a_signal_while_ray_starts_stops_the_command(tmp_path):
    """Ctrl-C before the run got going (Ray still starting): exit 130, nothing written where the
    run goes."""
    out = tmp_path / "run"
    start = time.monotonic()
    code, err, _ = interrupt(["pretrain", "debug-vit", "--data", "stream", "--out", str(out)], signal.SIGINT,
                             lambda: time.monotonic() - start > 3)
    stopped_line(err, "pretrain", "SIGINT")
    assert code == 130 and not (out / "experiment.json").exists()


def test_quickstart_sigint_mid_pretraining_then_the_same_command_continues_it(tmp_path):
    """Ctrl-C once the quickstart's pre-training has a checkpoint: exit 130, and the line names the
    same command, which verifies the data set, continues the pre-training from that checkpoint (one
    `resume` event) and finishes every step: the whole of `make quickstart`, stopped and continued.
    Tracking on, as `make quickstart` runs it: every run lands in the default MLflow store
    (runs/mlflow.db under the working directory), the stopped ones continued, not logged twice."""
    out = tmp_path / "qs"
    where = {"cwd": tmp_path, "env": {k: v for k, v in os.environ.items() if k != "FDSL_TRACKING"}}
    # a checkpoint Ray's snapshot lists: a folder alone may be cut short, and the run then restarts at 0
    code, err, took = interrupt(["quickstart", "--out", str(out)], signal.SIGINT,
                                lambda: newest_checkpoint_step(out / "pretrain") is not None, timeout=900,
                                **where)
    line = stopped_line(err, "quickstart", "SIGINT")
    assert code == 130 and took < 30 and line.endswith(f"continue with: fdsl quickstart --out {out}"), line
    done = continue_with(line, **where)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(x) for x in (out / "pretrain" / "events.jsonl").read_text().splitlines()]
    resumed = [e["step"] for e in events if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0] >= 500 and events[-1]["event"] == "done", events
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]][:3] == ["generate", "preview", "pretrain"]
    assert len(summary["fdsl_top1"]) == 2 and (out / "sweep" / "report.html").is_file()
    assert "MLflow: every run above is in sqlite:///" in done.stdout, done.stdout[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fdsl").experiment_id])
    kinds = sorted(r.data.tags["fdsl.kind"] for r in runs)
    assert kinds == ["finetune"] * 4 + ["pretrain", "quickstart", "sweep"] + ["trial"] * 4, kinds
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_kind = {r.data.tags["fdsl.kind"]: r for r in runs}
    parent = by_kind["quickstart"].info.run_id
    assert all(r.data.tags.get("mlflow.parentRunId") == parent for r in runs
               if r.data.tags["fdsl.kind"] in ("pretrain", "finetune", "sweep"))
    steps = sorted(m.step for m in client.get_metric_history(by_kind["pretrain"].info.run_id, "loss"))
    assert steps == list(range(1, 3001)), (len(steps), steps[:3], steps[-3:])  # every step once, resumed
    assert by_kind["quickstart"].data.metrics["effect"] == pytest.approx(summary["effect"])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_full_disk_is_one_line_naming_the_path(tmp_path):
    """A checkpoint that does not fit (a worker's write), and an export that does not fit (the
    driver's): exit 2, one line naming the path and what to do, no traceback; the export leaves
    nothing under its final name."""
    with small_disk(tmp_path / "disk", "2m") as disk:
        run = disk / "run"
        argv = ["pretrain", "debug-vit", "--data", "stream", "--out", str(run),
                "--set", "pretrain.max_failures=0"]
        res = subprocess.run([FDSL, *argv], capture_output=True, text=True, timeout=600)
        lines = [line for line in res.stderr.splitlines() if line.startswith("fdsl pretrain")]
        assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
        assert "No space left on device writing" in lines[0] and str(disk) in lines[0], lines[0]
        assert "Traceback" not in res.stderr
    finished = tmp_path / "finished"
    argv = ["finetune", "debug-finetune", "--weights", "scratch", "--out", str(finished)]
    done = subprocess.run([FDSL, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with small_disk(tmp_path / "tiny", "64k") as tiny:
        res = subprocess.run([FDSL, "export", str(finished), "--out", str(tiny / "hub")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
        assert "No space left on device" in res.stderr and "Traceback" not in res.stderr
        assert not (tiny / "hub" / "model.safetensors").exists()
