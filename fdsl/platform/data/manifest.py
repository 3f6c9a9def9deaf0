"""manifest.json (written last) and _progress.jsonl (written while shards land); verification.

A dataset folder is in one of three states:
    empty / absent     nothing written yet
    partial            _progress.jsonl: a header line (config) then one JSON line per finished shard
    complete           manifest.json: full config, generator, versions, per-shard rows and sha256,
                       totals and content_sha256 (then _progress.jsonl is removed)
Both files start with the config, so a folder made from another config is refused in either state.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pyarrow

from fdsl import __version__
from fdsl.atomic import atomic_write_text
from fdsl.generators import generator_class
from fdsl.platform.data.shards import combine_content, file_sha256, shard_name
from fdsl.schema import check_fields, flatten, load_json

MANIFEST = "manifest.json"
PROGRESS = "_progress.jsonl"
FORMAT = "fdsl-dataset/1"
MANIFEST_FIELDS = {"identity": dict, "generator": dict, "shards": list, "num_shards": int, "num_rows": int,
                   "num_classes": int, "num_instances": int, "shard_rows": int, "encoding": str,
                   "image_shape": list, "content_sha256": str, "bytes_per_image": float}
"""What readers of a manifest rely on (checked when it is loaded)."""
SHARD_FIELDS = {"file": str, "rows": int, "sha256": str}


def identity(experiment) -> dict:
    """What determines a dataset's bytes: generator (name, version, config) and the shard layout."""
    return {"generator": experiment.generator,
            "generator_version": generator_class(experiment.generator).version,
            "data": experiment.data.to_dict(),
            "layout": experiment.synthesis.layout()}


def fingerprint(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def identity_diff(have: dict, want: dict) -> str:
    """'data.num_points: 5000 in the folder, 20000 requested; ...' (first few differences)."""
    a, b = flatten(have), flatten(want)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = [f"{k.replace('layout.', 'synthesis.')}: {a.get(k)!r} in the folder, {b.get(k)!r} requested"
             for k in keys[:3]]
    return "; ".join(parts) + ("; ..." if len(keys) > 3 else "")


# --- reading and writing the two files -----------------------------------------------------------
def load_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a complete dataset folder, or FileNotFoundError/ValueError saying what to do."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset folder {directory} does not exist (make one with `fdsl generate`)")
    path = directory / MANIFEST
    if not path.is_file():
        hint = ("it is incomplete: run the same `fdsl generate` again to finish it"
                if (directory / PROGRESS).is_file() else "it is not a dataset made by `fdsl generate`")
        raise FileNotFoundError(f"{path} not found: {hint}")
    fix = "the file is damaged or not ours: make the data set again with `fdsl generate` into a new folder"
    manifest = load_json(path, {"format": str}, fix)
    if manifest["format"] != FORMAT:
        raise ValueError(f"{path}: format {manifest['format']!r}, expected {FORMAT!r}")
    check_fields(str(path), manifest, MANIFEST_FIELDS, fix)
    for k, entry in enumerate(manifest["shards"]):
        check_fields(f"{path}: shards[{k}]", entry, SHARD_FIELDS, fix)
        if entry["file"] != shard_name(k):  # never a path out of the folder
            raise ValueError(f"{path}: shards[{k}].file is {entry['file']!r}, expected "
                             f"{shard_name(k)!r}; {fix}")
    return manifest


JOURNAL_HEADER = {"fingerprint": str, "identity": dict, "num_shards": int, "experiment": dict}
"""The first line of _progress.jsonl: what the folder is being rendered for."""
JOURNAL_ENTRY = {**SHARD_FIELDS, "shard": int, "image_shape": list, "bytes": int, "content_sha256": str}
"""Each later line: one finished shard (its file, rows, sha256, index and image shape)."""


def load_progress(directory: Path) -> tuple[dict | None, dict[int, dict]]:
    """(header, {shard: entry}) of a partial folder. The header must match JOURNAL_HEADER (ValueError
    naming the file otherwise); a torn or damaged entry line (a crash mid-write) is skipped, so its
    shard is rendered again, and an entry must name its own shard file (never a path elsewhere)."""
    path = directory / PROGRESS
    if not path.is_file():
        return None, {}
    header, entries = None, {}
    fix = "delete it (every shard is then checked and rendered again) or use a new folder"
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; {fix}") from None
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if header is None:
                raise ValueError(f"{path}: its first line is not JSON; {fix}") from None
            continue
        if header is None:
            header = check_fields(f"{path}: line 1", record, JOURNAL_HEADER, fix)
            if header["num_shards"] < 1:
                raise ValueError(f"{path}: line 1: num_shards is {header['num_shards']}, expected >= 1; "
                                 f"{fix}")
            continue
        try:
            check_fields("", record, JOURNAL_ENTRY)
        except ValueError:
            continue
        k = record["shard"]
        if 0 <= k < header["num_shards"] and record["file"] == shard_name(k):
            entries[k] = record
    return header, entries


