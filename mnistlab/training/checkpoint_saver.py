"""A run's state on disk: best.pt, last.pt and metrics.csv written, and read back to resume.

Policy, in one place (as timm's CheckpointSaver keeps it): after every epoch metrics.csv gets the
epoch's row and last.pt everything a resumed run needs (optimizer, scheduler, scaler, early
stopping, the rows, the best so far); best.pt is written when the monitored value improves (every
epoch with monitor `last`). Only rank 0 writes; every rank keeps the same best value and epoch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import config_to_dict, config_to_yaml, validate_config
from ..errors import UserError, one_line
from ..files import atomic_write_text, csv_value, read_small_text
from ..yamlfile import read_yaml_file
from .checkpoint import load_checkpoint, make_run_dir, save_checkpoint
from .distributed import World, broadcast_object
from .engine import is_improvement, monitor_mode

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "lr", "time_s",
                  "train_images_per_s"]


class CheckpointSaver:
    """Saves one run's checkpoints epoch by epoch, and restores them into a resumed run.

    `payload(epoch, metrics)` builds the model's checkpoint (checkpoint.model_payload with the run's
    model and description bound); `stateful` maps names to objects with state_dict/load_state_dict
    (optimizer, scheduler, scaler, early_stopping; None where a run has none).
    """

    def __init__(self, run_dir: Path, monitor: str, payload: Callable[[int, dict], dict],
                 stateful: dict[str, Any], world: World):
        self.run_dir, self.monitor, self.payload = Path(run_dir), monitor, payload
        self.stateful, self.world = stateful, world
        self.rows: list[dict] = []
        self.best_value: float | None = None
        self.best_epoch = 0

    def record(self, row: dict) -> None:
        """The epoch's row, in metrics.csv at once (before anything can fail on it)."""
        self.rows.append(row)
        if self.world.is_main:
            atomic_write_text(self.run_dir / "metrics.csv", metrics_csv(self.rows))

    def save(self, epoch: int, row: dict) -> bool:
        """best.pt if the monitor improved, last.pt always; whether it improved."""
        value = epoch if self.monitor == "last" else row[self.monitor]
        improved = self.monitor == "last" or is_improvement(value, self.best_value, monitor_mode(self.monitor))
        if improved:
            self.best_value, self.best_epoch = value, epoch
        if self.world.is_main:
            if improved:
                save_checkpoint(self.payload(epoch, row), self.run_dir / "best.pt")
            last = self.payload(epoch, row)
            last["training_state"] = self.training_state()
            save_checkpoint(last, self.run_dir / "last.pt")
        return improved

    def training_state(self) -> dict:
        state = {name: obj.state_dict() if obj is not None else None for name, obj in self.stateful.items()}
        return {**state, "best_value": self.best_value, "best_epoch": self.best_epoch, "rows": self.rows,
                "world_size": self.world.size}

    def restore(self, ckpt: dict, model) -> int:
        """Load a resumed run's last.pt into the model and the stateful parts; the next epoch to run."""
        state = ckpt["training_state"]
        try:
            model.load_state_dict(ckpt["state_dict"])
            for name, obj in self.stateful.items():
                if obj is not None and state.get(name) is not None:
                    obj.load_state_dict(state[name])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise UserError(f"--resume: {self.run_dir / 'last.pt'} is damaged: its training state does not "
                            f"restore ({one_line(exc, 120)})") from None
        self.rows, self.best_value, self.best_epoch = list(state["rows"]), state["best_value"], state["best_epoch"]
        return ckpt["epoch"] + 1

    def load_best(self) -> dict:
        return torch.load(self.run_dir / "best.pt", map_location="cpu", weights_only=True)

    def add_test_scores(self, best: dict, scores: dict) -> None:
        """best.pt gets the test scores of the finished run."""
        if self.world.is_main:
            best["metrics"] = {**best["metrics"], **scores}
            save_checkpoint(best, self.run_dir / "best.pt")


