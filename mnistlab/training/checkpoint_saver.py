"""A run's state on disk: best.pt, last.pt and metrics.csv written, and read back to resume.

Policy, in one place (as timm's CheckpointSaver keeps it): after every epoch metrics.csv gets the
epoch's row and last.pt everything a resumed run needs (optimizer, scheduler, scaler, early
stopping, the rows, the best so far); best.pt is written when the monitored value improves (every
epoch with monitor `last`). Only rank 0 writes; every rank keeps the same best value and epoch.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import config_to_dict, config_to_yaml
from ..errors import UserError
from ..files import atomic_write_text, csv_value
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
        model.load_state_dict(ckpt["state_dict"])
        for name, obj in self.stateful.items():
            if obj is not None and state.get(name) is not None:
                obj.load_state_dict(state[name])
        self.rows, self.best_value, self.best_epoch = list(state["rows"]), state["best_value"], state["best_epoch"]
        return ckpt["epoch"] + 1

    def load_best(self) -> dict:
        return torch.load(self.run_dir / "best.pt", map_location="cpu", weights_only=True)

    def add_test_scores(self, best: dict, scores: dict) -> None:
        """best.pt gets the test scores of the finished run."""
        if self.world.is_main:
            best["metrics"] = {**best["metrics"], **scores}
            save_checkpoint(best, self.run_dir / "best.pt")


def open_run_dir(cfg, world: World, out_dir, previous: dict | None) -> Path:
    """Rank 0 makes (or reuses, when resuming) the run directory; every rank learns it, or the error."""
    outcome: str | Path = ""
    if world.is_main:
        try:
            if previous is None:
                outcome = make_run_dir(Path(out_dir), cfg.name)
                atomic_write_text(outcome / "config.yaml", config_to_yaml(cfg))
            else:
                outcome = previous["run_dir"]
        except UserError as exc:
            outcome = f"error: {exc}"
    outcome = broadcast_object(world, str(outcome))
    if outcome.startswith("error: "):
        raise UserError(outcome.removeprefix("error: "))
    return Path(outcome)


def load_resume_state(resume: str | Path, cfg, world_size: int = 1) -> dict:
    """last.pt of an unfinished run whose config and process count match (more epochs may be asked for)."""
    path = Path(resume)
    last = path / "last.pt" if path.is_dir() else path
    if not last.exists():
        raise UserError(f"--resume: {last} not found; give a run directory holding last.pt, or the last.pt file")
    ckpt = load_checkpoint(last)
    if "training_state" not in ckpt:
        raise UserError(f"--resume: {last} holds no training state (a best.pt?); resume from last.pt")
    run_dir = last.parent
    if (run_dir / "summary.json").exists():
        raise UserError(f"--resume: {run_dir} has already finished (it has a summary.json)")
    difference = first_difference(ckpt["config"], config_to_dict(cfg), ignore={"train.epochs"})
    if difference:
        key, was, now = difference
        raise UserError(f"--resume: the config differs from the run's at {key}: the run has {was!r}, now {now!r}")
    # Dropout and augmentation are seeded per rank: another process count would not continue the same run.
    was_size = ckpt["training_state"].get("world_size", 1)
    if was_size != world_size:
        how = "without torchrun" if was_size == 1 else f"with torchrun --nproc_per_node={was_size}"
        raise UserError(f"--resume: the run was trained by {was_size} process(es), this is {world_size}; "
                        f"resume it {how}")
    if ckpt["epoch"] >= cfg.train.epochs:
        raise UserError(f"--resume: the run already did {ckpt['epoch']} epochs; raise train.epochs to go on")
    ckpt["run_dir"] = run_dir
    return ckpt


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

