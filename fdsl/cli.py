"""The `fdsl` command. Each subcommand parses, validates and calls one function.

A user's mistake (unknown preset, bad --set, out-of-range field, missing file) prints one line to
stderr and exits with code 2, without a traceback. Heavy libraries (Ray, torch, matplotlib) are
imported only by the subcommands that need them, so `fdsl --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from fdsl import __version__, holder
from fdsl.atomic import OutputError, machine_error
from fdsl.cli_presets import add_preset_commands
from fdsl.cli_presets import add_set as _add_set
from fdsl.cli_results import add_result_commands, add_tracking_arguments, configure_tracking
from fdsl.platform import interrupt
from fdsl.platform.console import DRIVER_LOG, VERBOSE_ENV, command_log, current_log, verbose
from fdsl.up import CHILD_ENV, attached, down, forward, up

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
"""What the code raises for a user's mistake (and `fdsl.atomic.OutputError`); anything else is a bug
and keeps its traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="Ray's full console output (workers, Ray Data, Tune, DeepSpeed), as with "
                        "FDSL_VERBOSE=1; by default it goes to OUT/logs/")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `fdsl generate`, also used by `python -m fdsl.jobs.generate`."""
    p.add_argument("preset", help="a preset name (see `fdsl presets`)")
    p.add_argument("--out", required=True, help="dataset folder: created, resumed, or verified if complete")
    _add_set(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto, host:port or ray://host:10001); default: a local Ray")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray, and the cap on concurrent render tasks")
    _add_verbose(p)


_EARLY_RAY = {"on": False}
"""Set by `entry`: the `fdsl` process starts its local Ray beside its imports (`fdsl.holder`); `main()`
called in another program's process (a test, a notebook) leaves Ray to `connect`."""


def _start_ray_early(args, num_cpus: int | None = None) -> None:
    """Once a run command's preset is checked: start the local Ray that `connect` would start later,
    now, in a holder process (`fdsl.holder`), so that it comes up while the command imports torch,
    timm and Ray. Only in the `fdsl` process, with no --address, outside a Ray job, with no `fdsl up`
    to join and no Ray in this process."""
    ray = sys.modules.get("ray")
    if (not _EARLY_RAY["on"] or getattr(args, "address", None) or os.environ.get("RAY_ADDRESS")
            or (num_cpus is not None and num_cpus < 1) or attached(num_cpus) is not None
            or (ray is not None and ray.is_initialized())):
        return
    log = current_log()
    holder.start(num_cpus, None if verbose() or log is None else log.tmp)


def cmd_generate(args) -> int:
    from fdsl.platform.data.manifest import MANIFEST
    from fdsl.presets import get_preset

    experiment = get_preset(args.preset, args.overrides)
    if not (Path(args.out) / MANIFEST).is_file():  # a complete data set is only verified
        _start_ray_early(args, args.num_cpus)
    from fdsl.platform.data.synthesis import generate

    generate(experiment, args.out, address=args.address, num_cpus=args.num_cpus)
    return 0


def cmd_verify(args) -> int:
    from fdsl.platform.data.manifest import verify_dataset

    result = verify_dataset(args.dir)
    if result.ok:
        m = result.manifest
        print(f"verify: {args.dir} ok: {m['num_shards']} shards, {m['num_rows']} images, "
              f"content_sha256 {m['content_sha256']}")
        return 0
    for name, problem in result.bad.items():
        print(f"verify: {name}: {problem}")
    state = "complete" if result.complete else "incomplete (no manifest.json yet)"
    print(f"verify: {args.dir} is {state} with {len(result.bad)} of {result.num_shards} shards bad; "
          "run the same `fdsl generate` again to repair it")
    return 1


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `fdsl pretrain`, also used by `python -m fdsl.jobs.pretrain`."""
    p.add_argument("preset", help="a pre-training preset (e.g. debug-vit, vit-base-exfractaldb-21k)")
    p.add_argument("--data", required=True,
                   help="folder made by `fdsl generate` for the preset's data, or `stream` (no disk)")
    p.add_argument("--out", required=True, help="run folder: metrics, checkpoints, model.safetensors")
    _add_set(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto, host:port or ray://host:10001); default: a local Ray")
    _add_resume(p, " (--set may extend it)")


def _add_resume(p: argparse.ArgumentParser, extend: str = "") -> None:
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest "
                   f"checkpoint{extend}; checkpoint files that would run code when loaded are refused")
    _add_verbose(p)
    add_tracking_arguments(p)


def cmd_pretrain(args) -> int:
    from fdsl.presets import preset_or_run

    experiment = preset_or_run(args.preset, args.overrides, args.out, args.resume)
    _start_ray_early(args)
    from fdsl.platform.train.pretrain import pretrain

    summary = pretrain(experiment, args.data, args.out, resume=args.resume, address=args.address)
    loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
    print(f"pretrain: {summary['steps']} steps, loss {loss}, {summary['images_per_s']:.1f} images/s, "
          f"{summary['seconds']:.0f} s -> {summary['model']}, curves: {summary['curves']}")
    return 0


def _add_target_arguments(p: argparse.ArgumentParser, section: str) -> None:
    p.add_argument("--dataset", default=None,
                   help="target set: digits, idx:PATH, cifar10:PATH, cifar100:PATH, imagefolder:PATH or "
                        f"parquet:PATH (default: the preset's {section}.dataset)")
    p.add_argument("--train-fraction", type=float, default=None,
                   help=f"keep this share of each class of the training split ({section}.train_fraction)")
    p.add_argument("--samples-per-class", type=int, default=None,
                   help=f"keep this many training images per class ({section}.samples_per_class)")
    _add_set(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto, host:port or ray://host:10001); default: a local Ray")


def _target_overrides(args, section: str) -> list[str]:
    extra = []
    if args.train_fraction is not None:
        extra.append(f"{section}.train_fraction={args.train_fraction}")
    if args.samples_per_class is not None:
        extra.append(f"{section}.samples_per_class={args.samples_per_class}")
    return [*args.overrides, *extra]


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `fdsl finetune`, also used by `python -m fdsl.jobs.finetune`."""
    p.add_argument("preset", help="a preset with a finetune section (e.g. debug-finetune, finetune-sgd)")
    p.add_argument("--weights", required=True,
                   help="RUN/model.safetensors or a run folder (fdsl pretrain / fdsl ssl), `scratch`, or "
                        "timm:<name> (timm's weights, from the local cache only)")
    p.add_argument("--out", required=True, help="run folder: metrics.json, confusion.png, model.safetensors")
    _add_target_arguments(p, "finetune")
    _add_resume(p, " (the same weights and settings)")


