"""One small check of the JSON files fdsl reads back (manifests, run and sweep files, weights configs).

    manifest = load_json(path, {"shards": list, "num_rows": int, ...}, fix="re-run `fdsl generate`")

A file that is not JSON, is not an object, lacks a field or holds a field of another type is a
ValueError naming the file, the field and what to do; nothing downstream then meets a KeyError or
an AttributeError on a crafted or damaged file. No Ray, torch or numpy.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object",
          bool: "a boolean"}


def _kind(expected) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_NAMES.get(k, k.__name__) for k in kinds)


def check_fields(where: str, data: Any, schema: dict[str, Any], fix: str = "") -> dict:
    """`data` must be a dict holding every field of `schema` ({name: type or tuple of types}); a
    bool never counts as a number. Returns `data`; ValueError "<where>: field <name>: ..." otherwise."""
    hint = f"; {fix}" if fix else ""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: got {type(data).__name__}, expected a JSON object{hint}")
    for name, expected in schema.items():
        if name not in data:
            raise ValueError(f"{where}: field {name!r} is missing{hint}")
        value = data[name]
        kinds = expected if isinstance(expected, tuple) else (expected,)
        if float in kinds and int not in kinds:
            kinds = (*kinds, int)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise ValueError(f"{where}: field {name!r} is {type(value).__name__}, expected "
                             f"{_kind(expected)}{hint}")
    return data


def load_json(path: str | os.PathLike, schema: dict[str, Any], fix: str = "") -> dict:
    """The JSON object in `path`, checked by `check_fields`; ValueError naming the file when it is
    not JSON (FileNotFoundError when it is missing)."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file{hint}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}){hint}") from None
    return check_fields(str(path), data, schema, fix)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of an append-only log (metrics.jsonl, events.jsonl, a sweep's journals), one
    per line. A line that is not a JSON object (a write torn by a crash, a full disk or a kill) is
    skipped with a warning naming the file and line: a torn log never fails a run or a resume."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            logging.getLogger("fdsl").warning("%s: line %d is not a JSON object (a torn write?); skipped",
                                              path, number)
    return rows


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested objects as dotted keys (to compare two configs)."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
