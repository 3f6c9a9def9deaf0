"""`fdsl up` / `fdsl down`: a local Ray and a warm Python kept for a day of commands.

A command that trains pays fixed costs around its loop: its imports (torch, timm, Ray, scikit-learn:
5-8 s on 2 cores), its own local Ray's start (3-4 s) and stop. `fdsl up` pays them once:

- a **holder** process starts a local Ray as every command would (`connect.hold_local`: dashboard
  on 127.0.0.1, the same settings) and keeps it until it is told to stop;
- a **warm process** (the daemon, `python -m fdsl.jobs.up`) imports what the commands import, then
  waits on a Unix socket in the state folder (`FDSL_UP_DIR`, default ~/.cache/fdsl/up; the folder
  0700, the socket 0600, and a connection from another user is refused).

A command that runs on Ray (`RUN_COMMANDS` of the CLI) then hands itself to the warm process
(`forward`): the client sends its arguments, working directory and environment, and passes its own
stdin, stdout and stderr (SCM_RIGHTS); the warm process forks a child that takes them over and runs
the command as the CLI would, attached to the held Ray (`connect` joins it: `attached`). The client
forwards Ctrl-C, SIGTERM and SIGHUP to the child and exits with its exit code; if the client dies,
the child gets SIGTERM (a run stops as on Ctrl-C, resumable). A command runs in its own process
when there is no `fdsl up`, with FDSL_UP=0, or when the warm process would not run it as its own
process would: another Python or fdsl source, code changed since `fdsl up` (a note says so), or a
variable read at import time differs (`IMPORT_ENV`).

`fdsl down` stops the warm process and its holder, whose Ray stops with it: by their own PIDs, never
`ray stop`, which ends every Ray on the machine. The warm process also stops by itself after
`--idle-hours` without a command.

This module imports the standard library only: every command's client reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import fdsl
from fdsl.holder import HOLD

UP_DIR_ENV = "FDSL_UP_DIR"
UP_ENV = "FDSL_UP"
"""FDSL_UP=0: commands neither hand themselves to the warm process nor join its Ray."""
START_ENV = "FDSL_UP_START_ENV"
"""The names of `fdsl up`'s environment variables, passed to the warm process (whose own imports,
Ray's among them, add some before it can look)."""
CHILD_ENV = "FDSL_UP_CHILD"
"""Set in a command the warm process runs (the warm process's PID): it never forwards again."""
STATE = "up.json"
SOCKET = "warm.sock"
LOG = "up.log"
IMPORT_ENV = ("CUDA_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "NUMBA_", "TORCH", "PYTORCH_", "RAY_",
              "PYTHON", "LD_", "MPLBACKEND", "HF_", "TIMM_")
"""Prefixes of environment variables that libraries read when they are imported: a command whose
values differ from the warm process's runs in its own process."""
WARM_MODULES = ("torch", "torchvision", "timm", "ray", "ray.data", "ray.train", "ray.train.torch",
                "ray.tune", "sklearn.linear_model", "sklearn.neighbors", "matplotlib.pyplot", "PIL.Image",
                "pyarrow.parquet",
                "fdsl.platform.train.pretrain", "fdsl.platform.train.finetune", "fdsl.platform.train.ssl",
                "fdsl.platform.tune.sweep", "fdsl.platform.data.synthesis", "fdsl.quickstart", "fdsl.sweeps")
"""What the warm process imports once (what the run commands import; mlflow stays lazy, as in a
command)."""


def state_dir() -> Path:
    return Path(os.environ.get(UP_DIR_ENV) or Path.home() / ".cache" / "fdsl" / "up")


