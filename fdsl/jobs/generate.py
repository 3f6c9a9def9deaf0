"""`fdsl generate` as a Ray job entrypoint; the arguments are those of `fdsl generate`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m fdsl.jobs.generate debug-fractaldb --out /shared/data/debug --address auto
"""

from __future__ import annotations

import sys

from fdsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
