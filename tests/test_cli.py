"""The `fdsl` command: preview, presets, errors with exit code 2, light imports."""

from __future__ import annotations

from conftest import run_fdsl, run_python


def test_import_does_not_pull_ray_or_torch():
    code = ("import sys, fdsl, fdsl.generators, fdsl.presets, fdsl.cli; "
            "print(sorted(m for m in ('ray', 'torch', 'matplotlib') if m in sys.modules))")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_preview_writes_a_png(tmp_path):
    out = tmp_path / "grid.png"
    res = run_fdsl("preview", "debug-fractaldb", "--out", str(out), "--classes", "3", "--instances", "4")
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in res.stdout
    assert not list(tmp_path.glob("*.tmp.png"))


def test_presets_and_show():
    res = run_fdsl("presets")
    assert res.returncode == 0 and "fractaldb-1k" in res.stdout and "debug-onepfrac" in res.stdout
    res = run_fdsl("show", "ofdb-1k", "--set", "data.seed=4")
    assert res.returncode == 0 and '"seed": 4' in res.stdout and '"num_instances": 1' in res.stdout


def test_user_errors_exit_2_with_one_line():
    cases = [
        (("preview", "no-such-preset", "--out", "/tmp/x.png"), "preset: got 'no-such-preset'"),
        (("preview", "debug-fractaldb", "--out", "/tmp/x.png", "--set", "num_classes=abc"),
         "num_classes: got 'abc', expected an integer"),
        (("preview", "debug-fractaldb", "--out", "/tmp/x.png", "--set", "fill_rate=5"),
         "fill_rate: got 5.0, expected a value in"),
        (("show", "debug-fractaldb", "--set", "zzz=1"), "zzz: unknown"),
        (("nonsense-command",), "invalid choice"),
    ]
    for args, message in cases:
        res = run_fdsl(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_show_into_a_closed_pipe_ends_quietly(root):
    """`fdsl show P | head -1`: the reader closes the pipe early; no BrokenPipeError traceback."""
    import subprocess
    import sys

    res = subprocess.run(f"{sys.executable} -m fdsl.cli show debug-vit | head -1", shell=True, cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "{" and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr


def test_preview_into_a_folder_is_one_line(tmp_path):
    res = run_fdsl("preview", "debug-fractaldb", "--out", str(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "is a folder, expected the path of a PNG" in res.stderr
    assert list(tmp_path.iterdir()) == []