def open_run_dir(cfg, world: World, out_dir, point: "ResumePoint | None") -> Path:
    """Rank 0 makes (or, resuming, reuses) the run directory and writes config.yaml (a resumed run's
    may have more epochs now); every rank learns the directory, or the error."""
    outcome: str | Path = ""
    if world.is_main:
        try:
            outcome = make_run_dir(Path(out_dir), cfg.name) if point is None else point.run_dir
            atomic_write_text(outcome / "config.yaml", config_to_yaml(cfg))
        except UserError as exc:
            outcome = f"error: {exc}"
    outcome = broadcast_object(world, str(outcome))
    if outcome.startswith("error: "):
        raise UserError(outcome.removeprefix("error: "))
    return Path(outcome)


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run directory while this process trains it (the open file is the
    lock; the system drops it when the process ends, however it ends). None where locks do not exist."""
    try:
        import fcntl
    except ImportError:
        return None
    # Not blocking: a FIFO put there would keep a plain open() waiting for a reader for ever.
    fd = os.open(run_dir / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o644)
    handle = os.fdopen(fd, "a")  # held open on purpose
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise UserError(f"{run_dir / '.lock'} is not a regular file (a pipe or a device?); remove it")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{run_dir} is being trained by another process right now") from None
    return handle


def unlock(handle) -> None:
    """Give up a lock_run_dir lock (closing the file drops it); None is no lock."""
    if handle is not None:
        handle.close()


def is_locked(run_dir: Path) -> bool:
    """Is another process training this run directory now?"""
    try:
        handle = lock_run_dir(run_dir)
    except (UserError, OSError):
        return True
    unlock(handle)
    return False


@dataclass
class ResumePoint:
    """Where an interrupted run stands: its directory, its last.pt (None when it was stopped before
    its first epoch ended), and its summary when it had in fact finished."""

    run_dir: Path
    ckpt: dict | None = None
    summary: dict | None = None
    lock: Any = None  # held while this process finishes the run (rank 0 only)

    @property
    def epoch(self) -> int:
        return self.ckpt["epoch"] if self.ckpt else 0


# may change on resuming (tensorboard, mlflow: logging only, and absent from runs written before it existed)
RESUME_IGNORED = {"train.epochs", "device", "data.root", "data.download", "train.tensorboard",
                  "train.mlflow"}


def run_dir_of(resume: str | Path) -> Path:
    path = Path(resume)
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: {run_dir} is not a run directory (it has no config.yaml)")
    return run_dir


def find_resume_point(resume: str | Path, cfg, world: World) -> ResumePoint:
    """The state of a run to finish: any run killed at any moment, with the same config (more epochs and
    another device allowed) and the same process count. Rank 0 locks the run directory first (no one
    else may be training it), then clears the temporary files the kill left."""
    path = Path(resume)
    if not path.exists():
        raise UserError(f"--resume: {path} not found; give a run directory (or its last.pt)")
    if path.is_file() and path.name != "last.pt":
        raise UserError(f"--resume: {path} holds no training state (a best.pt?); give the run directory")
    run_dir = run_dir_of(path)
    if (run_dir / "summary.json").is_file():
        check_nothing_to_apply(run_dir, cfg)
    lock = lock_run_dir(run_dir) if world.is_main else None
    if world.is_main:
        for leftover in run_dir.glob(".*.tmp"):  # an atomic write cut short by the kill
            leftover.unlink(missing_ok=True)
    if (run_dir / "summary.json").is_file():
        return ResumePoint(run_dir, summary=read_json(run_dir / "summary.json"), lock=lock)
    last = run_dir / "last.pt"
    if not last.exists():  # stopped in its first epoch: start it again, in the same directory
        check_same_config(read_config_yaml(run_dir), cfg)
        return ResumePoint(run_dir, lock=lock)
    ckpt = load_checkpoint(last)
    check_training_state(ckpt, last)
    check_same_config(ckpt.get("config", {}), cfg)
    check_same_world(ckpt["training_state"].get("world_size", 1), world.size)
    check_schedule_stretch(ckpt.get("config", {}), cfg)
    return ResumePoint(run_dir, ckpt, lock=lock)


def check_nothing_to_apply(run_dir: Path, cfg) -> None:
    """A finished run is not trained again, so a config that differs from its own (--set, --device, another
    file) would be ignored in silence: refused instead, naming the first difference."""
    try:
        was = config_to_dict(validate_config(read_config_yaml(run_dir)))
    except UserError:  # a config.yaml this version no longer reads: nothing to compare with
        return
    difference = first_difference(was, config_to_dict(cfg), ignore={"data.root", "data.download"})
    if difference:
        key, before, now = difference
        raise UserError(f"--resume: {run_dir} has already finished, so nothing is trained and {key}={now!r} (the "
                        f"run had {before!r}) would not apply; train a new run with it instead")


def check_training_state(ckpt: dict, last: Path) -> None:
    state = ckpt.get("training_state")
    if state is None:
        raise UserError(f"--resume: {last} holds no training state (a best.pt?); resume from last.pt")
    rows = state.get("rows") if isinstance(state, dict) else None
    ok = (isinstance(state, dict) and isinstance(state.get("optimizer"), dict) and isinstance(rows, list)
          and len(rows) == ckpt.get("epoch") and all(isinstance(r, dict) for r in rows)
          and isinstance(state.get("best_epoch"), int) and 1 <= state["best_epoch"] <= len(rows))
    if not ok:
        raise UserError(f"--resume: {last} is damaged: its training state is not what mnistlab writes")


def check_same_config(was: dict, cfg) -> None:
    difference = first_difference(was, config_to_dict(cfg), ignore=RESUME_IGNORED)
    if difference:
        key, before, now = difference
        raise UserError(f"--resume: the config differs from the run's at {key}: the run has {before!r}, "
                        f"now {now!r}")


def check_same_world(was_size: int, world_size: int) -> None:
    """Dropout and augmentation are seeded per rank: another process count would not continue the same run."""
    if was_size != world_size:
        how = "without torchrun" if was_size == 1 else f"with torchrun --nproc_per_node={was_size}"
        raise UserError(f"--resume: the run was trained by {was_size} process(es), this is {world_size}; "
                        f"resume it {how}")


def check_schedule_stretch(was: dict, cfg) -> None:
    """More epochs continue a step, plateau or fixed-length cosine schedule as it was. A one-cycle or
    a cosine over train.epochs was laid out over the old length: stretching it would change the epochs
    already run, so that is refused before anything is done."""
    before = was.get("train", {}).get("epochs") if isinstance(was.get("train"), dict) else None
    sched = cfg.train.scheduler
    if before in (None, cfg.train.epochs):
        return
    if sched.name == "onecycle" or (sched.name == "cosine" and sched.t_max is None):
        raise UserError(f"--resume: train.epochs {before} -> {cfg.train.epochs}: the {sched.name} schedule was "
                        f"laid out over {before} epochs and cannot be stretched; resume with train.epochs: "
                        f"{before}, or start a new run")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(read_small_text(path))  # a FIFO or a huge file: one UserError at once
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is damaged: {one_line(exc, 120)}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is damaged: not a JSON object")
    return value


def read_config_yaml(run_dir: Path) -> dict:
    raw = read_yaml_file(run_dir / "config.yaml")
    if not isinstance(raw, dict):
        raise UserError(f"{run_dir / 'config.yaml'} is damaged: not a mapping of keys")
    return raw


def first_difference(a, b, ignore=(), prefix=""):
    """The first dotted key where two nested dicts differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if dotted in ignore:
                continue
            found = first_difference(a.get(key), b.get(key), ignore, dotted)
            if found:
                return found
        return None
    return None if a == b else (prefix, a, b)


def metrics_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:  # rows resumed from older runs may lack a column
        writer.writerow({k: csv_value(row.get(k)) for k in METRIC_COLUMNS})
    return out.getvalue()

