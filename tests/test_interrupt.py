"""The signal contract's one delicate rule (fdsl.platform.interrupt): a signal that arrives while a
module is being imported waits until the import is done, then stops the command as usual."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from fdsl.platform import interrupt
    try:
        with interrupt.catching():
            import slow_module  # sends itself SIGINT half-way through its own import
            time.sleep(10)
        print("not interrupted")
    except interrupt.Interrupted as err:
        print("interrupted", err.name, sys.modules["slow_module"].DONE)
""")


def test_a_signal_during_an_import_stops_the_command_after_the_import(tmp_path):
    """Raised inside the import, the stop would leave a half-initialised module (what broke
    `fdsl pretrain` on a Ctrl-C during torch's import of sympy); deferred, the import completes and
    the stop comes at once after it."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.3)\nDONE = True\n")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["interrupted", "SIGINT", "True"], res.stdout + res.stderr[-2000:]
