"""`ray job submit` against a real local head: a debug generate job and a debug pretrain job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

RAY = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "ray")
if not Path(RAY).exists():
    RAY = shutil.which("ray") or "ray"
EXCLUDES = json.dumps({"excludes": [".venv", "runs", ".cache", ".git", "**/__pycache__", ".pytest_cache",
                                    ".ruff_cache"]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A real head: token auth on, dashboard and jobs API on 127.0.0.1; always `ray stop` after."""
    port, dash = _free_port(), _free_port()
    # the head runs with this venv first on PATH (as from an activated venv): job drivers run
    # `python -m fdsl.jobs...` with the head's environment
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--port", str(port),
                            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                            "--dashboard-port", str(dash), "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        url = f"http://127.0.0.1:{dash}"
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
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


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

    pre = _submit(url, env, "fdsl-test-pretrain", "python", "-m", "fdsl.jobs.pretrain", "debug-vit",
                  "--data", str(data), "--out", str(run), "--set", "pretrain.max_steps=6",
                  "--set", "synthesis.shard_rows=16")
    status = _status(url, env, "fdsl-test-pretrain")
    assert "succeeded" in status.lower(), status + pre.stdout[-3000:] + pre.stderr[-3000:]
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()


def test_client_without_token_is_refused(head):
    url, env = head
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    res = subprocess.run([RAY, "job", "list", "--address", url], env=no_token, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0
