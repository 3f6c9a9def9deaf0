"""Shared test helpers: run code in a fresh interpreter, the venv's fdsl command, one local Ray.

Tests that need Ray in this process take the session-scoped `ray_local` fixture: one local Ray of
the tests' own (never a cluster recorded on the machine), started once for the whole session. Test
modules that use Ray are marked `slow`; `make test-fast` runs the others.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NOISE = ("PlacementGroupCleaner", "(RayTrainWorker", "(TrainController", "Setting accelerator",
         "PreemptionWatcher", "Progress bars disabled", "exclude_resources", "Token authentication",
         "Started a local Ray instance", "Configuration for experiment")
"""Lines the issue found on the console (repeated warnings, Ray's debug lines): none may show."""


@pytest.fixture(scope="session", autouse=True)
def _sweep_seal_key(tmp_path_factory):
    """Sweeps sign their Tune state with a key in the user's home: the tests' sweeps (and the
    commands they start, which inherit the environment) use a key of their own instead."""
    os.environ.setdefault("FDSL_SEAL_KEY", str(tmp_path_factory.mktemp("seal") / "sweep-seal.key"))


@pytest.fixture(scope="session", autouse=True)
def _no_tracking():
    """The suite logs nothing to MLflow (no runs/mlflow.db in the checkout; no MLflow import in every
    command it starts): FDSL_TRACKING=0, inherited by those commands. tests/test_tracking.py and the
    Python page's test turn it on for themselves."""
    os.environ["FDSL_TRACKING"] = "0"


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a new Python process (same interpreter and environment)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (created): a disk that fills up. Root only: the test is
    skipped where mounting fails."""
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def processes_of(session: str) -> list[int]:
    """PIDs whose command line names the Ray session folder `session` (its raylet, GCS, agents)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if session.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def gone_within(pids: Callable[[], list[int] | set[int]], timeout_s: float = 30.0) -> list[int] | set[int]:
    """Wait until `pids()` is empty or `timeout_s` passed; what it last returned."""
    deadline = time.monotonic() + timeout_s
    while (left := pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def run_fdsl(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the `fdsl` command line in a new process."""
    return subprocess.run([sys.executable, "-m", "fdsl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session (2 CPUs), started as the CLI starts its own (dashboard on
    127.0.0.1, no worker output on the console), shut down at the end."""
    import ray

    from fdsl.platform.connect import start_local

    start_local(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _no_ray_left_behind(request):
    """A test that runs a command in this process without `ray_local` must not leave a Ray running:
    the command's own Ray would outlive it, and `ray_local` could not start after it (once every
    later Ray test failed at setup, far from the test that caused it). Such a test fails here."""
    ray = sys.modules.get("ray")
    before = ray is not None and ray.is_initialized()
    yield
    ray = sys.modules.get("ray")
    if not before and ray is not None and ray.is_initialized() and "ray_local" not in request.fixturenames:
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} left a Ray running in the test process: take `ray_local`")
