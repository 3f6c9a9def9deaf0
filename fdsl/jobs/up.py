"""The warm process of `fdsl up` (`fdsl.up.serve`) and, with `hold`, the holder of a local Ray
(`fdsl.platform.connect.hold_local`): `fdsl up`'s, or a command's own (`fdsl.holder`). `fdsl up` and
the `fdsl` command start them; nobody else needs to.

    python -m fdsl.jobs.up [--num-cpus N] [--idle-hours H]
    python -m fdsl.jobs.up hold [--num-cpus N]
"""

from __future__ import annotations

import sys

from fdsl.cli import main
from fdsl.platform.connect import hold_local, release
from fdsl.up import serve_main


def run(argv: list[str]) -> int:
    """A command in a child of the warm process, as `fdsl.cli.entry` runs one: its Ray connection
    ends with it (a local Ray of its own, for another --num-cpus, stops)."""
    try:
        return main(argv)
    finally:
        release()


if __name__ == "__main__":
    if sys.argv[1:2] == ["hold"]:
        hold_local(int(sys.argv[3]) if sys.argv[2:3] == ["--num-cpus"] else None)
    else:
        sys.exit(serve_main(run, sys.argv[1:]))
