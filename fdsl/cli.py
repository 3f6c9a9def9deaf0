"""The `fdsl` command. Each subcommand parses, validates and calls one function.

A user's mistake (unknown preset, bad --set, out-of-range field, missing file) prints one line to
stderr and exits with code 2, without a traceback. Heavy libraries (Ray, torch, matplotlib) are
imported only by the subcommands that need them, so `fdsl --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fdsl import __version__

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, RuntimeError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set data.num_classes=10 (repeatable)")


def cmd_presets(args) -> int:
    from fdsl.presets import preset_names, preset_summary

    for name in preset_names():
        print(f"{name:24s} {preset_summary(name)}")
    return 0


def cmd_show(args) -> int:
    from fdsl.config import field_docs
    from fdsl.presets import get_preset

    exp = get_preset(args.preset, args.overrides)
    if args.docs:
        docs = field_docs(type(exp.data))
        for key, value in exp.data.to_dict().items():
            print(f"data.{key} = {value!r}\n    {docs.get(key, '')}")
    else:
        print(json.dumps(exp.to_dict(), indent=2))
    return 0


def preview_preset(preset: str, out: Path, overrides=(), num_classes: int = 8,
                   num_instances: int = 8) -> Path:
    """Render a classes x instances grid of a preset to `out` (PNG); returns the path."""
    from fdsl.generators import build_generator
    from fdsl.presets import get_preset
    from fdsl.preview import render_grid, save_grid

    exp = get_preset(preset, overrides)
    gen = build_generator(exp.generator, exp.data)
    start = time.perf_counter()
    classes, instances, images = render_grid(gen, num_classes, num_instances)
    seconds = time.perf_counter() - start
    title = f"{preset} ({exp.generator}: {gen.num_classes} classes x {gen.num_instances} instances)"
    path = save_grid(out, classes, instances, images, title)
    count = sum(len(r) for r in images)
    print(f"preview: {count} images of {preset} rendered in {seconds:.2f}s -> {path}")
    return path


def cmd_preview(args) -> int:
    preview_preset(args.target, Path(args.out), args.overrides, args.classes, args.instances)
    return 0


def cmd_quickstart(args) -> int:
    out = Path(args.out)
    path = preview_preset("debug-fractaldb", out / "preview.png")
    print(f"\nquickstart done. Look at the preview grid: {path.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fdsl", description="Formula-Driven Supervised Learning at scale on Ray.")
    parser.add_argument("--version", action="version", version=f"fdsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("presets", help="list the named experiments")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("show", help="print a preset's full config (JSON), after overrides")
    p.add_argument("preset")
    p.add_argument("--docs", action="store_true", help="print each data field with its docstring")
    _add_set(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("preview", help="render a grid of classes x instances to a PNG")
    p.add_argument("target", help="a preset name (see `fdsl presets`)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--classes", type=int, default=8, help="rows: classes spread over the set")
    p.add_argument("--instances", type=int, default=8, help="columns: instances spread over a class")
    _add_set(p)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("quickstart", help="run the main pipeline end to end at debug size")
    p.add_argument("--out", default="runs/quickstart", help="folder for everything it writes")
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"fdsl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
