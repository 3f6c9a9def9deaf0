#!/usr/bin/env python3
"""Drills on a local autoscaling multi-node Ray cluster: what breaks first on a real cluster.

    python benchmarks/cluster_drill.py [--dir runs/cluster-drill] [--skip vit_base,sweep]
    make cluster-drill

Starts a cluster of its own (`deploy/local/cluster.py up`: Ray's fake multi-node provider, a head
with CPU 0, a `synth-cpu` pool of up to 3 one-CPU nodes, a `train-cpu` pool of up to 2 nodes with
`train_gpu: 1`), submits every step with the Jobs API (what `ray job submit` uses), SIGKILLs node
raylets mid-work, and stops only the cluster it started. The drills:

    synth        generate with --set synthesis.task_resource=synth: the autoscaler starts synth-cpu
                 nodes and no train-cpu node; shards come from >= 2 nodes; content_sha256 equals a
                 single-node run's (`reference`)
    synth_kill   the same into a new folder, one synth-cpu node SIGKILLed once shards are being
                 written: the job finishes, same hash, no temporary file left, `fdsl verify` passes
    pretrain     debug-vit, 2 workers STRICT_SPREAD over the 2 train-cpu nodes (ZeRO-1), one node
                 SIGKILLed after the first checkpoint: the worker group restarts on a new node,
                 resumes from the checkpoint and ends at the configured step; the weights load in timm
    vit_base     vit-base-fractaldb-1k (86M parameters) at 32 px, 2 workers, ZeRO-2 and ZeRO-3, a few
                 steps on 8 classes rendered on the fly (--data stream): model.safetensors reproduces
                 the logits of DeepSpeed's own consolidation of the last checkpoint's partitions
    sweep        the quickstart sweep (4 fine-tuning trials), 2 at once on the 2 train-cpu nodes; one
                 node SIGKILLed while both run (the trial is retried: max_failures=1), then the
                 driver SIGKILLed once a trial has finished; `--resume` finishes it, no trial twice
    idle         the idle nodes go away after the idle timeout (15 s)

One line per drill as it ends; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DRILLS = ("synth", "synth_kill", "pretrain", "vit_base", "sweep", "idle")
DATA = ["data.num_instances=256", "synthesis.shard_rows=16"]
"""2,048 images in 128 shards of 16: enough tasks to spread over the nodes, and enough rendering for
synth_kill to kill a node mid-run (with 512 images the job once ended between two polls)."""
JOB_ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",  # a lost node is replaced in ~40 s
           "NUMBA_CACHE_DIR": str(ROOT / ".cache" / "numba")}


def _cluster_module():
    path = ROOT / "deploy" / "local" / "cluster.py"
    spec = importlib.util.spec_from_file_location("fdsl_local_cluster", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lc = _cluster_module()


def say(text: str) -> None:
    print(f"drill: {text}", flush=True)


class Watch(threading.Thread):
    """Samples the cluster's raylets every 0.5 s: the most nodes of each type alive at once, and
    every node id seen per type."""

    def __init__(self, state: dict):
        super().__init__(daemon=True)
        self.state, self.stop, self.most, self.seen = state, threading.Event(), {}, {}

    def run(self):
        while not self.stop.is_set():
            counts: dict[str, int] = {}
            for r in lc.raylets(self.state):
                counts[r["node_type"]] = counts.get(r["node_type"], 0) + 1
                self.seen.setdefault(r["node_type"], set()).add(r["node_id"])
            for kind, n in counts.items():
                self.most[kind] = max(self.most.get(kind, 0), n)
            self.stop.wait(0.5)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


class Jobs:
    """The Jobs API of the drill's cluster (the HTTP API `ray job submit` uses)."""

    def __init__(self, state: dict, logs: Path):
        from ray.job_submission import JobSubmissionClient

        self.client, self.logs = JobSubmissionClient(state["dashboard_url"]), logs

    def submit(self, name: str, args: list[str]) -> str:
        entry = " ".join([PY, "-m", *args])
        return self.client.submit_job(entrypoint=entry, submission_id=f"{name}-{int(time.time())}",
                                      runtime_env={"env_vars": JOB_ENV})

    def wait(self, job: str, timeout: float = 900) -> str:
        from ray.job_submission import JobStatus

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get_job_status(job)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            time.sleep(1)
        else:
            self.client.stop_job(job)
            status = "TIMEOUT"
        (self.logs / f"{job}.log").write_text(self.client.get_job_logs(job))
        return str(status)

    def log(self, job: str) -> str:
        return (self.logs / f"{job}.log").read_text()

    def run(self, name: str, args: list[str], timeout: float = 900) -> tuple[str, str]:
        job = self.submit(name, args)
        status = self.wait(job, timeout)
        if status != "SUCCEEDED":
            raise RuntimeError(f"job {job} ended {status}:\n{self.log(job)[-3000:]}")
        return job, self.log(job)

    def driver_pid(self, job: str) -> int | None:
        driver = self.client.get_job_info(job).driver_info
        return int(driver.pid) if driver and driver.pid else None