def cmd_finetune(args) -> int:
    from fdsl.presets import preset_or_run

    experiment = preset_or_run(args.preset, _target_overrides(args, "finetune"), args.out, args.resume)
    _start_ray_early(args)
    from fdsl.platform.train.finetune import finetune

    finetune(experiment, args.weights, args.dataset, args.out, address=args.address, resume=args.resume)
    return 0


def add_ssl_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `fdsl ssl`, also used by `python -m fdsl.jobs.ssl`."""
    p.add_argument("preset", help="a preset with an ssl section (e.g. debug-dino, dino-small-data)")
    p.add_argument("--out", required=True, help="run folder: metrics.jsonl, model.safetensors + config.json")
    _add_target_arguments(p, "ssl")
    _add_resume(p, " (the same settings)")


def cmd_ssl(args) -> int:
    from fdsl.presets import preset_or_run

    experiment = preset_or_run(args.preset, _target_overrides(args, "ssl"), args.out, args.resume)
    _start_ray_early(args)
    from fdsl.platform.train.ssl import ssl

    ssl(experiment, args.dataset, args.out, address=args.address, resume=args.resume)
    return 0


def cmd_sweeps(args) -> int:
    from fdsl.sweeps import sweep_names, sweep_summary

    for name in sweep_names():
        print(f"{name:24s} {sweep_summary(name)}")
    return 0


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `fdsl sweep`, also used by `python -m fdsl.jobs.sweep`."""
    p.add_argument("sweep", help="a named sweep (see `fdsl sweeps`) or a sweep file (.yaml/.json: base, "
                                 "space, seeds, hypotheses; docs/sweeps.md)")
    p.add_argument("--out", required=True, help="sweep folder: data sets, trials, Tune state, report")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scalar field of the sweep, e.g. --set num_samples=8 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted sweep in --out (Ray Tune's state is pickled: resume only "
                        "sweep folders you ran yourself)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (auto, host:port or ray://host:10001); default: a local Ray")
    _add_verbose(p)
    add_tracking_arguments(p)


