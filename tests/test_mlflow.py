"""train.mlflow against a real `mlflow server` (SQLite backend, proxied artifacts), read back through the
REST API the MLflow UI uses: params, per-epoch metric history, final scores, tags, artifacts, the run's
status; and a server that cannot be reached is one line before anything trains.

The server is the `mlflow` command on PATH, or the one $MNISTLAB_MLFLOW_SERVER names: the mlflow package
cannot share this project's environment (its pins conflict), so it may live in a virtual environment
of its own (`python3 -m venv /tmp/mlflow && /tmp/mlflow/bin/pip install mlflow`).
"""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from conftest import REPO, run_subprocess

SERVER_ENV = "MNISTLAB_MLFLOW_SERVER"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, **query) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urlencode(query)}", timeout=10) as answer:
        return json.loads(answer.read())


def post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The base URL of a fresh MLflow server; stopped after the module."""
    command = os.environ.get(SERVER_ENV) or shutil.which("mlflow")
    if not command:
        pytest.skip(f"no MLflow server here: put `mlflow` on PATH or name it in ${SERVER_ENV}")
    root, port = tmp_path_factory.mktemp("mlflow"), free_port()
    process = subprocess.Popen(
        [command, "server", "--backend-store-uri", f"sqlite:///{root}/db.sqlite", "--artifacts-destination",
         str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1):
                    break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health in 120 s")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def runs_of(base: str, experiment: str) -> list[dict]:
    found = get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment)
    found = post(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [found["experiment"]["experiment_id"]]})
    return found.get("runs", [])


def tiny(out, mnist_root, *extra):
    return ["train", REPO / "configs" / "iter5.yaml", "--set", "train.limit_eval_batches=1", "--set",
            "train.limit_train_batches=3", "--quiet", "--out-dir", out, "--data-dir", mnist_root, *extra]


def test_a_run_is_logged_with_params_metrics_and_best_checkpoint(cli, tmp_path, mnist_root, server):
    code, _, err = cli(*tiny(tmp_path, mnist_root, "--set", "train.epochs=2", "--set",
                             f"train.mlflow={{tracking_uri: '{server}', experiment: one-run}}"))
    assert code == 0, err
    (run_dir,) = (tmp_path / "iter5").iterdir()
    (run,) = runs_of(server, "one-run")
    info, data = run["info"], run["data"]
    assert info["status"] == "FINISHED" and info["run_name"] == "iter5"  # the config's name
    params = {p["key"]: p["value"] for p in data["params"]}
    assert params["model"] == "iter5" and params["train.epochs"] == "2" and int(params["params"]) > 0
    assert not any(key.startswith("train.mlflow") for key in params)  # its URI may hold a password
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["mnistlab.run_dir"] == str(run_dir) and tags["mnistlab.dataset"] == "mnist"
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("train_loss", "val_acc", "lr", "time_s"):
        history = get(server, "/api/2.0/mlflow/metrics/get-history", run_id=info["run_id"], metric_key=key)
        points = sorted(history["metrics"], key=lambda m: m["step"])
        assert [m["step"] for m in points] == [1, 2]  # one point per epoch, on the epoch axis
        # metrics.csv keeps 6 significant digits
        assert [m["value"] for m in points] == pytest.approx([float(r[key]) for r in rows], rel=1e-5)
    summary = json.loads((run_dir / "summary.json").read_text())
    final = {m["key"]: m["value"] for m in data["metrics"]}
    assert final["final/test_acc"] == pytest.approx(summary["test_acc"])
    listed = get(server, "/api/2.0/mlflow/artifacts/list", run_id=info["run_id"])
    sizes = {f["path"]: int(f.get("file_size", -1)) for f in listed["files"]}
    assert sizes.keys() == {"best.pt", "summary.json", "curves.png"}
    assert sizes["best.pt"] == (run_dir / "best.pt").stat().st_size


def test_an_interrupted_run_ends_killed(tmp_path, mnist_root, server):
    from mnistlab.config import load_config
    from mnistlab.training.trainer import run_training

    cfg = load_config(REPO / "configs" / "iter5.yaml", [
        "train.epochs=3", "train.limit_train_batches=3", "train.limit_eval_batches=1",
        f"train.mlflow={{tracking_uri: '{server}', experiment: stopped}}"])

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, data_dir=str(mnist_root), out_dir=tmp_path, quiet=True, log=lambda *a: None, on_epoch=stop)
    (run,) = runs_of(server, "stopped")
    assert run["info"]["status"] == "KILLED"
    history = get(server, "/api/2.0/mlflow/metrics/get-history", run_id=run["info"]["run_id"], metric_key="val_acc")
    assert [m["step"] for m in history["metrics"]] == [1]


def test_an_unreachable_server_is_one_line_and_nothing_trains(tmp_path, mnist_root):
    # nothing listens there; the password must not be shown
    uri = f"http://me:s3cret-pw@127.0.0.1:{free_port()}"
    done = run_subprocess(*tiny(tmp_path, mnist_root, "--set", f"train.mlflow={{tracking_uri: '{uri}'}}"), timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.mlflow" in lines[0] and "me:***@127.0.0.1" in lines[0], done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert not (tmp_path / "iter5").exists()  # nothing trained, no run directory


def test_mlflow_true_without_a_uri_is_one_line(tmp_path, mnist_root):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    args = tiny(tmp_path, mnist_root, "--set", "train.mlflow=true")
    done = subprocess.run([sys.executable, "-m", "mnistlab", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert done.returncode == 2 and "MLFLOW_TRACKING_URI" in done.stderr and "Traceback" not in done.stderr


SWEEP = """base: iter5
study: {study}
objective: val_acc
n_trials: 2
sampler: random
pruner: none
set: {{train.epochs: 1, train.limit_train_batches: 3, train.limit_eval_batches: 1}}
space:
  train.optimizer.lr: {{low: 0.002, high: 0.01, log: true}}
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_sweep_is_a_parent_run_with_its_trials_nested(tmp_path, mnist_root, server, jobs):
    study = f"nested-{jobs}"
    path = tmp_path / f"{study}.yaml"
    path.write_text(SWEEP.format(study=study))
    done = run_subprocess("sweep", path, "--jobs", jobs, "--out-dir", tmp_path / "out", "--data-dir", mnist_root,
                          "--set", f"train.mlflow={{tracking_uri: '{server}', experiment: {study}}}", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = runs_of(server, study)
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    (parent,) = [run for run, tag in zip(runs, tags) if "mlflow.parentRunId" not in tag]
    trials = [(run, tag) for run, tag in zip(runs, tags) if "mlflow.parentRunId" in tag]
    assert len(trials) == 2 and all(tag["mlflow.parentRunId"] == parent["info"]["run_id"] for _, tag in trials)
    assert parent["info"]["status"] == "FINISHED" and parent["info"]["run_name"] == study
    assert {tag["mnistlab.trial"] for _, tag in trials} == {"0", "1"}
    assert all(run["info"]["status"] == "FINISHED" for run, _ in trials)
    lrs = {tag["mnistlab.trial"]: {p["key"]: p["value"] for p in run["data"]["params"]}["train.optimizer.lr"]
           for run, tag in trials}
    assert len(set(lrs.values())) == 2  # each trial's own parameters
    parent_tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
    best = [tag["mnistlab.trial"] for _, tag in trials if tag.get("mnistlab.best_trial") == "true"]
    assert best == [parent_tags["mnistlab.best_trial"]]


def test_train_mlflow_is_not_one_of_a_studys_settings(tmp_path):
    # a study may be continued with it turned on, off, or pointed elsewhere
    from mnistlab.experiments.sweep import study_definition
    from mnistlab.experiments.sweep_file import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(SWEEP.format(study="s"))
    plain = study_definition(load_sweep(path)[0])
    logged = study_definition(load_sweep(path, ["train.mlflow={tracking_uri: 'http://127.0.0.1:1'}"])[0])
    assert logged == plain


def test_a_server_lost_during_the_run_is_one_warning_and_training_goes_on(cli, tmp_path, mnist_root):
    # a server that answers the check and makes the run, then fails every request
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def answer(self, code: int, body: dict) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def do_GET(self):
            self.answer(200, {"experiment": {"experiment_id": "1"}} if "get-by-name" in self.path else {})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.endswith("/runs/create"):
                info = {"run_id": "r1", "artifact_uri": "mlflow-artifacts:/1/r1/artifacts"}
                self.answer(200, {"run": {"info": info}})
            else:
                self.answer(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "gone"})

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        code, out, err = cli(*tiny(tmp_path, mnist_root, "--set", "train.epochs=1", "--set",
                                   f"train.mlflow={{tracking_uri: 'http://127.0.0.1:{httpd.server_port}'}}"))
    finally:
        httpd.shutdown()
    assert code == 0, err
    warnings = [line for line in (out + err).splitlines() if "train.mlflow" in line]
    assert len(warnings) == 1 and "no longer logged" in warnings[0] and "TEMPORARILY_UNAVAILABLE" in warnings[0]
    (run_dir,) = (tmp_path / "iter5").iterdir()
    assert (run_dir / "summary.json").is_file()
