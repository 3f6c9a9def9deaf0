"""The CLI's commands about results: `fdsl export`, `fdsl track`, `fdsl ui`, and the tracking flags
of the commands that train (`--tracking-uri`, `--no-tracking`; docs/tracking.md).

Like `fdsl.cli`, each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fdsl.platform import tracking


def add_tracking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow store to log to: a server (http://host:5000) or sqlite:///PATH (default: "
                        f"MLFLOW_TRACKING_URI, else {tracking.DEFAULT_STORE} in the working directory)")
    p.add_argument("--no-tracking", action="store_true", help="log nothing to MLflow (as FDSL_TRACKING=0)")


def configure_tracking(args) -> None:
    """This process's MLflow store, from the command's flags (commands without them keep the default)."""
    if hasattr(args, "tracking_uri"):
        tracking.configure(args.tracking_uri, enabled=not getattr(args, "no_tracking", False))


def add_result_commands(sub) -> None:
    p = sub.add_parser("export", help="a run's weights as a Hugging Face Hub folder with its model card")
    p.add_argument("run", help="a finished `fdsl pretrain`, `ssl` or `finetune` run folder")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.add_argument("--results", nargs="*", default=[], metavar="FINETUNE_RUN",
                   help="fine-tuning runs of these weights whose top-1 and seeds go into the model card")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("track", help="log finished run or sweep folders to MLflow (made before, or offline)")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders (pretrain, finetune, ssl) or sweep folders")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow store (default: MLFLOW_TRACKING_URI, else runs/mlflow.db here)")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("ui", help="open the MLflow UI on the local store (runs/mlflow.db)")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="the store to show (default: MLFLOW_TRACKING_URI, else runs/mlflow.db here)")
    p.add_argument("--port", type=int, default=5000, help="port of the UI on 127.0.0.1 (default 5000)")
    p.set_defaults(func=cmd_ui)


def cmd_export(args) -> int:
    from fdsl.export import export_run

    out = export_run(args.run, args.out, args.results)
    print(f"export: {out}/ (model.safetensors, config.json, README.md); timm loads it with "
          f"timm.create_model('local-dir:{out}', pretrained=True)")
    return 0


def cmd_track(args) -> int:
    from fdsl.experiment import Experiment
    from fdsl.platform.train.config import EXPERIMENT_FILE
    from fdsl.platform.train.tracked import run_kind, track_run
    from fdsl.platform.tune.report import SWEEP_FILE
    from fdsl.platform.tune.sweep import BASE_FILE
    from fdsl.platform.tune.tracked import track_sweep

    folders = [Path(r).absolute() for r in args.runs]
    for folder in folders:  # every folder checked before anything is logged
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such run folder")
        if not (folder / SWEEP_FILE).is_file():
            run_kind(folder)
    uri, failed = tracking.chosen_uri(), 0
    for folder in folders:
        if (folder / SWEEP_FILE).is_file():
            sweep = json.loads((folder / SWEEP_FILE).read_text())
            base = json.loads((folder / BASE_FILE).read_text())
            state, trials = track_sweep(folder, sweep.pop("name", folder.name), sweep, base)
            what = f"sweep, {trials} trials logged" if state == "logged" else \
                "sweep, logged and finished before: kept"
        else:
            kind = run_kind(folder)
            experiment = Experiment.from_dict(json.loads((folder / EXPERIMENT_FILE).read_text()))
            state, run_id = track_run(folder, experiment, kind)
            what = f"{kind}, run {run_id}" if run_id else f"{kind}, logged and finished before: kept"
        failed += state == "failed"
        print(f"track: {folder} ({what if state != 'failed' else 'failed, see the warning'}) -> {uri}")
    return 1 if failed else 0


def cmd_ui(args) -> int:
    uri = args.tracking_uri or tracking.chosen_uri()
    if not uri.startswith(("sqlite:", "file:", "/")) and "://" in uri:  # a server has a UI of its own
        print(f"ui: {uri} is a tracking server: open it in a browser")
        return 0
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(f"{uri.removeprefix('sqlite:///')}: no runs logged there yet (a pretrain, "
                                "finetune, ssl, sweep or quickstart run from this folder logs there; "
                                "or pass --tracking-uri)")
    print(f"ui: MLflow on {uri} at http://127.0.0.1:{args.port} (Ctrl-C ends it)", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(args.port)]
    os.execv(sys.executable, command)
    return 0  # not reached: the UI replaces this process