def kill_node(state: dict, node_type: str, prefer: set[str] | None = None) -> str:
    """Lose one live node of `node_type` (one of `prefer` if possible) as a machine is lost: SIGKILL
    its raylet and every process under it (its workers) at once; its id. Killing the raylet alone
    left its workers running a few more seconds: a training once went on from step 20 to 40 first."""
    import psutil

    nodes = [r for r in lc.raylets(state) if r["node_type"] == node_type]
    if not nodes:
        raise RuntimeError(f"no {node_type} node to kill")
    preferred = [r for r in nodes if r["node_id"] in (prefer or ())]
    pick = (preferred or nodes)[0]
    raylet = psutil.Process(pick["pid"])
    for proc in [raylet, *raylet.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # already gone with its parent
            proc.send_signal(signal.SIGKILL)
    return pick["node_id"]


def wait_for(check, timeout: float, what: str, every: float = 0.5, job: tuple | None = None):
    """Poll `check` until it returns something true; with `job` = (jobs, id), fail as soon as that
    job has ended (it will not make `check` come true any more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if job and str(job[0].client.get_job_status(job[1])) in ("SUCCEEDED", "FAILED", "STOPPED"):
            job[0].wait(job[1])
            raise RuntimeError(f"job {job[1]} ended while waiting for {what}:\n{job[0].log(job[1])[-3000:]}")
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def content_hash(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["content_sha256"]


def journal_nodes(folder: Path) -> set[str]:
    path = folder / "_progress.jsonl"
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return set()
    nodes = set()
    for line in lines:
        try:
            nodes.add(json.loads(line)["node"])
        except (ValueError, KeyError, TypeError):
            continue
    return nodes


# --- the drills ---------------------------------------------------------------------------------------
def reference(out: Path) -> dict:
    """The same data set on one node: a plain local `fdsl generate` (its own local Ray)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    start = time.monotonic()
    done = subprocess.run([PY, "-m", "fdsl.cli", "generate", "debug-fractaldb", "--out",
                           str(out / "reference"), *_sets(DATA)], env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode:
        raise RuntimeError(f"reference generate failed:\n{done.stderr[-3000:]}")
    return {"content_sha256": content_hash(out / "reference"), "seconds": round(time.monotonic() - start, 1)}


def _generate_args(folder: Path) -> list[str]:
    return ["fdsl.jobs.generate", "debug-fractaldb", "--out", str(folder),
            *_sets(["synthesis.task_resource=synth", *DATA])]


def drill_synth(state, jobs: Jobs, out: Path, ref: dict) -> dict:
    start = time.monotonic()
    with Watch(state) as watch:
        _, log = jobs.run("synth", _generate_args(out / "synth"))
    line = next((x for x in log.splitlines() if "shards per node:" in x), "")
    nodes = len(line.split(":", 2)[-1].split(",")) if line else 1
    result = {"seconds": round(time.monotonic() - start, 1), "nodes_rendering": nodes,
              "synth_nodes_max": watch.most.get("synth-cpu", 0),
              "train_nodes_max": watch.most.get("train-cpu", 0),
              "content_sha256": content_hash(out / "synth")}
    result["same_hash"] = result["content_sha256"] == ref["content_sha256"]
    # the baseline measured in the same run: the single-node generate (its own local Ray's start
    # included, as the cluster run includes its nodes' start)
    result["seconds_ratio_to_one_node"] = round(result["seconds"] / ref["seconds"], 2)
    result["ok"] = result["nodes_rendering"] >= 2 and result["train_nodes_max"] == 0 and result["same_hash"]
    return result


def drill_synth_kill(state, jobs: Jobs, out: Path, ref: dict) -> dict:
    folder = out / "synth-kill"
    start = time.monotonic()
    job = jobs.submit("synth-kill", _generate_args(folder))
    # once shards are being written: kill a node that has written one (it is rendering the next)
    writers = wait_for(lambda: journal_nodes(folder), 300, "the first shard", every=0.1, job=(jobs, job))
    killed = kill_node(state, "synth-cpu", prefer=writers)
    killed_wall, killed_at = time.time(), round(time.monotonic() - start, 1)
    status = jobs.wait(job)
    left = sorted(p.name for p in folder.glob("*.tmp*"))
    manifest = folder / "manifest.json"  # written last: after the kill, or the kill hit nothing
    mid_run = manifest.is_file() and manifest.stat().st_mtime > killed_wall
    verify = subprocess.run([PY, "-m", "fdsl.cli", "verify", str(folder)], capture_output=True, text=True,
                            timeout=300)
    result = {"seconds": round(time.monotonic() - start, 1), "killed_node": killed, "killed_at_s": killed_at,
              "status": status, "same_hash": status == "SUCCEEDED" and content_hash(folder) == ref[
                  "content_sha256"], "temporary_files_left": left, "verify_exit": verify.returncode,
              "killed_mid_run": mid_run}
    result["ok"] = (status == "SUCCEEDED" and result["same_hash"] and not left and verify.returncode == 0
                    and mid_run)
    return result


def _events(run: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


PRETRAIN_STEPS = 60


def drill_pretrain(state, jobs: Jobs, out: Path) -> dict:
    import torch

    from fdsl.platform.train.weights import load_pretrained

    run = out / "pretrain"
    start = time.monotonic()
    with Watch(state) as watch:
        job = jobs.submit("pretrain", [
            "fdsl.jobs.pretrain", "debug-vit", "--data", str(out / "synth"), "--out", str(run), *_sets([
                "pretrain.num_workers=2", "pretrain.worker_resource=train_gpu",
                "pretrain.placement_strategy=STRICT_SPREAD", f"pretrain.max_steps={PRETRAIN_STEPS}",
                "pretrain.checkpoint_every=10", "pretrain.max_failures=2", "pretrain.cpus_per_worker=1",
                "pretrain.augment_cpus=1", *DATA])])
        wait_for(lambda: any(e.get("event") == "checkpoint" and e.get("step", 0) >= 20 for e in _events(run)),
                 600, "a checkpoint at step 20", job=(jobs, job))
        killed = kill_node(state, "train-cpu")
        killed_at_step = max(e.get("step", 0) for e in _events(run))
        status = jobs.wait(job, timeout=900)
    events = _events(run)
    resumes = [e["step"] for e in events if e.get("event") == "resume"]
    done = [e for e in events if e.get("event") == "done"]
    loads = False
    if done:
        model = load_pretrained(run).eval()
        with torch.no_grad():
            loads = bool(torch.isfinite(model(torch.zeros(1, 3, 32, 32))).all())
    result = {"seconds": round(time.monotonic() - start, 1), "status": status, "killed_node": killed,
              "killed_at_step": killed_at_step, "resumed_from_steps": resumes,
              "final_step": done[-1]["step"] if done else None,
              "train_nodes_seen": len(watch.seen.get("train-cpu", ())), "weights_load_in_timm": loads}
    result["ok"] = (status == "SUCCEEDED" and bool(resumes) and result["final_step"] == PRETRAIN_STEPS
                    and loads and result["train_nodes_seen"] >= 3)
    return result


def drill_vit_base(state, jobs: Jobs, out: Path) -> dict:
    import timm
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from fdsl.platform.train.checkpoints import CKPT_TAG
    from fdsl.platform.train.weights import load_pretrained

    results = {}
    for stage in (2, 3):
        run = out / f"vit-base-zero{stage}"
        start = time.monotonic()
        jobs.run(f"vit-base-zero{stage}", [
            "fdsl.jobs.pretrain", "vit-base-fractaldb-1k", "--data", "stream", "--out", str(run),
            *_sets(["data.num_classes=8", "data.num_instances=2", "pretrain.img_size=32",
                    "pretrain.max_steps=3", "pretrain.global_batch_size=8",
                    "pretrain.num_workers=2", "pretrain.use_gpu=false", f"pretrain.zero_stage={stage}",
                    "pretrain.worker_resource=train_gpu", "pretrain.cpus_per_worker=1",
                    "pretrain.augment_cpus=1", "pretrain.checkpoint_every=3", "pretrain.warmup_epochs=0",
                    "pretrain.min_pass_images=1"])],
            timeout=1200)
        config = json.loads((run / "config.json").read_text())
        model = load_pretrained(run).eval()
        checkpoint = sorted(p for p in (run / "train").glob("checkpoint_*") if p.is_dir())[-1]
        reference = timm.create_model(config["architecture"], img_size=32, patch_size=config["patch_size"],
                                      num_classes=config["num_classes"])
        reference.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=CKPT_TAG))
        reference.eval()
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = float((model(x) - reference(x)).abs().max())
        results[f"zero{stage}"] = {"seconds": round(time.monotonic() - start, 1), "parameters_m": round(
            sum(p.numel() for p in model.parameters()) / 1e6, 1), "max_abs_logit_diff": diff}
    results["ok"] = all(r["max_abs_logit_diff"] <= 1e-5 and r["parameters_m"] > 80 for r in results.values())
    return results


def _completions(folder: Path) -> list[str]:
    try:
        lines = (folder / "completions.jsonl").read_text().splitlines()
        return [json.loads(x)["trial"] for x in lines if x.strip()]
    except OSError:
        return []


def _running_trials(folder: Path) -> int:
    count = 0
    for path in (folder / "trials").glob("*/trial.json"):
        try:
            count += json.loads(path.read_text()).get("status") == "running"
        except ValueError:
            continue
    return count


def drill_sweep(state, jobs: Jobs, out: Path) -> dict:
    folder = out / "sweep"
    args = ["fdsl.jobs.sweep", "quickstart", "--out", str(folder), *_sets([
        "weights=scratch", "max_concurrent_trials=2", "trial_resource=train_gpu", "max_failures=1"])]
    start = time.monotonic()
    with Watch(state) as watch:
        job = jobs.submit("sweep", args)
        wait_for(lambda: _running_trials(folder) >= 2 and watch.most.get("train-cpu", 0) >= 2, 600,
                 "2 trials running on 2 nodes", job=(jobs, job))
        killed = kill_node(state, "train-cpu")
        wait_for(lambda: _completions(folder), 900, "a finished trial", every=1, job=(jobs, job))
        pid = jobs.driver_pid(job)
        if pid:
            os.kill(pid, signal.SIGKILL)
        else:
            jobs.client.stop_job(job)
        first = jobs.wait(job, timeout=120)
        done_before = len(_completions(folder))
        resumed, log = jobs.run("sweep-resume", [*args, "--resume"], timeout=1200)
    completions = _completions(folder)
    trials = [json.loads(p.read_text()) for p in (folder / "trials").glob("*/trial.json")]
    result = {"seconds": round(time.monotonic() - start, 1), "killed_node": killed, "first_run": first,
              "driver_killed": bool(pid), "finished_before_resume": done_before,
              "completions": len(completions),
              "distinct_completions": len(set(completions)), "trials": len(trials),
              "done": sum(t.get("status") == "done" for t in trials),
              "restarted_trials": sum(t.get("attempts", 1) > 1 for t in trials),
              "train_nodes_max": watch.most.get("train-cpu", 0)}
    result["ok"] = (result["distinct_completions"] == result["completions"] == 4 and result["done"] == 4
                    and done_before >= 1 and result["train_nodes_max"] >= 2)
    return result


def drill_idle(state) -> dict:
    """The worker nodes go once idle; Ray Data's detached coordinator actor lives on the head
    (fdsl creates it from the driver: on a worker node it kept that node from ever being idle)."""
    from ray.util.state import list_actors

    head = {r["node_id"] for r in lc.raylets(state) if r["node_type"] == "ray.head.default"}
    alive = [("class_name", "=", "_AutoscalingCoordinatorActor"), ("state", "=", "ALIVE")]
    coordinators = {a.node_id for a in list_actors(filters=alive)}
    start = time.monotonic()
    wait_for(lambda: all(r["node_type"] == "ray.head.default" for r in lc.raylets(state)), 180,
             "idle nodes to go", every=1)
    return {"seconds_to_head_only": round(time.monotonic() - start, 1),
            "ray_data_coordinator_on_head": coordinators <= head, "ok": coordinators <= head}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(ROOT / "runs" / "cluster-drill"),
                        help="cluster state, data, runs (a new folder)")
    parser.add_argument("--skip", default="", help=f"comma-separated drills to skip, of {', '.join(DRILLS)}")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(DRILLS):
        parser.error(f"--skip: unknown drills {sorted(skip - set(DRILLS))}, expected some of {list(DRILLS)}")
    out = Path(args.dir).resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"--dir {out}: not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "jobs").mkdir()
    results: dict = {}
    start = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped drill still stops its cluster
    ref = reference(out)
    results["reference"] = ref
    say(f"reference (one node): {ref['content_sha256'][:16]} in {ref['seconds']} s")
    cluster_dir = out / "cluster"
    # in a process of its own: this one imports Ray only once the client environment is set (Ray
    # reads RAY_AUTH_MODE when it is imported)
    cluster = [PY, str(ROOT / "deploy" / "local" / "cluster.py")]
    if subprocess.run([*cluster, "up", "--dir", str(cluster_dir)], stdout=subprocess.DEVNULL).returncode:
        raise RuntimeError("the local cluster did not start")
    state = lc.load_state(cluster_dir)
    results["cluster_up_s"] = state.get("head_start_s")
    os.environ.update(lc.client_env(state))
    try:
        jobs = Jobs(state, out / "jobs")
        steps = {"synth": lambda: drill_synth(state, jobs, out, ref),
                 "synth_kill": lambda: drill_synth_kill(state, jobs, out, ref),
                 "pretrain": lambda: drill_pretrain(state, jobs, out),
                 "vit_base": lambda: drill_vit_base(state, jobs, out),
                 "sweep": lambda: drill_sweep(state, jobs, out),
                 "idle": lambda: drill_idle(state)}
        for name in DRILLS:
            if name in skip:
                continue
            try:
                results[name] = steps[name]()
            except Exception as err:  # a drill that breaks is a result: report it, go on
                results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:2000]}
            say(f"{name}: {'ok' if results[name].get('ok') else 'FAILED'} {json.dumps(results[name])[:400]}")
    finally:
        subprocess.run([*cluster, "down", "--dir", str(cluster_dir), "--keep-temp"],
                       stdout=subprocess.DEVNULL)
    results["seconds"] = round(time.monotonic() - start, 1)
    results["ok"] = all(r.get("ok") for k, r in results.items() if isinstance(r, dict) and k != "reference")
    if results["ok"]:  # the Ray logs are kept (in the temp dir) only when a drill failed
        shutil.rmtree(state["temp_dir"], ignore_errors=True)
    else:
        say(f"Ray's logs: {state['temp_dir']}/session_latest/logs; jobs' logs: {out / 'jobs'}")
    print(json.dumps(results))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
