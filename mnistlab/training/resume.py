"""--resume: where an interrupted run stands, and every check that it can be continued as it was.

A run killed at any moment is finished by `mnistlab train --resume RUN_DIR`: its directory locked
(runfolder.lock_run_dir: no one else may be training it), the temporary files the kill left cleared,
its last.pt checked (a training state mnistlab wrote, the same config but for more epochs and another
device, the same process count, a schedule that can be stretched) before anything is trained.
checkpoint_saver.CheckpointSaver.restore then loads the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_to_dict, validate_config
from ..errors import UserError
from ..runfolder import BEST, LAST, given_run_dir, lock_run_dir, read_config, read_summary
from .checkpoint import load_checkpoint
from .distributed import World


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


def find_resume_point(resume: str | Path, cfg, world: World) -> ResumePoint:
    """The state of a run to finish: any run killed at any moment, with the same config (more epochs and
    another device allowed) and the same process count. Rank 0 locks the run directory first (no one
    else may be training it), then clears the temporary files the kill left."""
    path = Path(resume)
    if not path.exists():
        raise UserError(f"--resume: {path} not found; give a run directory (or its last.pt)")
    if path.is_file() and path.name != LAST:
        raise UserError(f"--resume: {path} holds no training state (a best.pt?); give the run directory")
    run_dir = given_run_dir(path)
    if read_summary(run_dir) is not None:  # a damaged summary.json: one UserError naming it
        check_nothing_to_apply(run_dir, cfg)
    lock = lock_run_dir(run_dir) if world.is_main else None
    if world.is_main:
        for leftover in run_dir.glob(".*.tmp"):  # an atomic write cut short by the kill
            leftover.unlink(missing_ok=True)
    summary = read_summary(run_dir)
    if summary is not None:
        return ResumePoint(run_dir, summary=summary, lock=lock)
    last = run_dir / LAST
    if not last.exists():  # stopped in its first epoch: start it again, in the same directory
        check_same_config(read_config(run_dir) or {}, cfg)
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
        was = config_to_dict(validate_config(read_config(run_dir) or {}))
    except UserError:  # a config.yaml this version no longer reads: nothing to compare with
        return
    difference = first_difference(was, config_to_dict(cfg), ignore={"data.root", "data.download"})
    if difference:
        key, before, now = difference
        raise UserError(f"--resume: {run_dir} has already finished: {key}={now!r} (it had {before!r}) would not "
                        f"apply; train a new run, from its weights with --set model.init={run_dir / BEST}")


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