def _alive(pid: int) -> bool:
    """Whether `pid` is a live fdsl warm process (not a PID the system gave to another program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fdsl.jobs.up" in cmdline


def read_state() -> dict | None:
    """The running `fdsl up`'s state (its PIDs, Ray address, socket), or None when none runs."""
    try:
        state = json.loads((state_dir() / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and _alive(int(state.get("pid", 0))) else None


def attached(num_cpus: int | None = None) -> dict | None:
    """The state of the `fdsl up` whose Ray a command with no address should join, or None: none
    runs, FDSL_UP=0, or the command asks for another number of CPUs than it holds."""
    if os.environ.get(UP_ENV) == "0":
        return None
    state = read_state()
    if state is None or (num_cpus is not None and num_cpus != state["num_cpus"]):
        return None
    return state


def code_stamp() -> str:
    """A digest of fdsl's source files (path, size, modification time): it changes with any edit."""
    root = Path(fdsl.__file__).resolve().parent
    h = hashlib.sha256(str(root).encode())
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def import_env(env=None) -> dict:
    """The variables of `IMPORT_ENV` in `env` (default: this process's), without RAY_AUTH_MODE (a
    command joining the held Ray takes its mode)."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.startswith(IMPORT_ENV) and k != "RAY_AUTH_MODE"}


_ADDED: dict[str, str] = {}
"""The warm process's environment variables that its imports set (e.g. KMP_INIT_AT_FORK)."""


# --- the client: a command hands itself to the warm process ----------------------------------------
def forward(argv: list[str]) -> int | None:
    """Run `fdsl argv` in the warm process of `fdsl up` and return its exit code; None: run it here."""
    if os.environ.get(CHILD_ENV) or os.environ.get(UP_ENV) == "0" or (state := read_state()) is None:
        return None
    here, there = import_env(), state["import_env"]
    differ = sorted(k for k in {*here, *there} if here.get(k) != there.get(k))
    why = ("another Python" if state["python"] != sys.executable else
           f"{', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from `fdsl up`'s" if differ else
           "fdsl's code changed since `fdsl up`" if state["code"] != code_stamp() else None)
    if why:
        print(f"fdsl: {why}: this command runs in its own process (`fdsl down && fdsl up` refreshes the "
              "warm one)", file=sys.stderr)
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(state["socket"])
        socket.send_fds(conn, [b"F"], [0, 1, 2])
        _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
        reply = conn.makefile("r")
        child = int(json.loads(reply.readline())["pid"])
    except (OSError, ValueError, KeyError):
        conn.close()
        return None
    forwarded = {}

    def relay(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        forwarded[signum] = signal.signal(signum, relay)
    try:
        line = reply.readline()
    finally:
        for signum, handler in forwarded.items():
            signal.signal(signum, handler)
        conn.close()
    if not line:
        print(f"fdsl: the warm process of `fdsl up` ended during this command (its log: "
              f"{state_dir() / LOG})", file=sys.stderr)
        return 1
    return int(json.loads(line)["exit"])


def _send(conn: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    conn.sendall(struct.pack("!Q", len(data)) + data)


def _receive(conn: socket.socket) -> dict:
    """`_send`'s message (ValueError if the client left before it was whole)."""
    stream = conn.makefile("rb")
    head = stream.read(8)
    return json.loads(stream.read(struct.unpack("!Q", head)[0]) if len(head) == 8 else b"")


# --- `fdsl up` and `fdsl down` ----------------------------------------------------------------------
def up(num_cpus: int | None, idle_hours: float, timeout_s: float = 180.0, log=print) -> int:
    """Start the warm process (and its local Ray) unless one runs; 0 when one runs at the end."""
    if (state := read_state()) is not None:
        log(f"fdsl up: already up since {state['started']} (pid {state['pid']}, {state['num_cpus']} CPUs, "
            f"dashboard {state['dashboard']}); `fdsl down` stops it")
        return 0
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    (folder / STATE).unlink(missing_ok=True)
    command = [sys.executable, "-m", "fdsl.jobs.up", "--idle-hours", str(idle_hours)]
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    env = {**os.environ, START_ENV: json.dumps(sorted(os.environ))}  # what the imports add is told apart
    with open(folder / LOG, "ab") as out:
        daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                  start_new_session=True)  # not in the terminal's group: Ctrl-C spares it
    deadline = time.monotonic() + timeout_s
    while (state := read_state()) is None or state["pid"] != daemon.pid:
        if daemon.poll() is not None or time.monotonic() > deadline:
            if daemon.poll() is None:
                daemon.terminate()
            tail = (folder / LOG).read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"fdsl up: the warm process did not start; its log {folder / LOG} ends: "
                               + " | ".join(tail))
        time.sleep(0.2)
    log(f"fdsl up: a local Ray ({state['num_cpus']} CPUs, dashboard {state['dashboard']}) and a warm "
        f"Python (pid {state['pid']}) serve the commands that run on Ray; `fdsl down` stops them "
        f"(log: {folder / LOG})")
    return 0


def down(timeout_s: float = 60.0, log=print) -> int:
    """Stop the warm process and its Ray (their own PIDs only); 0 also when none runs."""
    state = read_state()
    if state is None:
        (state_dir() / STATE).unlink(missing_ok=True)
        log("fdsl down: no `fdsl up` runs")
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):  # its process group is its own (start_new_session): nothing else is in it
        os.killpg(pid, signal.SIGKILL)
    (state_dir() / STATE).unlink(missing_ok=True)
    log(f"fdsl down: stopped the warm process (pid {pid}) and its local Ray")
    return 0


# --- the warm process ---------------------------------------------------------------------------------
def serve(run: Callable[[list[str]], int], hold: list[str], num_cpus: int | None, idle_hours: float) -> int:
    """The warm process: start the holder (`hold`, a command line), import `WARM_MODULES`, then run
    each command handed over on the socket by `run(argv)` in a forked child, until SIGTERM or
    `idle_hours` without a command. Single-threaded, so that every fork copies a quiet process."""
    folder = state_dir()
    holder = subprocess.Popen(hold + ([] if num_cpus is None else ["--num-cpus", str(num_cpus)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = holder.stdout.readline()
    if not line:
        print(f"fdsl up: the local Ray did not start (exit {holder.wait()})", file=sys.stderr)
        return 1
    ray_state = json.loads(line)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    started_with = set(json.loads(os.environ.pop(START_ENV, "[]")))  # `fdsl up`'s variables
    before = {k: v for k, v in os.environ.items() if k in started_with}
    for name in WARM_MODULES:
        importlib.import_module(name)
    # variables the imports set for themselves (torch's, Ray's): each command keeps them
    _ADDED.update({k: v for k, v in os.environ.items() if k not in started_with})
    path = folder / SOCKET
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o600)
    listener.listen(16)
    state = {"pid": os.getpid(), "holder_pid": holder.pid, "socket": str(path), "python": sys.executable,
             "code": code_stamp(), "import_env": import_env(before), "version": fdsl.__version__,
             "started": time.strftime("%Y-%m-%d %H:%M:%S"), **ray_state}  # its CPUs, address, dashboard
    (folder / f".{STATE}.tmp").write_text(json.dumps(state, indent=1))
    (folder / f".{STATE}.tmp").replace(folder / STATE)
    print(f"fdsl up: serving on {path} (Ray at {ray_state['gcs_address']})", flush=True)
    try:
        _loop(listener, run, holder, idle_hours, stopping)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if json.loads((folder / STATE).read_text()).get("pid") == os.getpid():
                (folder / STATE).unlink()
        holder.stdin.close()  # the holder stops its Ray and exits
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
    print("fdsl up: stopped", flush=True)
    return 0


def _loop(listener, run, holder, idle_hours: float, stopping: list) -> None:
    children: dict[int, socket.socket] = {}  # child pid -> its client's connection
    clients: dict[socket.socket, int] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    last = time.monotonic()
    while not stopping and holder.poll() is None:
        for key, _ in sel.select(timeout=0.2):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                # the child keeps none of the warm process's other ends: each must see its peer go
                pid = _start(conn, [listener, *clients, holder.stdin, holder.stdout], run)
                if pid is None:
                    conn.close()
                    continue
                children[pid], clients[conn] = conn, pid
                sel.register(conn, selectors.EVENT_READ)
                last = time.monotonic()
            else:  # a client's end closed before its command did: stop the command as on SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(clients[key.fileobj], signal.SIGTERM)
                sel.unregister(key.fileobj)
        for pid in list(children):  # each child by its PID: waitpid(-1) would also reap the holder
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
            conn = children.pop(pid)
            clients.pop(conn, None)
            with contextlib.suppress(OSError, KeyError, ValueError):
                sel.unregister(conn)
            with contextlib.suppress(OSError):
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            conn.close()
            last = time.monotonic()
        if not children and time.monotonic() - last > idle_hours * 3600:
            print(f"fdsl up: {idle_hours} h without a command", flush=True)
            break
    for pid in children:  # `fdsl down` during a command: it stops as on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _start(conn: socket.socket, others: list, run) -> int | None:
    """Fork a child that runs the command the client on `conn` sends; its PID, or None."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            return None
        conn.settimeout(10)
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        request = _receive(conn)
        conn.settimeout(None)
    except (OSError, ValueError, ConnectionError):
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:  # the child: never returns
        for other in others:
            other.close()
        _child(conn, fds, request, run)
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # a client gone already: its command sees SIGTERM next
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    return pid


def _child(conn: socket.socket, fds: list[int], request: dict, run) -> None:
    code = 1
    try:
        conn.close()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update({k: v for k, v in _ADDED.items() if k not in request["env"]})
        os.environ[CHILD_ENV] = str(os.getppid())
        sys.argv = ["fdsl", *request["argv"]]
        code = run(request["argv"])
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    except BaseException:  # a bug keeps its traceback, on the client's stderr
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def serve_main(run: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """`python -m fdsl.jobs.up`: the warm process."""
    p = argparse.ArgumentParser(prog="fdsl.jobs.up")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--idle-hours", type=float, default=12.0)
    args = p.parse_args(argv)
    return serve(run, HOLD, args.num_cpus, args.idle_hours)
