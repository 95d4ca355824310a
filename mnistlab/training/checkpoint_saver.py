"""A run's state on disk: best.pt, last.pt and metrics.csv written, and restored into a resumed run.

Policy, in one place (as timm's CheckpointSaver keeps it): after every epoch metrics.csv gets the
epoch's row and last.pt everything a resumed run needs (optimizer, scheduler, scaler, early
stopping, the rows, the best so far); best.pt is written when the monitored value improves (every
epoch with monitor `last`). Only rank 0 writes; every rank keeps the same best value and epoch.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..config import config_to_yaml
from ..errors import UserError, one_line
from ..files import atomic_write_text, csv_value
from ..runfolder import BEST, CONFIG, LAST, METRICS
from .checkpoint import make_run_dir, save_checkpoint
from .distributed import World, broadcast_object
from .engine import is_improvement, monitor_mode

if TYPE_CHECKING:
    from .resume import ResumePoint

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
            atomic_write_text(self.run_dir / METRICS, metrics_csv(self.rows))

    def save(self, epoch: int, row: dict) -> bool:
        """best.pt if the monitor improved, last.pt always; whether it improved."""
        value = epoch if self.monitor == "last" else row[self.monitor]
        improved = self.monitor == "last" or is_improvement(value, self.best_value, monitor_mode(self.monitor))
        if improved:
            self.best_value, self.best_epoch = value, epoch
        if self.world.is_main:
            if improved:
                save_checkpoint(self.payload(epoch, row), self.run_dir / BEST)
            last = self.payload(epoch, row)
            last["training_state"] = self.training_state()
            save_checkpoint(last, self.run_dir / LAST)
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
            raise UserError(f"--resume: {self.run_dir / LAST} is damaged: its training state does not "
                            f"restore ({one_line(exc, 120)})") from None
        self.rows, self.best_value, self.best_epoch = list(state["rows"]), state["best_value"], state["best_epoch"]
        return ckpt["epoch"] + 1

    def load_best(self) -> dict:
        return torch.load(self.run_dir / BEST, map_location="cpu", weights_only=True)

    def add_test_scores(self, best: dict, scores: dict) -> None:
        """best.pt gets the test scores of the finished run."""
        if self.world.is_main:
            best["metrics"] = {**best["metrics"], **scores}
            save_checkpoint(best, self.run_dir / BEST)


def open_run_dir(cfg, world: World, out_dir, point: ResumePoint | None) -> Path:
    """Rank 0 makes (or, resuming, reuses) the run directory and writes config.yaml (a resumed run's
    may have more epochs now); every rank learns the directory, or the error."""
    outcome: str | Path = ""
    if world.is_main:
        try:
            outcome = make_run_dir(Path(out_dir), cfg.name) if point is None else point.run_dir
            atomic_write_text(outcome / CONFIG, config_to_yaml(cfg))
        except UserError as exc:
            outcome = f"error: {exc}"
    outcome = broadcast_object(world, str(outcome))
    if outcome.startswith("error: "):
        raise UserError(outcome.removeprefix("error: "))
    return Path(outcome)


def metrics_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:  # rows resumed from older runs may lack a column
        writer.writerow({k: csv_value(row.get(k)) for k in METRIC_COLUMNS})
    return out.getvalue()

