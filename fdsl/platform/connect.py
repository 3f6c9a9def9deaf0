"""Connecting to Ray: the one place fdsl calls `ray.init`.

Every command that needs Ray calls `connect(address)` first: with an address it joins that cluster,
inside `ray job submit` (RAY_ADDRESS set) it joins the job's cluster, while `fdsl up` runs it joins
the local Ray that `fdsl up` holds (`fdsl.up`), otherwise it has a new local Ray of its own: the one
the `fdsl` command started beside its imports (`fdsl.holder`), or one started here. Never the last
cluster recorded on the machine (which `ray.init()` with no address would join, even when that
cluster is dead).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import ray

import fdsl
from fdsl import holder, up
from fdsl.platform import console, interrupt

_OWN = {"ray": False}
"""Whether this process's Ray connection was made by `connect` (not by its caller: a test, a Tune
trial, a notebook that called ray.init itself)."""


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address`, or start a local Ray; True if this call started a local Ray.

    Does nothing when Ray is already initialised (e.g. in tests or inside a Tune trial). Inside
    `ray job submit` (RAY_ADDRESS set) it joins the job's cluster.
    """
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        runtime_env = None
        if address.startswith("ray://"):  # a Ray Client: ship this package to the cluster's workers

            runtime_env = {"py_modules": [fdsl]}
        try:
            ray.init(address=address, runtime_env=runtime_env, **console.before_ray_init())
        except ConnectionError as err:
            raise ValueError(f"address: cannot join a Ray cluster at {address!r} ({err})") from None
        _connected()
        console.ray_connected(None)
        if not address.startswith("ray://"):  # a Ray Client's driver runs on the head already
            _pin_ray_data_coordinator()
        return False
    if os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`: the job's cluster
        ray.init(**console.before_ray_init())
        _connected()
        console.ray_connected(None)
        _pin_ray_data_coordinator()
        return False
    if (held := up.attached(num_cpus)) is not None:  # the local Ray of `fdsl up`: joined, left running
        _join_held(held, "`fdsl down` stops it, or FDSL_UP=0 runs without it")
        console.ray_connected(None)
        return False
    if (held := holder.take(num_cpus)) is not None:  # this command's own, started at its first line
        _join_held(held)
        console.ray_connected(Path(held["ray_logs"]))
        return True
    start_local(num_cpus)
    _connected()
    return True


def _join_held(held: dict, advice: str | None = None) -> None:
    """Join a local Ray that a holder process (`hold_local`) started. Failing that: a one-line error
    with `advice` (`fdsl up`'s Ray, which the user can stop), or, for the command's own, Ray's error
    with its traceback, as when `start_local` fails."""
    if held["auth_mode"] == "token" and os.environ.setdefault("RAY_AUTH_MODE", "token") == "token":
        try:  # the mode is read once per process: re-read it, as Ray does when it turns token auth on
            from ray._raylet import Config
        except ImportError:  # another Ray version
            pass
        else:
            Config.initialize("")
    try:
        ray.init(address=held["gcs_address"], **console.before_ray_init())
    except ConnectionError as err:
        if advice is None:
            raise
        raise ValueError(f"cannot join the local Ray at {held['gcs_address']} ({err}); {advice}") from None
    _connected()


def hold_local(num_cpus: int | None = None) -> None:
    """A holder (`fdsl up`'s, `fdsl.holder`'s): start a local Ray as a command would, print one JSON
    line (its address, dashboard, auth mode, CPUs, logs), keep it until stdin closes, then stop it
    (also when its reader is gone before the line). Ray's own lines go to its stderr unfiltered: the
    command's log, `fdsl up`'s log, or the console with --verbose."""
    start_local(num_cpus, quiet=False)
    node = ray._private.worker.global_worker.node
    try:
        print(json.dumps({"gcs_address": node.gcs_address,
                          "dashboard": f"http://{node.webui_url}" if node.webui_url else "none",
                          "auth_mode": os.environ.get("RAY_AUTH_MODE", "disabled"),
                          "num_cpus": int(ray.cluster_resources().get("CPU", 0)),
                          "ray_logs": node.get_logs_dir_path()}), flush=True)
        sys.stdin.read()
    except OSError:  # the command ended first (BrokenPipeError)
        pass
    finally:
        ray.shutdown()


def _connected() -> None:
    _OWN["ray"] = True
    interrupt.reinstall()  # ray.init installs a SIGTERM handler of its own


def release(wait: bool = True) -> None:
    """End this process's Ray connection if `connect` made it: a local Ray it started stops (its
    workers with it); a cluster it joined keeps running, and the actors and tasks this driver owns
    there end. A Ray its caller started is left alone. A local Ray that `fdsl.holder` holds for this
    command is told to stop; `wait=False`: the command's process ends next, so it neither waits for
    that stop nor disconnects first (0.3 s)."""
    if _OWN["ray"] and ray.is_initialized() and (wait or not holder.holding()):
        ray.shutdown()
    _OWN["ray"] = False
    holder.stop(wait)


def _pin_ray_data_coordinator() -> None:
    """Create Ray Data's autoscaling coordinator from this driver, i.e. on its node (a job's driver
    runs on the head), before any worker runs Ray Data.

    The coordinator is a *detached* actor that Ray Data creates on the node of the first process
    that executes a dataset, and it lives on after every job. When that process was a sweep trial
    or a Train worker, it sat on a training node, which then never counted as idle and was never
    scaled down (seen in the local cluster drill: a train-cpu node kept for good; on AWS a GPU
    node). Made here first, every later lookup (`get_if_exists`) finds it on the head."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:  # another Ray version: it has no such actor, or keeps it elsewhere
        return
    get_or_create_autoscaling_coordinator()


def starts_local(address: str | None = None) -> bool:
    """Whether `connect(address)` would start a local Ray (no address, not inside a Ray job, no
    Ray in this process yet): then the run must fit this machine."""
    return not address and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()


LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
"""Ray Train settings of a local Ray (one node of this machine, which no autoscaler drains): no
preemption watcher (an actor per run that polls for node drains every 5 s), and the controller
polls its workers every 0.5 s instead of 2 s (it sees a started or finished group sooner). A
1-worker debug run: 33 s -> 28-29 s on 2 cores (docs/benchmarks.md). Clusters keep Ray's defaults."""


def start_local(num_cpus: int | None = None, quiet: bool = True) -> None:
    """A new local Ray of our own, even if another one runs on this machine, with its dashboard on
    127.0.0.1 only (a free port): Ray Train's PlacementGroupCleaner asks the State API whether the
    Train controller lives (without a dashboard it warns every second and could never remove a dead
    run's placement group). Its processes get RAY_API_SERVER_ADDRESS, so that the State API finds
    this Ray's dashboard even when another Ray runs on the machine, and LOCAL_TRAIN_ENV. `quiet=False`
    (a holder): Ray's console output as Ray prints it."""
    port = _free_port()
    # inherited by the GCS, raylet and workers (a variable the user set is left as it is)
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}",
           **{k: v for k, v in LOCAL_TRAIN_ENV.items() if k not in os.environ}}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=port, **(console.before_ray_init() if quiet else {"log_to_driver": False}))
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    node = ray._private.worker.global_worker.node
    console.ray_connected(Path(node.get_logs_dir_path()))


def local_num_cpus() -> int:
    """The CPUs a local Ray started by `connect` gets: Ray's own count for this machine (cgroup
    limits included)."""
    try:
        from ray._private.utils import get_num_cpus
    except ImportError:  # another Ray version keeps it elsewhere
        return os.cpu_count() or 1
    return int(get_num_cpus())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would keep retrying for minutes)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and friends: ray.init reports those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ValueError(f"address: cannot reach a Ray cluster at {address!r} ({err.strerror or err})") \
            from None
