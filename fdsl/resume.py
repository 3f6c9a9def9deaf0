"""What an interrupted command kept in its output folder, and how it continues (docs/reliability.md).

`fdsl.cli` prints it in the one line after Ctrl-C or SIGTERM (`fdsl.platform.interrupt`,
`report_interrupted`):

    generate    the shards rendered so far (the journal)    the same command again
    pretrain    the newest checkpoint                        the same command with --resume
    finetune    the newest checkpoint (every evaluation)     the same command with --resume
    ssl         the newest checkpoint (ssl.checkpoint_every)  the same command with --resume
    (pretrain, finetune, ssl before their first checkpoint: nothing; the same command again)
    sweep       the finished trials and Tune's state         the same command with --resume
    quickstart  its finished runs, the stopped run's newest      the same command again
                checkpoint
"""

from __future__ import annotations

import gc
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from fdsl.platform.data.manifest import load_progress
from fdsl.platform.interrupt import Interrupted
from fdsl.platform.train.checkpoints import newest_checkpoint_step
from fdsl.platform.train.run import can_resume
from fdsl.platform.tune.report import SWEEP_FILE
from fdsl.platform.tune.sweep import COMPLETIONS, TUNE_NAME
from fdsl.schema import read_jsonl


def kept_and_next(command: str, out: Path) -> tuple[str, bool]:
    """(what `out` keeps, in words; whether the command continues with --resume)."""
    if command == "generate":
        try:
            _, entries = load_progress(out)
        except ValueError:
            entries = {}
        return f"kept {len(entries)} rendered shards in {out}", False
    if command in ("pretrain", "finetune", "ssl"):
        if not can_resume(out):
            return "no checkpoint was written yet (the folder is free again)", False
        step = newest_checkpoint_step(out)
        if step is None:  # stopped between the first checkpoint's write and its snapshot
            return (f"kept a checkpoint the stop may have cut short in {out}/train (--resume checks it and, "
                    "if it is incomplete, starts from step 0)"), True
        return f"kept the checkpoint of step {step} in {out}/train", True
    if command == "sweep":
        finished = len(read_jsonl(out / COMPLETIONS)) if (out / COMPLETIONS).is_file() else 0
        state = "Tune's state" if (out / TUNE_NAME).is_dir() else "no Tune state yet"
        return f"kept {finished} finished trials and {state} in {out} (no report: the sweep is not done)", \
            (out / SWEEP_FILE).is_file()
    return f"kept the finished steps and the stopped run's newest checkpoint in {out}", False


def report_interrupted(command: str, argv: list[str], out: Path, err: Interrupted) -> int:
    """After SIGINT / SIGTERM: one line, what was kept and the command that continues it; returns the
    exit code, 130 / 143 (`end_stopped` then ends the process). `err` comes without its traceback:
    the frames it held (a data iterator among them) are collected here, while Ray is up."""
    gc.collect()
    kept, resume = kept_and_next(command, out)
    again = shlex.join(["fdsl", *argv, *(["--resume"] if resume and "--resume" not in argv else [])])
    print(f"fdsl {command}: stopped by {err.name}; {kept}; continue with: {again}", file=sys.stderr,
          flush=True)
    return err.exit_code


def end_stopped(code: int) -> NoReturn:
    """End a stopped command's process now with `code` (its line printed, its logs copied), without
    Python's exit handlers. Ray's would shut Ray down under its own background threads (a stopped data
    iterator's prefetcher), and a thread that then calls into Ray makes Ray end the process with exit
    1. The local Ray the command started ends with it: its holder's stdin closes (`fdsl.holder`), or,
    one started in this process, by Ray's kernel fate-sharing (its processes get SIGKILL when the
    driver ends); a cluster it joined sees its driver end, with its tasks and actors."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
