"""MLflow tracking against a real `mlflow server` (started here on 127.0.0.1, its own folder, stopped
by PID): runs, nested sweep trials, the UI in headless Chromium, a server that dies mid-run, and
`fdsl track` of finished folders into a SQLite store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

from fdsl.platform import tracking
from fdsl.platform.tune.sweep_config import SweepConfig
from fdsl.sweeps import check_sweep

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1 at a free port, in its own folder and process group."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(folder / "server.log", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                 "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, (folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)

    def rest(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def runs(self) -> list[dict]:
        try:
            exp = json.loads(urllib.request.urlopen(
                f"{self.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=fdsl", timeout=30).read())
        except urllib.error.HTTPError:  # no experiment yet: nothing logged
            return []
        found = self.rest("runs/search", {"experiment_ids": [exp["experiment"]["experiment_id"]],
                                          "max_results": 1000})
        return found.get("runs", [])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group: uvicorn's workers too
            self.proc.wait(timeout=30)


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _params(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _metrics(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


@pytest.fixture
def tracked(monkeypatch):
    """Tracking on in this test (the suite runs with FDSL_TRACKING=0), reset after it."""
    monkeypatch.delenv(tracking.OFF_ENV, raising=False)
    yield
    tracking.configure()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("mlflow-server"))
    yield s
    s.stop()


def test_runs_and_a_sweeps_nested_trials_reach_the_server_and_its_ui(ray_local, tracked, server, tmp_path,
                                                                     capsys):
    import fdsl

    fdsl.tracking(server.url)
    # Ray Train's local mode: the tracking is the driver's either way (no worker group start-up)
    pre = fdsl.pretrain("debug-vit", "stream", tmp_path / "pre",
                        ["pretrain.max_steps=6", "pretrain.num_workers=0", "pretrain.use_deepspeed=false",
                         "pretrain.zero_stage=0"])
    small = ["finetune.epochs=2", "finetune.samples_per_class=5", "finetune.loader_probe_images=0",
             "finetune.num_workers=0"]
    tuned = fdsl.finetune("debug-finetune", pre, tmp_path / "ft", small)
    sweep = SweepConfig(base="debug-finetune", weights="scratch",
                        overrides=[*small, "finetune.augment_cpus=0.5"],
                        space={"finetune.lr": {"grid": [1e-3, 3e-3]}, "finetune.seed": {"grid": [0, 1]}})
    from fdsl.platform.tune.sweep import run_sweep

    summary = run_sweep(sweep, "seeds", tmp_path / "sweep", check_sweep(sweep))
    assert (summary["trials"], summary["errors"]) == (4, 0)

    runs = server.runs()
    by_kind: dict[str, list[dict]] = {}
    for run in runs:
        by_kind.setdefault(_tags(run).get("fdsl.kind"), []).append(run)
    assert {k: len(v) for k, v in by_kind.items()} == {"pretrain": 1, "finetune": 1, "sweep": 1, "trial": 4}
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    (pre_run,), (ft_run,), (sweep_run,) = by_kind["pretrain"], by_kind["finetune"], by_kind["sweep"]
    params = _params(pre_run)
    assert params["pretrain.max_steps"] == "6" and params["fdsl.version"] == fdsl.__version__
    assert len(params["data.fingerprint"]) == 64 and params["name"] == "debug-vit"
    assert _tags(pre_run)["fdsl.run_dir"] == str(pre.path) and _tags(pre_run)["fdsl.family"]
    loss = json.loads(urllib.request.urlopen(
        f"{server.url}/api/2.0/mlflow/metrics/get-history?run_id={pre_run['info']['run_id']}&metric_key=loss",
        timeout=30).read())["metrics"]
    assert [m["step"] for m in loss] == list(range(1, 7))  # every step, once
    listed = json.loads(urllib.request.urlopen(
        f"{server.url}/api/2.0/mlflow/artifacts/list?run_id={pre_run['info']['run_id']}", timeout=30).read())
    assert {f["path"] for f in listed["files"]} == {"curves.png", "experiment.json"}
    ft_metrics = _metrics(ft_run)
    assert ft_metrics["finetune_top1"] == pytest.approx(tuned.top1)
    assert ft_metrics["baselines.logreg_top1"] == pytest.approx(tuned.baselines["logreg_top1"])
    assert _tags(ft_run)["fdsl.weights"] == str(pre.path) and _tags(ft_run)["fdsl.target"] == "digits"
    for trial in by_kind["trial"]:  # nested under the sweep, with their axes and figures
        assert _tags(trial)["mlflow.parentRunId"] == sweep_run["info"]["run_id"]
        assert {"finetune.lr", "finetune.seed"} <= set(_params(trial))
        assert "finetune_top1" in _metrics(trial)
    assert "sweep.space.finetune.lr.grid" in _params(sweep_run)

    # the same folders into another store, from their files (`fdsl track`); a second time: kept
    from mlflow.tracking import MlflowClient

    from fdsl.cli import main

    store = f"sqlite:///{tmp_path / 'late' / 'mlflow.db'}"
    assert main(["track", str(tmp_path / "sweep"), str(tmp_path / "ft"), "--tracking-uri", store]) == 0
    assert main(["track", str(tmp_path / "sweep"), "--tracking-uri", store]) == 0
    said = capsys.readouterr().out
    assert "(sweep, 4 trials logged)" in said and "(finetune, run " in said, said
    assert "(sweep, logged and finished before: kept)" in said, said
    client = MlflowClient(store)
    late = client.search_runs([client.get_experiment_by_name("fdsl").experiment_id])
    assert sorted(r.data.tags["fdsl.kind"] for r in late) == ["finetune", "sweep"] + ["trial"] * 4
    late_sweep = next(r for r in late if r.data.tags["fdsl.kind"] == "sweep")
    for trial in (r for r in late if r.data.tags["fdsl.kind"] == "trial"):
        assert trial.data.tags["mlflow.parentRunId"] == late_sweep.info.run_id
        assert len(client.get_metric_history(trial.info.run_id, "finetune_top1")) == 2  # both epochs

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--virtual-time-budget=20000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    page = f"{server.url}/#/experiments/{sweep_run['info']['experiment_id']}/runs"
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.sub(r"<style.*?</style>", " ", dom.stdout[dom.stdout.find("<body"):], flags=re.S)
    text = " ".join(re.sub(r"<[^>]+>", " ", body).split())  # what the page shows, once its script ran
    assert "Training runs" in text and "matching runs" in text, text[:2000]
    assert all(f" {name} " in text for name in ("pre", "ft", "sweep")), text[:2000]


@pytest.mark.drill  # a real server killed under a real command (make test-drills)
def test_a_server_killed_mid_run_costs_one_warning_and_track_logs_the_run_later(tracked, tmp_path):
    server = Server(tmp_path / "server")
    out = tmp_path / "pre"
    env = {k: v for k, v in os.environ.items() if k != tracking.OFF_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "fdsl.cli", "pretrain", "debug-vit", "--data", "stream",
                             "--out", str(out), "--tracking-uri", server.url],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not server.runs():  # the run is open once its first rows are written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(1)
        server.stop()
        _, err = proc.communicate(timeout=600)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if "MLflow tracking at" in line]
    assert len(warnings) == 1 and f"fdsl track {out}" in warnings[0], err[-3000:]
    assert (out / "model.safetensors").is_file()

    store = f"sqlite:///{tmp_path / 'late' / 'mlflow.db'}"
    res = subprocess.run([sys.executable, "-m", "fdsl.cli", "track", str(out), "--tracking-uri", store],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "pretrain, run " in res.stdout, res.stderr[-2000:]
    again = subprocess.run([sys.executable, "-m", "fdsl.cli", "track", str(out), "--tracking-uri", store],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "logged and finished before: kept" in again.stdout, again.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("fdsl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["fdsl.kind"] == "pretrain"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 40
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"curves.png", "experiment.json"}


def test_track_refuses_what_is_not_a_finished_run(tracked, tmp_path, capsys):
    from fdsl.cli import main

    assert main(["track", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path / 'db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a finished fdsl run folder" in err, err
    assert not (tmp_path / "db").exists()  # nothing logged: every folder is checked first
