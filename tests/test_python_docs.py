"""docs/python.md is executed: its code blocks, in order, in one fresh Python process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_python_page_runs(tmp_path):
    blocks = code_blocks(PAGE.read_text())
    assert len(blocks) >= 3
    script = tmp_path / "page.py"
    script.write_text("\n".join(blocks))
    env = {**os.environ, "PYTHONPATH": str(PAGE.parents[1]), "FDSL_TRACKING": "1"}  # the default store
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=580)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pre-trained 60 steps" in res.stdout and "effect" in res.stdout
    assert "VisionTransformer" in res.stdout
    assert (tmp_path / "runs" / "nb" / "ft-scratch" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "mlflow.db").is_file() and "ft-scratch" in res.stdout


def test_importing_fdsl_stays_light():
    code = "import sys, fdsl; fdsl.__version__; print('ray' in sys.modules, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]
