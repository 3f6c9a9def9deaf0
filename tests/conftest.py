"""Shared test helpers: run code in a fresh interpreter, the venv's fdsl command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a new Python process (same interpreter and environment)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


def run_fdsl(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the `fdsl` command line in a new process."""
    return subprocess.run([sys.executable, "-m", "fdsl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