class ShardJournal:
    """Append-only journal of finished shards, so a crashed run resumes without re-rendering them."""

    def __init__(self, directory: Path, header: dict, entries: dict[int, dict]):
        self.path = directory / PROGRESS
        lines = [json.dumps(header)] + [json.dumps(entries[k]) for k in sorted(entries)]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()

    def add(self, entry: dict) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def build_manifest(experiment, ident: dict, entries: list[dict]) -> dict:
    """The manifest of a complete dataset, from the shard entries in shard order."""
    rows = sum(e["rows"] for e in entries)
    nbytes = sum(e["bytes"] for e in entries)
    shapes = {tuple(e["image_shape"]) for e in entries}
    assert len(shapes) == 1, f"shards disagree on the image shape: {shapes}"
    return {
        "format": FORMAT,
        "fingerprint": fingerprint(ident),
        "identity": ident,
        "experiment": experiment.to_dict(),
        "generator": {"name": experiment.generator, "version": ident["generator_version"]},
        "versions": {"fdsl": __version__, "pyarrow": pyarrow.__version__},
        "encoding": experiment.synthesis.encoding,
        "image_shape": list(shapes.pop()),
        "num_classes": experiment.data.num_classes,
        "num_instances": experiment.data.num_instances,
        "shard_rows": experiment.synthesis.shard_rows,
        "num_shards": len(entries),
        "num_rows": rows,
        "num_bytes": nbytes,
        "bytes_per_image": round(nbytes / max(rows, 1), 1),
        "content_sha256": combine_content([e["content_sha256"] for e in entries]),
        "shards": [{k: e[k] for k in ("file", "rows", "first_row", "bytes", "sha256", "content_sha256")}
                   for e in entries],
    }


# --- verification -----------------------------------------------------------------------------
def check_shard(directory: Path, entry: dict, full: bool = True) -> str | None:
    """None if the shard file matches its entry, else why not ("missing", "size ...", "sha256 ...")."""
    path = directory / entry["file"]
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"size {size} bytes, expected {entry['bytes']}"
    if full and file_sha256(path) != entry["sha256"]:
        return "sha256 mismatch (corrupted)"
    return None


def check_shards(directory: Path, entries: list[dict], full: bool = True) -> dict[str, str]:
    """{file: problem} for every bad shard (sha256 in parallel threads: hashlib releases the GIL)."""
    workers = min(8, (os.cpu_count() or 1) + 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda e: check_shard(directory, e, full), entries)
        return {e["file"]: r for e, r in zip(entries, results, strict=True) if r is not None}


@dataclasses.dataclass
class Verification:
    """Outcome of `verify_dataset`: which shards are bad and why."""

    directory: str
    complete: bool
    """True when manifest.json exists (else the folder is a partial run)."""
    num_shards: int
    bad: dict[str, str]
    """{shard file: problem}; empty when every shard matches."""
    manifest: dict | None

    @property
    def ok(self) -> bool:
        return self.complete and not self.bad


def verify_dataset(directory: str | os.PathLike, full: bool = True) -> Verification:
    """Check every shard of a folder against its manifest (or, if partial, its progress journal)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset folder {directory} does not exist")
    if not (directory / MANIFEST).is_file():
        header, entries = load_progress(directory)
        if header is None:
            raise FileNotFoundError(f"{directory / MANIFEST} not found: not a data set made by "
                                    "`fdsl generate`")
        num_shards = header["num_shards"]
        bad = check_shards(directory, [entries[k] for k in sorted(entries) if k < num_shards], full)
        bad.update({shard_name(k): "not written yet (unfinished run)"
                    for k in range(num_shards) if k not in entries})
        bad = dict(sorted(bad.items()))
        return Verification(str(directory), False, num_shards, bad, None)
    manifest = load_manifest(directory)
    bad = check_shards(directory, manifest["shards"], full)
    return Verification(str(directory), True, manifest["num_shards"], bad, manifest)
