"""The CLI's commands that look at presets before anything runs: `fdsl presets`, `fdsl show`,
`fdsl preview`, and the `--set` flag every command that takes a preset has.

Like `fdsl.cli`, each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set data.num_classes=10 (repeatable)")


def add_preset_commands(sub) -> None:
    p = sub.add_parser("presets", help="list the named experiments")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("show", help="print a preset's full config (JSON), after overrides")
    p.add_argument("preset")
    p.add_argument("--docs", action="store_true", help="print each data field with its docstring")
    add_set(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("preview", help="render a grid of classes x instances to a PNG")
    p.add_argument("target", help="a preset name (see `fdsl presets`) or a folder made by `fdsl generate`")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--classes", type=int, default=8, help="rows: classes spread over the set")
    p.add_argument("--instances", type=int, default=8, help="columns: instances spread over a class")
    add_set(p)
    p.set_defaults(func=cmd_preview)


def cmd_presets(args) -> int:
    from fdsl.presets import preset_names, preset_summary

    for name in preset_names():
        print(f"{name:24s} {preset_summary(name)}")
    return 0


def cmd_show(args) -> int:
    from fdsl.config import field_docs
    from fdsl.presets import get_preset
    from fdsl.recipes import recipe_source

    exp = get_preset(args.preset, args.overrides)
    print(f"recipe: {recipe_source(args.preset)}", file=sys.stderr)
    if args.docs:
        docs = field_docs(type(exp.data))
        for key, value in exp.data.to_dict().items():
            print(f"data.{key} = {value!r}\n    {docs.get(key, '')}")
    else:
        print(json.dumps(exp.to_dict(), indent=2))
    return 0


def cmd_preview(args) -> int:
    from fdsl.preview import preview_dataset, preview_experiment

    if Path(args.target).is_dir():  # a folder made by `fdsl generate`
        if args.overrides:
            raise ValueError("--set: applies to a preset, not to a generated folder")
        preview_dataset(Path(args.target), Path(args.out), args.classes, args.instances)
        return 0
    from fdsl.presets import get_preset

    preview_experiment(get_preset(args.target, args.overrides), Path(args.out), args.classes, args.instances)
    return 0
