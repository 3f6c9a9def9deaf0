"""`fdsl pretrain` as a Ray job entrypoint; the arguments are those of `fdsl pretrain`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m fdsl.jobs.pretrain debug-vit --data /shared/data/debug --out /shared/runs/debug-vit \
        --address auto
"""

from __future__ import annotations

import sys

from fdsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