def cmd_sweep(args) -> int:
    from fdsl.sweeps import check_sweep, get_sweep, sweep_label

    sweep = get_sweep(args.sweep, args.overrides)
    name = sweep_label(args.sweep)
    _start_ray_early(args)
    from fdsl.platform.tune.sweep import describe_best, run_sweep

    summary = run_sweep(sweep, name, args.out, check_sweep(sweep), resume=args.resume,
                        address=args.address)
    print(f"sweep: {summary['trials']} trials ({summary['errors']} failed) in {summary['seconds']:.0f} s, "
          f"{summary['generations']} data sets generated, {summary['pretrainings']} pre-training runs; "
          f"{describe_best(summary)}\nreport: {summary['report']}")
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `fdsl report`, also used by `python -m fdsl.jobs.report`."""
    p.add_argument("dir", help="a folder made by `fdsl sweep`")


def cmd_report(args) -> int:
    from fdsl.platform.tune.report import write_report

    paths = write_report(args.dir)
    print(f"report: {paths['html']} (also {paths['md'].name}, {paths['csv'].name})")
    return 0


def cmd_quickstart(args) -> int:
    _start_ray_early(args, args.num_cpus)
    from fdsl.quickstart import run_quickstart

    run_quickstart(args.out, num_cpus=args.num_cpus)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fdsl", description="Formula-Driven Supervised Learning at scale on Ray.")
    parser.add_argument("--version", action="version", version=f"fdsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_preset_commands(sub)  # presets, show, preview

    p = sub.add_parser("generate", help="render a preset into shard-NNNNN.parquet files + manifest.json")
    add_generate_arguments(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("verify", help="check every shard of a generated folder against its manifest")
    p.add_argument("dir", help="a folder made by `fdsl generate`")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("pretrain", help="pre-train a timm ViT on a data set with Ray Train + DeepSpeed")
    add_pretrain_arguments(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune weights (a run, scratch, timm) on a target set")
    add_finetune_arguments(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("ssl", help="self-supervised DINO pre-training on a (small) target set")
    add_ssl_arguments(p)
    p.set_defaults(func=cmd_ssl)

    p = sub.add_parser("sweeps", help="list the named sweeps")
    p.set_defaults(func=cmd_sweeps)

    p = sub.add_parser("sweep", help="run a Ray Tune sweep: data set -> pre-train -> fine-tune per trial")
    add_sweep_arguments(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="(re-)write a sweep's report.md, report.html and trials.csv")
    add_report_arguments(p)
    p.set_defaults(func=cmd_report)

    add_result_commands(sub)  # export, track, ui
    p = sub.add_parser("up", help="keep a local Ray and a warm Python for the next commands (`fdsl down`)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--idle-hours", type=float, default=12.0,
                   help="stop by itself after this long without a command (default: 12)")
    p.set_defaults(func=lambda args: up(args.num_cpus, args.idle_hours))
    p = sub.add_parser("down", help="stop what `fdsl up` started (never another Ray)")
    p.set_defaults(func=lambda args: down())
    p = sub.add_parser("quickstart",
                       help="a small replication on a local Ray: laptop FDSL vs scratch, 2 seeds, a sweep")
    p.add_argument("--out", default="runs/quickstart", help="folder for everything it writes")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    _add_verbose(p)
    add_tracking_arguments(p)
    p.set_defaults(func=cmd_quickstart)
    return parser


RUN_COMMANDS = ("generate", "pretrain", "finetune", "ssl", "sweep", "quickstart")
"""Commands that run on Ray: their logs land in OUT/logs (fdsl.platform.console)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_tracking(args)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE_ENV] = "1"
    if args.command not in RUN_COMMANDS:
        return _run(args)
    argv = sys.argv[1:] if argv is None else list(argv)
    if (code := forward(argv)) is not None:  # run by the warm process of `fdsl up`
        return code
    failed = stopped = None
    title = f"fdsl {' '.join(argv)}" + (" (run by `fdsl up`)" if os.environ.get(CHILD_ENV) else "")
    with interrupt.catching(), command_log(args.out, title) as log:
        try:
            code = _run(args)
        except interrupt.Interrupted as err:  # Ctrl-C or SIGTERM: one line, 130 / 143
            stopped = err.with_traceback(None)  # its frames go now (a data iterator ends while Ray is up)
        except BaseException as err:
            failed = err
        if stopped is not None:  # imported now, under the handlers (a further signal is ignored)
            from fdsl.resume import end_stopped, report_interrupted

            code = report_interrupted(args.command, argv, Path(args.out), stopped)
    where = log.folder if log.folder and log.folder.is_dir() and log.used_ray else None
    if failed is not None:  # not a user's mistake (those return 2): a bug or a failed run
        if isinstance(failed, KeyboardInterrupt | SystemExit):
            raise failed
        traceback.print_exception(failed)
        print(f"fdsl {args.command}: failed ({type(failed).__name__})"
              + (f"; full log: {where}/{DRIVER_LOG}, Ray's logs: {where}/ray/" if where else ""),
              file=sys.stderr)
        return 1
    if where and code in (0, 130, 143):  # a user's mistake stays one line
        print(f"logs: {where}/ ({DRIVER_LOG}; Ray's worker logs in ray/)" if log.ray_logs
              else f"logs: {where}/{DRIVER_LOG}")
    if stopped is not None:
        end_stopped(code)
    return code


def _run(args) -> int:
    try:
        return args.func(args)
    except (*USER_ERRORS, OutputError) as err:
        print(f"fdsl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk or a read-only folder, in this process or in a worker
        if (message := machine_error(err, getattr(args, "out", None))) is None:
            raise
        print(f"fdsl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fdsl show ... | head` closed the pipe: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 0


def entry() -> NoReturn:
    """The `fdsl` command: `main()`, then a quick exit. After a command that ran on Ray, a local Ray
    it started stops here (1 s) and the process ends without Python's teardown of torch's and Ray's
    modules (2-3 s); `fdsl.resume.end_stopped` ends a stopped command the same way."""
    _EARLY_RAY["on"] = True
    code = main()
    if "fdsl.platform.connect" not in sys.modules:  # no Ray in this command: a plain exit is quick
        holder.stop(wait=False)  # a local Ray started for a command refused before it joined
        sys.exit(code)
    from fdsl.platform.connect import release

    release(wait=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
