"""`fdsl finetune` as a Ray job entrypoint; the arguments are those of `fdsl finetune`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m fdsl.jobs.finetune debug-finetune --weights /shared/runs/debug-vit --dataset digits \
        --out /shared/runs/finetune/debug --address auto
"""

from __future__ import annotations

import sys

from fdsl.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
