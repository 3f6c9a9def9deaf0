"""`fdsl report` as a Ray job entrypoint; the arguments are those of `fdsl report`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m fdsl.jobs.report /shared/sweeps/debug
"""

from __future__ import annotations

import sys

from fdsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
