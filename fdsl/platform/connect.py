"""Connecting to Ray: the one place fdsl calls `ray.init`.

Every command that needs Ray calls `connect(address)` first: with an address it joins that cluster,
inside `ray job submit` (RAY_ADDRESS set) it joins the job's cluster, otherwise it starts a new
local Ray of its own, never the last cluster recorded on the machine (which `ray.init()` with no
address would join, even when that cluster is dead).
"""

from __future__ import annotations

import logging
import os
import warnings


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address`, or start a local Ray; True if this call started a local Ray.

    Does nothing when Ray is already initialised (e.g. in tests or inside a Tune trial). Inside
    `ray job submit` (RAY_ADDRESS set) it joins the job's cluster.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        runtime_env = None
        if address.startswith("ray://"):  # a Ray Client: ship this package to the cluster's workers
            import fdsl

            runtime_env = {"py_modules": [fdsl]}
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except ConnectionError as err:
            raise ValueError(f"address: cannot join a Ray cluster at {address!r} ({err})") from None
        return False
    if os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`: the job's cluster
        ray.init()
        return False
    # "local": a new Ray of our own, even if another one runs on this machine
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would keep retrying for minutes)."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and friends: ray.init reports those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ValueError(f"address: cannot reach a Ray cluster at {address!r} ({err.strerror or err})") \
            from None


def quiet_data() -> None:
    """Ray Data without progress bars, execution plans and per-dataset start/finish lines on the
    console (one bar per pass per worker otherwise); its full log stays in Ray's session folder
    (`logs/ray-data/`)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:  # the console's; the session file keeps all
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
            if not any(isinstance(f, _DropNotices) for f in handler.filters):
                handler.addFilter(_DropNotices())
    # Ray Data's own use of its deprecated option, once per process: nothing a user can change
    warnings.filterwarnings("ignore", message=r".*ExecutionOptions\.exclude_resources.*")


class _DropNotices(logging.Filter):
    """Ray Data's console notice that the bars are off: fdsl turned them off itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")
