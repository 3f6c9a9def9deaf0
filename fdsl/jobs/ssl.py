"""`fdsl ssl` as a Ray job entrypoint; the arguments are those of `fdsl ssl`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m fdsl.jobs.ssl debug-dino --dataset digits --out /shared/runs/ssl/digits --address auto
"""

from __future__ import annotations

import sys

from fdsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["ssl", *sys.argv[1:]]))
