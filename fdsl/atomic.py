"""Atomic file writes: a temporary name in the same folder, then one `os.replace`.

A reader never sees a half-written file, and a failed write leaves nothing behind (the temporary
file is removed). Every file fdsl writes as a result goes through here. No Ray, torch or numpy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


class OutputError(OSError):
    """An output that could not be written for a reason the user can fix (no space left, a read-only
    folder); the message names the path and what to do. The CLI reports it in one line."""


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """The absolute `path` if it can be created or written as a folder, without creating anything:
    OutputError when it is a file, or when its nearest existing folder is read-only (a read-only
    file system included) or not a folder."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what}: {path} is a file, expected a folder; choose a folder path")
    base = path
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{what}: {base} (on the way to {path}) is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: cannot write in {base} (read-only or no permission); choose a "
                          "writable folder")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The temporary name keeps the suffix (`.x.png.<id>.tmp.png` for `x.png`), so writers that pick
    the format from the suffix (matplotlib, PIL) still do.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp{final.suffix}")
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
    except OSError as err:  # a write() that hit a full disk names no file: this one is `path`
        if err.errno in MACHINE_ERRNOS and not err.filename:
            raise OSError(err.errno, err.strerror, str(final)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (fsync'ed before the rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (fsync'ed before the rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


LOCK_FILE = ".lock"
"""The lock file of an output folder (`owned_folder`)."""


@contextlib.contextmanager
def owned_folder(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """One owner per output folder for a command's lifetime (resume included): an exclusive `flock`
    on `folder/.lock`, which names its holder (pid, host, command, since). A second command on the
    same folder is refused at once, FileExistsError naming the holder; a holder that died leaves no
    lock (the kernel releases it), so the folder is free again. A folder this call created and the
    command left empty (refused before it wrote anything) is removed again."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held for the body, closed below
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"{folder}: in use by another fdsl command ({_holder(handle)}); wait for "
                                  "it to finish, stop it, or choose another folder") from None
        _write_holder(handle, command)
        yield folder
    finally:
        handle.close()  # releases the lock
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # refused before writing: no trace
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()
                folder.rmdir()


@contextlib.contextmanager
def waiting_lock(path: Path, command: str, wait_s: float) -> Iterator[None]:
    """An exclusive `flock` on `path` for the body, waited for up to `wait_s` seconds (polling), its
    holder written into it; TimeoutError naming the holder after that. A holder that died holds
    nothing (the kernel releases its lock; on a network file system once the server's lease ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path}: still held by {_holder(handle)} after {wait_s:.0f} s; if "
                                       "that process is gone, delete this lock file and resume") from None
                time.sleep(min(1.0, max(wait_s / 10, 0.01)))
        _write_holder(handle, command)
        yield  # closing the file releases the lock


def _holder(handle) -> str:
    """Who holds the lock of `handle`'s file, in words (its last holder's line)."""
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        holder = {}
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"`{holder.get('command', '?')}` since {holder.get('since', '?')}")


def _write_holder(handle, command: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    handle.flush()


MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
"""The machine's refusals a user fixes (full disk, quota, read-only or forbidden folder): one line."""


def machine_error(err: BaseException, out=None) -> str | None:
    """The one-line message of a refusal of the machine behind `err` (MACHINE_ERRNOS: itself, its
    cause, or a Ray worker's error, which Ray wraps), or None."""
    found = _machine_oserror(err)
    if found is None:
        return None
    where = found.filename or out or "the output folder"
    return (f"{found.strerror} writing {where}; free space there or make it writable (what is complete "
            "is kept: see docs/reliability.md)" + (", or choose another --out" if out else ""))


def _machine_oserror(err: BaseException, depth: int = 0) -> OSError | None:
    if isinstance(err, OSError) and err.errno in MACHINE_ERRNOS:
        return err
    if depth > 5:
        return None
    inner = [err.__cause__, err.__context__, getattr(err, "cause", None),
             *getattr(err, "worker_failures", {}).values()]
    for e in inner:
        if isinstance(e, BaseException) and (found := _machine_oserror(e, depth + 1)):
            return found
    return None
