"""A run on an MLflow tracking server (train.mlflow), so MLflow's UI lists and compares runs.

It speaks MLflow's REST API (/api/2.0/mlflow/...) with the standard library: no package to install, and
none that could pin another's version (the mlflow package's server pins conflict with this project's).

What is logged:
- when the run opens: the resolved config flattened to dotted params (as TensorBoard's hparams, without
  train.mlflow itself: its URI may hold a password) with `model` and `params` (the parameter count), and
  the tags mnistlab.run_dir, mnistlab.version and mnistlab.dataset;
- per epoch (step = epoch): metrics.csv's row: train_loss, train_acc, val_loss, val_acc, lr, time_s, ...;
- at the end: the final scores (final/test_acc, final/test_loss, ...), then best.pt, summary.json and
  curves.png as artifacts (the server must proxy artifacts: `mlflow server`'s default since MLflow 2);
  the run is FINISHED. A run that fails is FAILED, one interrupted (Ctrl-C, a pruned trial) KILLED.

What holds:
- A server that cannot be reached, or refuses the experiment, is one line before any data loads.
- A server lost mid-run costs the run nothing: one warning line, and the rest of it is not logged.
- A URI's password is never shown (errors.masked); user:password in it, or MLFLOW_TRACKING_USERNAME and
  MLFLOW_TRACKING_PASSWORD, are sent as HTTP basic authentication, and MLFLOW_TRACKING_TOKEN as a bearer token.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from .._version import __version__
from ..runfolder import BEST, CURVES, SUMMARY
from ..errors import UserError, masked, one_line, scrub
from .tb_logger import hparams_of

URI_ENV = "MLFLOW_TRACKING_URI"
CHECK_TIMEOUT_S = 5  # the reachability check before training: a wrong host fails fast
TIMEOUT_S = 60  # any later request (a large best.pt upload included)
BATCH = 100  # params per runs/log-batch request (the server's limit)
PARAM_CHARS = 500  # a param's value is cut to what every MLflow server version stores
ARTIFACTS = (BEST, SUMMARY, CURVES)
FINAL_KEYS = ("test_acc", "test_loss", "val_acc", "val_loss", "best_epoch", "epochs_run", "train_time_s")


class MlflowError(Exception):
    """A request the server refused or could not answer (its text has no password)."""


class MlflowServer:
    """The tracking server at one URI: JSON requests with its credentials."""

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        self.shown = masked(uri)
        self.uri = uri
        user = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
        host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""
        self.base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self.headers = {}
        if user is not None and password is not None:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {pair}"
        elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"

    def call(self, method: str, path: str, body=None, timeout: float = TIMEOUT_S, raw: bytes | None = None):
        """The JSON answer to one request; MlflowError with the server's own message if it fails."""
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Content-Type": "application/octet-stream" if raw is not None
                   else "application/json"}
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                text = answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            raise MlflowError(self.clean(f"HTTP {e.code}: {server_message(e)}")) from None
        except (OSError, ValueError) as e:  # refused, unknown host, timeout, a malformed URL
            raise MlflowError(self.clean(str(getattr(e, "reason", None) or e))) from None
        try:
            return json.loads(text) if text.strip().startswith("{") else {}
        except ValueError:
            raise MlflowError(f"{path}: not an MLflow server's answer") from None

    def clean(self, text: str) -> str:
        return one_line(scrub(text, self.uri))


def server_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read().decode("utf-8", "replace"))
        return f"{body.get('error_code', '')} {body.get('message', '')}".strip()
    except (ValueError, OSError, AttributeError):
        return str(error.reason)


def connect(setting) -> MlflowRunLogger:
    """train.mlflow's server checked (reachable, the experiment found or made) before any data loads."""
    uri = setting.tracking_uri or os.environ.get(URI_ENV)
    if not uri:
        raise UserError(f"train.mlflow: no tracking_uri, and {URI_ENV} is not set; "
                        f"give one, e.g. --set train.mlflow.tracking_uri=http://127.0.0.1:5000")
    if urlsplit(uri).scheme not in ("http", "https"):
        raise UserError(f"train.mlflow.tracking_uri: {masked(uri)!r} is not an http(s):// MLflow server")
    server = MlflowServer(uri)
    try:
        server.call("GET", "/health", timeout=CHECK_TIMEOUT_S)
        experiment_id = experiment_of(server, setting.experiment)
    except MlflowError as e:
        raise UserError(f"train.mlflow: the tracking server {server.shown} cannot be used: {e}") from None
    except (KeyError, TypeError):  # JSON without an experiment: some other HTTP service
        raise UserError(f"train.mlflow: {server.shown} does not answer as an MLflow tracking server") from None
    return MlflowRunLogger(server, experiment_id, setting.run_name)


