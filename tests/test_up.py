"""`fdsl up` / `fdsl down`: a held local Ray and a warm process that runs the commands (fdsl/up.py).

Each test has a state folder of its own (FDSL_UP_DIR), so a user's `fdsl up` is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, processes_of

from fdsl import up

FINETUNE = ["finetune", "laptop-visualatom", "--weights", "scratch", "--dataset", "digits",
            "--samples-per-class", "10", "--set", "finetune.epochs=10"]


def fdsl(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fdsl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def up_env(tmp_path):
    env = {**os.environ, "FDSL_UP_DIR": str(tmp_path / "up")}
    yield env
    fdsl(env, "down")  # whatever a test left running


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()


def children_of(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def learned(run: Path) -> list:
    """What a fine-tuning learned, without its timings: each evaluation's losses and top-1, and the
    final confusion matrix's bytes."""
    curve = json.loads((run / "metrics.json").read_text())["curve"]
    keys = ("step", "finetune_top1", "finetune_loss", "train_loss")
    confusion = hashlib.sha256((run / "confusion.npy").read_bytes()).hexdigest()
    return [[row[k] for k in keys] for row in curve] + [confusion]


def test_down_and_commands_without_up_ignore_a_stale_state_file(tmp_path):
    """A state file whose PID is not a warm process (a crash, a reboot) is ignored: `fdsl down`
    touches nothing (the PID is this test's own), a command neither forwards nor joins."""
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "up.json").write_text(json.dumps({"pid": os.getpid(), "socket": str(folder / "warm.sock")}))
    env = {**os.environ, "FDSL_UP_DIR": str(folder)}
    res = fdsl(env, "down")
    assert res.returncode == 0 and res.stdout.strip() == "fdsl down: no `fdsl up` runs", res.stderr
    assert not (folder / "up.json").exists()
    os.environ["FDSL_UP_DIR"] = str(folder)
    try:
        (folder / "up.json").write_text(json.dumps({"pid": os.getpid(), "socket": str(folder / "warm.sock")}))
        assert up.read_state() is None and up.attached() is None
        assert up.forward(["finetune", "laptop-visualatom", "--weights", "scratch"]) is None  # runs here
    finally:
        del os.environ["FDSL_UP_DIR"]


@pytest.mark.slow
def test_up_runs_commands_warm_and_down_stops_only_its_own_ray(up_env, tmp_path, ray_local):
    res = fdsl(up_env, "up", "--num-cpus", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("fdsl up: a local Ray (2 CPUs, dashboard http://127.0.0.1:"), res.stdout
    state = json.loads((Path(up_env["FDSL_UP_DIR"]) / "up.json").read_text())
    assert alive(state["pid"]) and alive(state["holder_pid"])
    session = str(Path(state["ray_logs"]).parent)
    assert processes_of(session), "the held Ray's processes name its session folder"
    again = fdsl(up_env, "up")
    assert again.returncode == 0 and "already up" in again.stdout and str(state["pid"]) in again.stdout

    # a run through the warm process: attached to the held Ray, the same bytes as a run of its own
    warm = fdsl(up_env, *FINETUNE, "--out", str(tmp_path / "warm"))
    assert warm.returncode == 0, warm.stderr
    log = (tmp_path / "warm" / "logs" / "fdsl.log").read_text()
    assert "(run by `fdsl up`)" in log.splitlines()[0]
    assert f"Connecting to existing Ray cluster at address: {state['gcs_address']}" in log
    assert "finetune: top-1" in warm.stdout and warm.stderr.count("\n") <= 1, warm.stderr
    own = fdsl({**up_env, "FDSL_UP": "0"}, *FINETUNE, "--out", str(tmp_path / "own"))  # a process of its own
    assert own.returncode == 0, own.stderr
    assert "(run by `fdsl up`)" not in (tmp_path / "own" / "logs" / "fdsl.log").read_text()
    assert learned(tmp_path / "warm") == learned(tmp_path / "own")

    # a user's mistake: one line and exit 2, through the warm process too
    bad = fdsl(up_env, "finetune", "laptop-visualatom", "--weights", str(tmp_path / "missing"),
               "--dataset", "digits", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr

    down = fdsl(up_env, "down")
    assert down.returncode == 0 and f"pid {state['pid']}" in down.stdout, down.stderr
    deadline = time.monotonic() + 30
    while (alive(state["pid"]) or alive(state["holder_pid"]) or processes_of(session)) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(state["pid"]) and not alive(state["holder_pid"])
    assert processes_of(session) == [], "the held Ray's raylet, GCS and agents stop with it"
    assert not (Path(up_env["FDSL_UP_DIR"]) / "up.json").exists()

    import ray  # the tests' own Ray (ray_local) is not `fdsl up`'s: it still runs tasks

    assert ray.get(ray.remote(lambda: 42).remote()) == 42


@pytest.mark.drill
@pytest.mark.timeout(600)
def test_ctrl_c_reaches_a_command_of_the_warm_process_and_it_resumes(up_env, tmp_path):
    """Ctrl-C on the client stops the command the warm process runs as on a command of its own
    (exit 130, kept and resumable); the warm process serves the next command; a client killed
    outright takes its command with it (SIGTERM), before it finishes."""
    assert fdsl(up_env, "up", "--num-cpus", "2").returncode == 0
    out = tmp_path / "pre"
    args = [sys.executable, "-m", "fdsl.cli", "pretrain", "laptop-visualatom", "--data", "stream",
            "--out", str(out), "--set", "pretrain.max_steps=300", "--set", "pretrain.checkpoint_every=20"]
    client = subprocess.Popen(args, cwd=ROOT, env=up_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 30):
        time.sleep(0.5)
    client.send_signal(signal.SIGINT)
    stdout, stderr = client.communicate(timeout=120)
    assert client.returncode == 130, stderr
    assert "--resume" in stderr + stdout
    resumed = fdsl(up_env, *args[3:], "--resume", timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-1] == 300

    killed_out = tmp_path / "killed"
    killed = subprocess.Popen([*args[:8], str(killed_out), *args[9:]], cwd=ROOT, env=up_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed_out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    state = json.loads((Path(up_env["FDSL_UP_DIR"]) / "up.json").read_text())
    assert children_of(state["pid"]) - {state["holder_pid"]}, "a child of the warm process runs the command"
    killed.kill()
    deadline = time.monotonic() + 120
    while children_of(state["pid"]) - {state["holder_pid"]} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert children_of(state["pid"]) == {state["holder_pid"]}, "the command of a dead client ends too"
    assert not (killed_out / "model.safetensors").exists() and alive(state["pid"])  # stopped, not finished
    assert fdsl(up_env, "down").returncode == 0
