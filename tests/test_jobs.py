"""`ray job submit` against a real local head: a debug generate job and a debug pretrain job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import NOISE, ROOT

pytestmark = pytest.mark.slow  # Ray and real training runs

RAY = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "ray")
if not Path(RAY).exists():
    RAY = shutil.which("ray") or "ray"
EXCLUDES = json.dumps({"excludes": [".venv", "runs", ".cache", ".git", "**/__pycache__", ".pytest_cache",
                                    ".ruff_cache"]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_own_ray(temp_dir: str, timeout: float = 3.0) -> None:
    """Stop the Ray processes of the head started with `--temp-dir temp_dir` and their children:
    never Ray's own stop command, which ends every Ray on the machine (a user's included)."""
    import psutil

    own = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or ()):
                own.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    family = {p.pid: p for p in own}
    for proc in own:
        try:
            family.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    for proc in family.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(list(family.values()), timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue


@pytest.fixture(scope="module")
def bystander():
    """Another local Ray on the machine (as a user's would be), on Ray's default ports: the head
    below must work beside it and leave it running."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", "import ray, time; ray.init(address='local', num_cpus=1, "
                             "include_dashboard=False); print('up', flush=True); time.sleep(3600)"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    try:
        assert proc.stdout.readline().strip() == "up"
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def head(bystander):
    """A real head: token auth on, dashboard and jobs API on 127.0.0.1, its own temp dir and free
    ports (the dashboard agent's too: Ray's default 52365 may be another Ray's); afterwards only its
    own processes are stopped."""
    ports = {flag: _free_port() for flag in ("--port", "--dashboard-port", "--dashboard-agent-listen-port",
                                             "--dashboard-agent-grpc-port", "--metrics-export-port",
                                             "--ray-client-server-port", "--node-manager-port",
                                             "--object-manager-port")}
    temp_dir = tempfile.mkdtemp(prefix="fdsl-jobs-ray-", dir="/tmp")  # short: Ray's socket paths
    # the head runs with this venv first on PATH (as from an activated venv): job drivers run
    # `python -m fdsl.jobs...` with the head's environment
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    args = [str(v) for flag, port in ports.items() for v in (flag, port)]
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "2", *args, "--temp-dir", temp_dir,
                            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                            "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        url = f"http://127.0.0.1:{ports['--dashboard-port']}"
        deadline = time.time() + 120
        while True:  # bounded wait for the dashboard's HTTP server
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except urllib.error.HTTPError:
                break  # it answers (401 without a token): it is up
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield url, env
    finally:
        others = bystander.children(recursive=True)
        stop_own_ray(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert bystander.is_running() and others and all(p.is_running() for p in others), \
            "stopping the test's head stopped another Ray"


def _submit(url: str, env: dict, job_id: str, *entrypoint: str) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the head's job agent is still starting (the dashboard answers
    first; on a busy machine the agent can take seconds more): Ray says to try again later."""
    deadline = time.time() + 120
    while True:
        res = subprocess.run([RAY, "job", "submit", "--address", url, "--submission-id", job_id,
                              "--working-dir", str(ROOT), "--runtime-env-json", EXCLUDES, "--", *entrypoint],
                             env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
        if "No available agent to submit job" not in res.stdout + res.stderr or time.time() > deadline:
            return res
        time.sleep(2)


def _status(url: str, env: dict, job_id: str) -> str:
    res = subprocess.run([RAY, "job", "status", "--address", url, job_id], env=env, capture_output=True,
                         text=True, timeout=60)
    return res.stdout + res.stderr


def test_generate_then_pretrain_jobs(head, tmp_path):
    url, env = head
    data, run = tmp_path / "data", tmp_path / "run"
    gen = _submit(url, env, "fdsl-test-generate", "python", "-m", "fdsl.jobs.generate", "debug-fractaldb",
                  "--out", str(data), "--set", "synthesis.shard_rows=16")
    status = _status(url, env, "fdsl-test-generate")
    assert "succeeded" in status.lower(), status + gen.stdout[-3000:] + gen.stderr[-3000:]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["num_rows"] == 64 and manifest["num_shards"] == 4

    # in Ray Train's local mode (the loop in the job's driver): the worker groups of a job on a
    # cluster are the drills' (tests/test_cluster.py); the local console test has a worker group's
    pre = _submit(url, env, "fdsl-test-pretrain", "python", "-m", "fdsl.jobs.pretrain", "debug-vit",
                  "--data", str(data), "--out", str(run), "--set", "pretrain.max_steps=6",
                  "--set", "synthesis.shard_rows=16", "--set", "pretrain.num_workers=0",
                  "--set", "pretrain.use_deepspeed=false", "--set", "pretrain.zero_stage=0")
    status = _status(url, env, "fdsl-test-pretrain")
    assert "succeeded" in status.lower(), status + pre.stdout[-3000:] + pre.stderr[-3000:]
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()
    # `ray job logs` reads like the local console: progress and summary, not Ray's debug lines
    logs = subprocess.run([RAY, "job", "logs", "--address", url, "fdsl-test-pretrain"], env=env,
                          capture_output=True, text=True, timeout=60).stdout
    lines = [line for line in logs.splitlines() if line.strip()]
    assert any(line.startswith("pretrain: 6 steps") for line in lines), logs
    assert lines[-1] == f"logs: {run / 'logs'}/fdsl.log", logs  # the cluster keeps its workers' logs
    noise = (*NOISE, "Connecting to existing Ray cluster")
    assert len(lines) <= 15 and not [line for line in lines if any(n in line for n in noise)], logs
    assert "Connecting to existing Ray cluster" in (run / "logs" / "fdsl.log").read_text()


def test_client_without_token_is_refused(head):
    url, env = head
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    res = subprocess.run([RAY, "job", "list", "--address", url], env=no_token, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0
