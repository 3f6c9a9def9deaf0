"""What `fdsl sweep --resume` lets Ray Tune unpickle: only state files this user's own sweep wrote.

Tune restores a sweep from pickles: `tune/tuner.pkl`, the searcher's state, and the trials' state
embedded in `experiment_state-*.json` (cloudpickle, with functions by value: no allow-list of
globals can tell Tune's own files from crafted ones). So while a sweep runs, `SealCallback` records
the sha256 of every file under `tune/` that Tune may unpickle, in `tune-seal.json` beside it,
signed with an HMAC key that stays in this user's home (`~/.config/fdsl/sweep-seal.key`, mode 0600).
It hashes Tune's driver staging copies right after each state save, before Tune uploads them to
the sweep folder, so a driver killed at any moment leaves only recorded files behind.
`check_seal` runs before a resume starts Ray: a file that is new, changed, or signed by another key
is refused with one line naming it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from fnmatch import fnmatch
from pathlib import Path

from ray import tune

from fdsl.atomic import atomic_write_text

SEAL_FILE = "tune-seal.json"
KEY_ENV = "FDSL_SEAL_KEY"
"""Path of the signing key, for a shared cluster account or a test; default ~/.config/fdsl/sweep-seal.key."""
DATA_ONLY = ("events.out.tfevents.*", "progress.csv", "result.json", "params.json", "params.pkl",
             "error.txt", ".validate_storage_marker", "tmp-*")
"""Files under `tune/` that a resume never unpickles: Tune's loggers' text output, its write-only
copy of a trial's parameters (`params.pkl`, read by nobody), and atomic-write temporaries.
Everything else (tuner.pkl, experiment and searcher state, error.pkl, checkpoints, any unknown
file) must be sealed."""


def key_path() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "fdsl" / "sweep-seal.key"


def _key(create: bool) -> bytes | None:
    path = key_path()
    if not path.is_file() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip()) if path.is_file() else None


def _sign(key: bytes, files: dict[str, list[str]]) -> str:
    return hmac.new(key, json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def _sealed_kind(name: str) -> bool:
    return not any(fnmatch(name, pattern) for pattern in DATA_ONLY)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk(root: Path):
    """(relative posix path, path) of every sealed-kind file under `root`."""
    for folder, _, names in os.walk(root):
        for name in names:
            if _sealed_kind(name):
                path = Path(folder, name)
                yield path.relative_to(root).as_posix(), path


class SealCallback(tune.Callback):
    """Records the sha256 of Tune's state files after every step of Tune's loop (its state is saved
    inside the step, into the driver staging folder, and uploaded to `tune/` after)."""

    def __init__(self):
        self._seen: dict[Path, tuple[int, int]] = {}  # path -> (mtime_ns, size) when last hashed
        self._files: dict[str, list[str]] = {}
        self._tune_dir: Path | None = None

    def __getstate__(self):  # Tune pickles its callbacks into tuner.pkl: no paths or hashes there
        return {}

    def __setstate__(self, state):
        self.__init__()

    def on_step_end(self, iteration, trials, **info):
        if trials:
            self.observe(trials)

    def on_experiment_end(self, trials, **info):
        if trials:
            self.observe(trials)

    def observe(self, trials) -> None:
        storage = trials[0].storage  # a restored run reuses this trial's staging folder (TuneController)
        tune_dir = Path(storage.experiment_fs_path)
        if self._tune_dir != tune_dir:  # first call, or a resumed sweep: keep what the folder recorded
            self._tune_dir, self._files = tune_dir, read_seal(tune_dir) or {}
        # the staging folder holds the trials' folders too; tune/ has tuner.pkl (written there
        # directly) and whatever was uploaded
        changed = False
        for root in (Path(storage.experiment_driver_staging_path), tune_dir):
            if not root.is_dir():
                continue
            for rel, path in _walk(root):
                try:
                    stat = path.stat()
                    if self._seen.get(path) == (stat.st_mtime_ns, stat.st_size):
                        continue
                    digest = _sha256(path)
                except FileNotFoundError:  # replaced while we looked: the next step sees the new one
                    continue
                self._seen[path] = (stat.st_mtime_ns, stat.st_size)
                known = self._files.setdefault(rel, [])
                if digest not in known:  # the storage copy lags the staging one by one upload
                    known.append(digest)
                    del known[:-3]
                    changed = True
        if changed:
            write_seal(tune_dir, self._files)


def seal_path(tune_dir: Path) -> Path:
    return tune_dir.parent / SEAL_FILE


def write_seal(tune_dir: Path, files: dict[str, list[str]]) -> None:
    key = _key(create=True)
    atomic_write_text(seal_path(tune_dir), json.dumps({"files": files, "hmac": _sign(key, files)},
                                                      indent=1, sort_keys=True) + "\n")


def read_seal(tune_dir: Path) -> dict[str, list[str]] | None:
    """The recorded hashes, or None when there is no seal, it is malformed or its signature fails."""
    key = _key(create=False)
    try:
        seal = json.loads(seal_path(tune_dir).read_text())
        files = seal["files"]
        ok = (isinstance(files, dict) and all(isinstance(v, list) for v in files.values())
              and key is not None and hmac.compare_digest(_sign(key, files), str(seal["hmac"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if ok else None


def check_seal(tune_dir: Path) -> int:
    """Refuse (ValueError) to resume from a `tune/` folder holding a file Tune may unpickle that this
    user's sweep did not write; returns the number of files checked."""
    what = "start the sweep anew in another --out (Tune's state is pickled: loading it would run its code)"
    if not tune_dir.is_dir():
        return 0
    files = read_seal(tune_dir)
    if files is None:
        raise ValueError(f"--resume: {seal_path(tune_dir)} is missing, damaged or signed by another key "
                         f"than {key_path()} (a sweep run by someone else, or elsewhere); {what}")
    checked = 0
    for rel, path in _walk(tune_dir):
        if _sha256(path) not in files.get(rel, []):
            raise ValueError(f"--resume: {path} is not a file this sweep wrote (not in {SEAL_FILE}); {what}")
        checked += 1
    return checked