def experiment_of(server: MlflowServer, name: str) -> str:
    """The experiment's id, made if it is new (another process making it at the same time is fine)."""
    query = "/api/2.0/mlflow/experiments/get-by-name?" + urlencode({"experiment_name": name})
    try:
        return server.call("GET", query, timeout=CHECK_TIMEOUT_S)["experiment"]["experiment_id"]
    except MlflowError as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e):
            raise
    try:
        return server.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name},
                           timeout=CHECK_TIMEOUT_S)["experiment_id"]
    except MlflowError as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    return server.call("GET", query, timeout=CHECK_TIMEOUT_S)["experiment"]["experiment_id"]  # made meanwhile


class MlflowRunLogger:
    """One training run's MLflow run; the trainer calls it as it calls TensorBoardLogger."""

    def __init__(self, server: MlflowServer, experiment_id: str, run_name: str | None):
        self.server, self.experiment_id, self.run_name = server, experiment_id, run_name
        self.run_id: str | None = None
        self.artifact_path = ""  # where its artifacts go under /api/2.0/mlflow-artifacts/artifacts/
        self.warn = print
        self.lost = False  # the server failed once mid-run: nothing more is sent

    def start(self, run_dir: Path, config: dict, params: int, dataset: str, warn, tags: dict | None = None) -> None:
        self.warn = warn
        self.create(self.run_name or config["name"], {"mnistlab.run_dir": str(run_dir), "mnistlab.dataset": dataset,
                                                       **(tags or {})})
        values = {**hparams_of(config), "model": config["model"]["name"], "params": params}
        self.log_params({k: v for k, v in values.items() if not k.startswith("train.mlflow")})

    def create(self, name: str, tags: dict) -> None:
        """A new run in the experiment, RUNNING, with `tags` and mnistlab's version."""
        tags = {"mnistlab.version": __version__, **tags}
        run = self.request("POST", "/api/2.0/mlflow/runs/create", {
            "experiment_id": self.experiment_id, "run_name": name, "start_time": now_ms(),
            "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]})
        info = (run or {}).get("run", {}).get("info", {})
        if "run_id" in info:
            self.run_id = info["run_id"]
            uri = info.get("artifact_uri", "")
            self.artifact_path = urlsplit(uri).path.strip("/") if uri.startswith("mlflow-artifacts:") else ""

    def log_params(self, values: dict) -> None:
        items = [{"key": k, "value": str(v)[:PARAM_CHARS]} for k, v in values.items()]
        for i in range(0, len(items), BATCH):
            self.log_batch(params=items[i:i + BATCH])

    def tag_runs(self, tags: dict, key: str, value) -> None:
        """`key` = `value` on every run of the experiment with all of `tags` (a sweep's best trial)."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.request("POST", "/api/2.0/mlflow/runs/search",
                             {"experiment_ids": [self.experiment_id], "filter": where, "max_results": 100})
        for run in (found or {}).get("runs", []):
            self.request("POST", "/api/2.0/mlflow/runs/set-tag",
                         {"run_id": run["info"]["run_id"], "key": key, "value": str(value)})

    def log_epoch(self, row: dict) -> None:
        self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def finish(self, summary: dict, run_dir: Path) -> None:
        """The final scores, the artifacts, and the run's end as FINISHED."""
        self.log_metrics({f"final/{k}": summary.get(k) for k in FINAL_KEYS}, summary["epochs_run"])
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.upload(run_dir / name)
        self.end("FINISHED")

    def end(self, status: str) -> None:
        """The run ends with `status` (FINISHED, FAILED or KILLED); a second call does nothing."""
        if self.run_id is not None:
            self.request("POST", "/api/2.0/mlflow/runs/update",
                         {"run_id": self.run_id, "status": status, "end_time": now_ms()})
            self.run_id = None

    def log_metrics(self, values: dict, step: int) -> None:
        stamp = now_ms()
        self.log_batch(metrics=[{"key": k, "value": float(v), "timestamp": stamp, "step": step}
                                for k, v in values.items() if is_number(v)])

    def log_batch(self, **items) -> None:
        if self.run_id is not None:
            self.request("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": self.run_id, **items})

    def upload(self, path: Path) -> None:
        if not self.artifact_path:  # one line for the run's artifacts; the run is still logged
            if path.name == ARTIFACTS[0]:
                self.warn("warning: train.mlflow: no artifacts uploaded: the server does not proxy them "
                          "(start it with --serve-artifacts)")
            return
        self.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quote(self.artifact_path)}/{quote(path.name)}",
                     raw=path.read_bytes())

    def request(self, method: str, path: str, body=None, raw: bytes | None = None):
        """The answer, or None after one warning line if the server failed (training goes on)."""
        if self.lost:
            return None
        try:
            return self.server.call(method, path, body, raw=raw)
        except MlflowError as e:
            self.lose(f"the MLflow server {self.server.shown} failed ({e}); this run is no longer logged there")
            return None

    def lose(self, reason: str) -> None:
        self.lost = True
        self.warn(f"warning: train.mlflow: {reason}")


def is_number(value) -> bool:
    """What a metric can hold: a finite number (JSON has no NaN; a diverged epoch's loss is left out)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def now_ms() -> int:
    return int(time.time() * 1000)
