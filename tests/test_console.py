"""The console a researcher reads: progress lines, one summary, Ray's output in OUT/logs.

The unit tests drive `Progress` and `follow_metrics` directly; the slow ones run the real commands
(a local Ray each, worker groups, DeepSpeed) and count what they print when stdout is not a terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import NOISE, ROOT, gone_within, processes_of, run_fdsl

from fdsl.platform.console import CommandLog, Progress, follow_metrics


def test_progress_lines_are_throttled_and_the_last_printed_once(capsys):
    progress = Progress("job", 100, every_s=3600, terminal=False)
    for done in range(1, 100):
        progress.update(done, "loss 1.0")
    progress.update(50, "forced", force=True)
    progress.update(100, "loss 0.5")
    progress.update(100, "loss 0.5")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("job: step 50/100 (50%), forced, ETA")
    assert lines[1].startswith("job: step 100/100 (100%), loss 0.5, done in")


def test_progress_on_a_terminal_is_a_bar(capsys):
    progress = Progress("job", 10, terminal=True)
    progress.update(4, "x")
    progress.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "4/10" in captured.err and "job" in captured.err


def test_follow_metrics_shows_the_newest_row_and_a_rewritten_file(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    progress = Progress("train", 6, every_s=0, terminal=False)
    with follow_metrics(path, progress, lambda r: (r["step"], f"loss {r['loss']}"), poll_s=0.05):
        for step in range(1, 4):
            with open(path, "a") as f:
                f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
            time.sleep(0.3)
        path.write_text(json.dumps({"step": 1, "loss": 9.0}) + "\n")  # a restarted group's new log
        time.sleep(0.3)
        with open(path, "a") as f:
            f.write(json.dumps({"step": 6, "loss": 0.1}) + '\n{"step": 7, "lo')  # a half-written row
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "train: step 3/6 (50%), loss 0.333" in out
    assert "train: step 1/6 (16%), loss 9.0" in out
    assert out.strip().splitlines()[-1].startswith("train: step 6/6 (100%), loss 0.1, done in")


def test_command_log_leaves_nothing_without_ray(tmp_path):
    """A command that stopped before Ray (bad input) leaves no logs folder behind."""
    log = CommandLog(tmp_path, "fdsl test")
    assert log.close() is None and not (tmp_path / "logs").exists() and not log.tmp.exists()


# --- the real commands ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("console") / "data"
    res = run_fdsl("generate", "debug-fractaldb", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def _shown(res: subprocess.CompletedProcess) -> list[str]:
    return (res.stdout + res.stderr).splitlines()


def _assert_quiet(lines: list[str], limit: int) -> None:
    assert len(lines) <= limit, "\n".join(lines)
    noisy = [line for line in lines if any(n in line for n in NOISE)]
    assert not noisy, "\n".join(noisy)


def _assert_logs(out, worker_text: str) -> None:
    """OUT/logs: fdsl.log, and the local Ray's session logs with the workers' own output. The Ray was
    started by the command's holder while it imported (`fdsl.holder`), joined, and is gone after it."""
    logs = out / "logs"
    text = (logs / "fdsl.log").read_text()
    assert "Started a local Ray instance" in text and "Connecting to existing Ray cluster" in text, text
    sessions = list((logs / "ray").glob("session_*"))
    assert len(sessions) == 1, sessions
    workers = "".join(p.read_text(errors="replace") for p in sessions[0].glob("worker-*"))
    assert worker_text in workers
    assert gone_within(lambda: processes_of(f"/{sessions[0].name}")) == [], "the command's Ray outlived it"


@pytest.mark.slow
def test_generate_prints_its_summary_and_keeps_ray_logs(data):
    out, res = data
    lines = _shown(res)
    _assert_quiet(lines, 3)
    assert lines[-2].startswith("generate: 64 images") and lines[-1] == f"logs: {out / 'logs'}/ (fdsl.log; " \
        "Ray's worker logs in ray/)"
    assert (out / "logs" / "fdsl.log").is_file()


@pytest.mark.slow
def test_pretrain_and_finetune_print_at_most_15_lines(data, tmp_path):
    """The issue's two commands (pre-training on a worker group with DeepSpeed, fine-tuning in local
    mode): progress lines and the summary on the console; Ray Train's, DeepSpeed's and Ray Data's
    lines in OUT/logs."""
    dataset, _ = data
    run, tuned = tmp_path / "run", tmp_path / "tuned"
    res = run_fdsl("pretrain", "debug-vit", "--data", str(dataset), "--out", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _shown(res)
    _assert_quiet(lines, 15)
    assert any(line.startswith("pretrain: step 40/40 (100%)") for line in lines)
    assert lines[-2].startswith("pretrain: 40 steps") and "curves.png" in lines[-2]
    assert lines[-1].startswith(f"logs: {run / 'logs'}/")
    _assert_logs(run, "Setting accelerator to CPU")  # DeepSpeed's notice, kept in the worker logs
    assert (run / "curves.png").stat().st_size > 5000

    # 200 images in local mode, no loader probe: the same console, ~40 s less of worker start-up
    res = run_fdsl("finetune", "debug-finetune", "--weights", str(run), "--dataset", "digits",
                   "--samples-per-class", "20", "--set", "finetune.num_workers=0",
                   "--set", "finetune.loader_probe_images=0", "--out", str(tuned))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _shown(res)
    _assert_quiet(lines, 15)
    assert lines[-2].startswith("finetune: top-1") and "curves.png" in lines[-2]
    assert any(line.startswith("finetune: step") and "val top-1" in line for line in lines)
    _assert_logs(tuned, "")  # the Ray Data tasks' worker logs
    assert (tuned / "curves.png").stat().st_size > 5000 and (tuned / "confusion.png").is_file()


@pytest.mark.drill  # a SIGKILL drill (make test-drills), beside the other killed-worker drill
def test_a_failed_run_shows_its_error_and_the_log(data, tmp_path):
    """A train worker killed with no restarts left: the error and the path of the full log."""
    dataset, _ = data
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fdsl.cli", "pretrain", "debug-vit", "--data",
                             str(dataset), "--out", str(run), "--set", "pretrain.max_failures=0",
                             "--set", "pretrain.max_steps=2000", "--set", "pretrain.use_deepspeed=false",
                             "--set", "pretrain.zero_stage=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=os.environ.copy())
    killed = []

    def kill_when_training():
        deadline = time.time() + 300
        while not killed and proc.poll() is None and time.time() < deadline:
            if (run / "metrics.jsonl").is_file():
                for child in psutil.Process(proc.pid).children(recursive=True):
                    try:
                        if "RayTrainWorker" in " ".join(child.cmdline()):
                            child.kill()
                            killed.append(child.pid)
                            break
                    except psutil.Error:
                        continue
            time.sleep(0.5)

    killer = threading.Thread(target=kill_when_training)
    killer.start()
    out, err = proc.communicate(timeout=600)
    killer.join()
    assert killed and proc.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fdsl pretrain: failed (") and f"full log: {run / 'logs'}/fdsl.log" in last, err
    assert "Traceback" in err and "Error" in err  # the failure itself, not hidden
    assert (run / "logs" / "fdsl.log").is_file() and list((run / "logs" / "ray").glob("session_*/worker-*"))


@pytest.mark.slow
def test_verbose_restores_rays_own_output(tmp_path):
    res = run_fdsl("generate", "debug-fractaldb", "--out", str(tmp_path / "d"), "--verbose")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Started a local Ray instance" in res.stdout + res.stderr
