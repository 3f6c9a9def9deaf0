#!/usr/bin/env python3
"""A local *autoscaling* multi-node Ray cluster on this one machine (Ray's fake multi-node provider).

    python deploy/local/cluster.py up     [--dir runs/local-cluster] [--config deploy/local/cluster.yaml]
    python deploy/local/cluster.py status [--dir ...]      # the nodes' raylet PIDs + `ray status`
    eval "$(python deploy/local/cluster.py env [--dir ...])"      # point ray / ray job / ray.init here
    python deploy/local/cluster.py down   [--dir ...] [--keep-temp]

`up` starts `RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config=<dir>/autoscaling.yaml`
in a new session (process group) on free ports, with its own --temp-dir (/tmp/fdsl-lc-XXXX: short,
Unix socket paths must stay < 108 chars) and its own auth token (<dir>/auth_token), and records all
of it in <dir>/state.json. The autoscaler (the head's monitor process) then starts and stops worker
raylets ("fake nodes") as children of itself: same process group, same temp dir.
`down` stops only that process group and whatever else still runs out of its temp dir; it never
runs `ray stop` (which kills every Ray on the machine).

Clients need the address AND the token, e.g. (all printed by `env`):
    RAY_ADDRESS=<ip>:<gcs port>                  ray status, ray.init(), ray list ...
    RAY_API_SERVER_ADDRESS=http://127.0.0.1:<dashboard port>   ray job submit/status/logs
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<dir>/auth_token
With --temp-dir, `ray start` writes its address to <temp dir>/ray_current_cluster, not to
/tmp/ray/ray_current_cluster: a bare ray.init() does NOT find this cluster (nor is another
user's default overwritten) -- pass the address or set RAY_ADDRESS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "cluster.yaml"
DEFAULT_DIR = Path("runs/local-cluster")
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's ray CLI, next to this python
HEAD_OBJECT_STORE = 200 * 1024 * 1024


# --------------------------------------------------------------------------------------- helpers
def free_ports(n: int) -> list[int]:
    """n distinct ports that are free right now (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_ip() -> str:
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def load_state(d: Path) -> dict:
    p = d / "state.json"
    if not p.is_file():
        sys.exit(f"no cluster recorded in {p} (run `up` first)")
    return json.loads(p.read_text())


def client_env(state: dict) -> dict[str, str]:
    """What a client (ray status, ray job, ray.init) needs to reach this cluster."""
    return {
        "RAY_ADDRESS": state["address"],
        "RAY_API_SERVER_ADDRESS": state["dashboard_url"],
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": state["token_path"],
    }


def run_env(state: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN",)}
    env.update(client_env(state))
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_info(pid: int) -> tuple[int, list[str], dict[str, str]]:
    """(pgid, argv, environ) of a process; raises OSError when it is gone or not ours."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    pgid = int(stat.rsplit(")", 1)[1].split()[2])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    env_raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(e.decode(errors="replace").split("=", 1) for e in env_raw if b"=" in e)
    return pgid, [a.decode(errors="replace") for a in argv if a], env


MARKER = "FDSL_LOCAL_CLUSTER"  # set (= temp dir) in the head's environment; every Ray process inherits it


def cluster_pids(state: dict) -> list[int]:
    """Every live process of this cluster: its process group (head processes, the fake nodes'
    raylets and agents), or what carries its marker / temp dir (Ray workers, which the raylet puts
    in process groups of their own, and job drivers). Clients that only ran `env` carry neither."""
    own, tmp = state["pgid"], state["temp_dir"]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            pgid, argv, env = proc_info(pid)
        except (OSError, ValueError):
            continue
        if (pgid == own or env.get(MARKER) == tmp or any(tmp in a for a in argv)) and pid_alive(pid):
            found.append(pid)
    return sorted(found)


def raylets(state: dict) -> list[dict]:
    """The cluster's raylets: PID, node id, node type (fake nodes carry them in their environment)."""
    out = []
    for pid in cluster_pids(state):
        try:
            _, argv, env = proc_info(pid)
        except (OSError, ValueError):
            continue
        if not argv or not argv[0].endswith("/raylet"):
            continue
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        out.append({"pid": pid, "ppid": ppid, "node_id": env.get("RAY_OVERRIDE_NODE_ID_FOR_TESTING", "?"),
                    "node_type": env.get("RAY_NODE_TYPE_NAME", "ray.head.default")})
    return out


# --------------------------------------------------------------------------------------- commands
def cmd_up(args) -> int:
    d = Path(args.dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    state_path = d / "state.json"
    if state_path.is_file():
        old = json.loads(state_path.read_text())
        if cluster_pids(old):
            sys.exit(f"a cluster is already running from {state_path}: `down` it first")
        state_path.unlink()

    t0 = time.monotonic()
    ip = node_ip()
    (gcs, dashboard, agent_http, agent_grpc, metrics, runtime_env, node_manager, object_manager,
     client_server) = free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="fdsl-lc-", dir="/tmp")  # short: socket paths < 108 chars

    # The cluster's own token (not ~/.ray/auth_token, which other clusters/users may rely on).
    token_path = d / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)

    # The autoscaling config: cluster.yaml + the GCS address the fake provider must use for the
    # worker raylets it starts (it assumes <ip>:6379 otherwise).
    config = yaml.safe_load(Path(args.config).read_text())
    config["provider"]["gcs_address"] = f"{ip}:{gcs}"
    head_type = config["available_node_types"][config["head_node_type"]]
    autoscaling = d / "autoscaling.yaml"
    autoscaling.write_text(yaml.safe_dump(config, sort_keys=False))

    cmd = [RAY, "start", "--head", "--block",
           f"--autoscaling-config={autoscaling}",
           f"--temp-dir={temp_dir}",
           f"--node-ip-address={ip}",
           f"--port={gcs}",
           f"--num-cpus={int(head_type['resources'].get('CPU', 0))}",
           f"--object-store-memory={HEAD_OBJECT_STORE}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
           f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
           f"--ray-client-server-port={client_server}",
           "--min-worker-port=0", "--max-worker-port=0",  # 0: each worker binds a random free port
           "--disable-usage-stats"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update({
        MARKER: temp_dir,                     # lets `down` find every process of this cluster
        "RAY_FAKE_CLUSTER": "1",              # FakeMultiNodeProvider refuses to start without it
        # the provider subclass (fdsl_local_provider.py) is imported by the head's autoscaler
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
        # a node without a heartbeat for this long is terminated (and replaced when work waits);
        # Ray's default is 30 s, the GCS itself marks a lost node dead after ~15 s
        "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "15",
        "RAY_enable_autoscaler_v2": "0",      # v2 needs fake_multi_node/example.yaml (not in the wheel)
        "AUTOSCALER_UPDATE_INTERVAL_S": str(args.update_interval),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),  # inherited by the monitor, hence the fake nodes
        "RAY_USAGE_STATS_ENABLED": "0",
        # SIGTERM to `ray start --block` (= `down`) would first drain the head for up to 30 s.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    })
    with open(d / "head.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(d))
    state = {
        "address": f"{ip}:{gcs}",
        "dashboard_url": f"http://127.0.0.1:{dashboard}",
        "temp_dir": temp_dir,
        "token_path": str(token_path),
        "autoscaling_config": str(autoscaling),
        "head_log": str(d / "head.log"),
        "ray_start_pid": proc.pid,
        "pgid": proc.pid,  # start_new_session: the group (and session) leader is `ray start`
        "ports": {"gcs": gcs, "dashboard": dashboard, "dashboard_agent_listen": agent_http,
                  "dashboard_agent_grpc": agent_grpc, "metrics_export": metrics,
                  "runtime_env_agent": runtime_env, "node_manager": node_manager,
                  "object_manager": object_manager, "ray_client_server": client_server},
        "started_at": time.time(),
    }
    state_path.write_text(json.dumps(state, indent=2))

    # `ray start` writes <temp dir>/ray_current_cluster once the head is up; the monitor comes next.
    marker = Path(temp_dir) / "ray_current_cluster"
    deadline = time.monotonic() + args.timeout
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"head did not start (rc={proc.poll()}); see {d / 'head.log'}:", file=sys.stderr)
            print((d / "head.log").read_text()[-3000:], file=sys.stderr)
            cmd_down(argparse.Namespace(dir=str(d), keep_temp=True, quiet=True))
            return 1
        time.sleep(0.5)
    state["head_start_s"] = round(time.monotonic() - t0, 1)
    session = Path(temp_dir) / "session_latest"
    state["session_dir"] = str(session.resolve()) if session.exists() else None
    state["raylets"] = raylets(state)
    state_path.write_text(json.dumps(state, indent=2))
    print(f"head up in {state['head_start_s']} s: {state['address']}  dashboard {state['dashboard_url']}")
    print(f"temp dir {temp_dir}; state {state_path}; autoscaler log "
          f"{temp_dir}/session_latest/logs/monitor.log")
    print(f'clients: eval "$({sys.executable} {Path(__file__)} env --dir {args.dir})"')
    return 0


def cmd_env(args) -> int:
    state = load_state(Path(args.dir).resolve())
    for k, v in client_env(state).items():
        print(f"export {k}={v}")
    return 0


def cmd_status(args) -> int:
    state = load_state(Path(args.dir).resolve())
    pids = cluster_pids(state)
    alive = pid_alive(state["ray_start_pid"])
    print(f"cluster {state['address']}  dashboard {state['dashboard_url']}  temp dir {state['temp_dir']}")
    print(f"ray start (pgid {state['pgid']}): {'running' if alive else 'GONE'}; {len(pids)} processes")
    if not pids:
        return 1
    # The nodes = raylets (fake worker nodes: children of the monitor process). `kill -9 <pid>`
    # of a worker's raylet loses that node.
    print("raylets:")
    for r in raylets(state):
        print(f"  pid {r['pid']:>7}  parent {r['ppid']:>7}  {r['node_type']:<17} node_id {r['node_id']}")
    sys.stdout.flush()
    return subprocess.call([RAY, "status", f"--address={state['address']}"], env=run_env(state))


def cmd_down(args) -> int:
    d = Path(args.dir).resolve()
    state = load_state(d)
    pgid = state["pgid"]
    # 1. SIGTERM to `ray start --block` only: it tears its head processes down in order (GCS,
    #    dashboard, monitor, raylet; no drain wait: up runs it with
    #    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0). A SIGTERM to the whole group at once instead
    #    leaves gcs_server and `ray start` hanging (seen: > 20 s).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(state["ray_start_pid"], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pid_alive(state["ray_start_pid"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    # 2. What is left: the fake worker nodes (raylets started by the monitor, same process group,
    #    orphaned once the monitor is gone), their agents and workers; then anything run out of the
    #    temp dir. SIGTERM, then SIGKILL.
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not cluster_pids(state):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for pid in cluster_pids(state):  # stragglers outside the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while cluster_pids(state) and time.monotonic() < deadline:
            time.sleep(0.3)
    left = cluster_pids(state)
    if left:
        print(f"still running: {left}", file=sys.stderr)
        return 1
    if not args.keep_temp:
        shutil.rmtree(state["temp_dir"], ignore_errors=True)
    (d / "state.json").rename(d / "state.down.json")
    if not getattr(args, "quiet", False):
        print(f"stopped cluster {state['address']} (pgid {pgid})"
              + ("" if args.keep_temp else f"; removed {state['temp_dir']}"))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "env"):
        s = sub.add_parser(name)
        s.add_argument("--dir", default=str(DEFAULT_DIR), help="where state.json, auth_token, logs go")
        if name == "up":
            s.add_argument("--config", default=str(DEFAULT_CONFIG))
            s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the head")
            s.add_argument("--update-interval", type=int, default=2,
                           help="AUTOSCALER_UPDATE_INTERVAL_S: seconds between autoscaler rounds")
        if name == "down":
            s.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
