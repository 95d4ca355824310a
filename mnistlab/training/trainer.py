"""`mnistlab train`: config -> data -> model -> epochs -> checkpoints -> test score -> summary.

`run_training` is the whole pipeline in reading order, as torchvision's
references/classification/train.py `main` is; each chapter is a function below it.
Under torchrun every rank runs it; rank 0 alone prints and writes the run directory.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import config_to_dict
from ..data.augment import mix_batch, tta_for
from ..data.datasets import DataBundle, load_data, resolve_root
from ..data.pipeline import DeviceBatches, classic_batches, eval_batches
from ..errors import UserError
from ..files import atomic_write_text
from ..models import create_model
from ..models.layout import apply_layout
from ..report import write_run_curves_safely
from ..runfolder import CURVES, SUMMARY, lock_run_dir, unlock
from ..style import paint
from .checkpoint import model_payload, versions
from .checkpoint_saver import CheckpointSaver, open_run_dir
from .resume import ResumePoint, find_resume_point
from .ema import build_ema
from .distributed import World, barrier, init_world, ranks_agree, shutdown, sum_across, sync_buffers
from .finetune import Start, apply_freeze, load_start, read_start, resolve_init
from .engine import (EarlyStopping, NonFiniteLoss, amp_dtype, keep_freed_host_memory, resolve_device, score,
                     train_one_epoch)
from .optim import build_optimizer, build_scheduler, current_lr
from .mlflow_logger import MlflowRunLogger, connect as connect_mlflow
from .tb_logger import TensorBoardLogger, require_tensorboard


def run_training(cfg, *, data_dir: str | None = None, out_dir: str | Path = "checkpoints", quiet: bool = False,
                 log=print, resume: str | Path | None = None, on_epoch: Callable[[dict], None] | None = None,
                 score_test: bool = True, mlflow_tags: dict | None = None) -> dict:
    """Train one config to its best checkpoint, score it once on the test set, return the summary.

    With `resume` (a run directory, or its last.pt) a run stopped at any moment is finished: training
    continues after the last finished epoch with model, optimizer, scheduler, scaler and early-stopping
    state restored, or, if every epoch was done, only the final scoring runs. `on_epoch(row)` is called
    after each epoch's checkpoints are written (a sweep reports to its pruner there; an exception it
    raises ends the run as Ctrl-C would, with last.pt kept). `score_test=False` leaves the test set
    untouched (a sweep's trials: the test set must not take part in choosing). `mlflow_tags` go on
    train.mlflow's run (a sweep's trial: its parent run and trial number).
    """
    world, device_setting = init_world(cfg.device)
    t = point = None
    try:
        cfg, start, point = starting_point(cfg, resume, world)
        if point is not None and point.summary is not None:
            return already_finished(point, log if world.is_main else _silent)
        t = setup(cfg, world, device_setting, data_dir, out_dir, quiet, log, point, start, mlflow_tags)
        stopped_early, train_time = train_epochs(t, on_epoch)
        return finish(t, stopped_early, train_time, score_test)
    except BaseException as e:
        if t is not None and t.mlflow is not None:  # Ctrl-C (or a signal turned into it): KILLED
            t.mlflow.end("KILLED" if isinstance(e, KeyboardInterrupt) or t.caller_stopped else "FAILED")
        raise
    finally:
        if t is not None and t.tb is not None:
            t.tb.close()  # a failed or interrupted run keeps the events written so far
        # the run directory is free again for this process too (the Python API may resume it next)
        unlock(t.lock if t is not None else point.lock if point is not None else None)
        shutdown(world)


def _silent(*args, **kwargs) -> None:
    pass


def starting_point(cfg, resume, world: World):
    """The config with model.init resolved, the checkpoint to start from, and where a resumed run stands.
    A resumed run continues its own last.pt, never model.init's weights (which `latest` may name anew);
    one stopped before its first epoch ended starts from model.init again."""
    start = read_start(cfg.model.init) if cfg.model.init and (cfg.model.name is None or not resume) else None
    cfg = resolve_init(cfg, start) if start else cfg
    point = find_resume_point(resume, cfg, world) if resume else None
    if point is not None and point.ckpt is not None:
        return cfg, None, point
    if cfg.model.init and start is None:
        start = read_start(cfg.model.init)
        cfg = resolve_init(cfg, start)
    return cfg, start, point


@dataclass
class Training:
    """Everything one run is made of, built once by `setup`; the chapters below read it."""

    cfg: Any
    world: World
    device: torch.device
    dtype: torch.dtype | None
    data: DataBundle
    batch_size: int
    model: torch.nn.Module  # what is scored and checkpointed: the trained model, or its average (train.ema)
    net: torch.nn.Module  # what trains: the trained model, maybe wrapped for torchrun and compiled
    trained: torch.nn.Module  # the plain model the optimizer steps (`model` itself unless train.ema)
    ema: Any  # train.ema's AveragedModel (its .module is `model`), or None
    params: int
    trainable: int  # parameter values that train (all but train.freeze's)
    init: dict | None  # model.init's checkpoint as summary.json records it: from, path, sha256
    batches: dict[str, Any]  # train, val, test
    generators: dict[str, torch.Generator]  # shuffle, augment
    optimizer: torch.optim.Optimizer
    scheduler: Any
    when: str  # the scheduler steps per 'batch', per 'epoch' or on a 'metric'
    scaler: Any
    stopper: EarlyStopping | None
    saver: CheckpointSaver
    first_epoch: int
    run_dir: Path
    resume_hint: str
    stopped: bool  # a resumed run whose early stopping had already fired: only the scoring is left
    lock: Any  # the run directory's lock, held until run_training returns
    say: Callable  # progress lines (silent with --quiet)
    log: Callable  # results and errors (rank 0 only)
    quiet: bool
    tb: TensorBoardLogger | None  # train.tensorboard's event files (rank 0 only)
    mlflow: MlflowRunLogger | None  # train.mlflow's run on a tracking server (rank 0 only)
    caller_stopped: bool = False  # on_epoch raised (a sweep's pruner): the run was stopped, it did not fail


def setup(cfg, world: World, device_setting: str, data_dir, out_dir, quiet: bool, log, point,
          start: Start | None = None, mlflow_tags: dict | None = None) -> Training:
    log = log if world.is_main else _silent
    say = _silent if quiet else log
    previous = point.ckpt if point is not None else None
    if cfg.train.tensorboard:
        require_tensorboard()  # a missing package is one line now, not after the data has loaded
    # an MLflow server that cannot be reached is one line now too
    mlflow = connect_mlflow(cfg.train.mlflow) if cfg.train.mlflow and world.is_main else None
    device = resolve_device(device_setting)
    dtype = amp_dtype(cfg.train.amp, device)
    keep_freed_host_memory()
    torch.manual_seed(cfg.seed)  # the model's initial weights: the same on every rank

    data = load_data(cfg.data, cfg.seed, resolve_root(data_dir, cfg.data.root), progress=not quiet)
    batch_size = resolve_batch_size(cfg.train.batch_size, len(data.train_y))
    trained, init, trainable, head_line = starting_model(cfg, data, device, start, previous)
    ema = build_ema(cfg.train.ema, trained)  # before wrapping: the average copies the plain model
    model = ema.module if ema is not None else trained
    net = compile_if_asked(wrap_distributed(trained, world, device, cfg.train.sync_batchnorm), cfg.train.compile)
    generators = {"shuffle": torch.Generator(device=device if cfg.data.pipeline == "device" else "cpu"),
                  "augment": torch.Generator(device=device)}
    batches = make_batches(cfg, data, batch_size, device, world, generators)

    optimizer = build_optimizer(cfg.train.optimizer, [p for p in net.parameters() if p.requires_grad])
    # last.pt's state_dict is `model`'s; with an average it also keeps the trained weights and the average
    averaging = {"ema": ema, "trained_weights": trained} if ema is not None else {}
    scheduler, when = build_scheduler(cfg.train.scheduler, optimizer, cfg.train.epochs, len(batches["train"]))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    es = cfg.train.early_stopping
    stopper = EarlyStopping(es.monitor, es.patience, es.min_delta) if es else None
    run_dir = open_run_dir(cfg, world, out_dir, point)
    lock = point.lock if point is not None else lock_run_dir(run_dir) if world.is_main else None
    saver = CheckpointSaver(run_dir, cfg.train.checkpoint_monitor, payload_builder(cfg, model, data, init),
                            {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
                             "early_stopping": stopper, **averaging}, world)
    params = sum(p.numel() for p in trained.parameters())
    say(header_line(cfg, data, (params, trainable), batch_size, device, dtype, world))
    for line in filter(None, [init and init_line(init, data), head_line]):
        say(line)
    for note in data.notes:  # a user's set: leakage, classes a part lacks, skipped files (shown with --quiet too)
        log(paint(note, "warning") if note.startswith("warning") else note)
    say(f"  (* marks a new best epoch by {cfg.train.checkpoint_monitor}, saved as best.pt; lr is the learning rate "
        f"the epoch started with)")
    if cfg.train.checkpoint_monitor == "test_acc":
        say("note: the checkpoint is selected on TEST accuracy (allow_test_selection: true); "
            "the test number below is not an unbiased estimate")
    first_epoch = saver.restore(previous, model) if previous else 1
    # last.pt holds the early stopping as it was before its epoch's row was counted: count it again
    stopped = bool(previous and stopper and stopper.step(saver.rows[-1][stopper.monitor]))
    if point is not None:
        say(f"resuming {run_dir} after epoch {point.epoch}"
            + ("; every epoch is done: scoring it" if stopped or first_epoch > cfg.train.epochs else ""))
    resume_hint = f"mnistlab train --resume {run_dir}" + (f" --data-dir {data_dir}" if data_dir else "")
    tb = (TensorBoardLogger(run_dir, config_to_dict(cfg), params, len(batches["train"]))
          if cfg.train.tensorboard and world.is_main else None)
    if mlflow is not None:
        mlflow.start(run_dir, config_to_dict(cfg), params, data.dataset, log, mlflow_tags)
    return Training(cfg, world, device, dtype, data, batch_size, model, net, trained, ema, params, trainable, init,
                    batches, generators,
                    optimizer, scheduler, when, scaler, stopper, saver, first_epoch, run_dir, resume_hint, stopped,
                    lock, say, log, quiet, tb, mlflow)


def starting_model(cfg, data: DataBundle, device, start: Start | None, previous: dict | None):
    """The model to train, on `device`: model.init's weights loaded (before the weight average copies
    them) and train.freeze applied. Also what it started from (a resumed run's last.pt says), the line
    about the classifier head (None if nothing to say), and how many parameter values train."""
    trained = create_training_model(cfg, data.num_classes, device)
    head_line = load_start(trained, start, data.classes) if start else None
    init = start.record if start else previous.get("init") if previous else None
    return trained, init, apply_freeze(trained, cfg.train.freeze, cfg.model.name), head_line


def make_batches(cfg, data: DataBundle, batch_size: int, device, world: World, generators) -> dict[str, Any]:
    """Training batches through the configured pipeline; validation and test batches on the device."""
    size, limit = cfg.train.eval_batch_size, cfg.train.limit_eval_batches
    return {"train": train_batches(cfg, data, batch_size, device, world, generators),
            "val": eval_batches(data.val_x.to(device), data.val_y.to(device), size, data.mean, data.std, limit,
                                world.rank, world.size),
            "test": eval_batches(data.test_x.to(device), data.test_y.to(device), size, data.mean, data.std, limit,
                                 world.rank, world.size)}


def train_batches(cfg, data: DataBundle, batch_size: int, device, world: World, generators):
    """The training set's batches through the configured pipeline (data.pipeline), augmented as configured."""
    if cfg.data.pipeline == "device":
        return DeviceBatches(data.train_x.to(device), data.train_y.to(device), batch_size, data.mean, data.std,
                             cfg.data.augment, generators["shuffle"], limit=cfg.train.limit_train_batches,
                             aug_generator=generators["augment"], rank=world.rank, world=world.size)
    return classic_batches(data.train_x, data.train_y, batch_size, data.mean, data.std, cfg.data.augment,
                           generators["shuffle"], cfg.data.num_workers,
                           cfg.data.pin_memory and device.type == "cuda", cfg.train.limit_train_batches,
                           world.rank, world.size)


def payload_builder(cfg, model, data: DataBundle, init: dict | None = None) -> Callable[[int, dict], dict]:
    """The run's checkpoint payload for an epoch and its metrics (the model's current weights); with
    model.init, what the run started from (a resumed run reads it back from last.pt)."""
    config = config_to_dict(cfg)

    def payload(epoch: int, metrics: dict) -> dict:
        built = model_payload(model, model_name=cfg.model.name, model_kwargs=cfg.model.kwargs, classes=data.classes,
                              mean=data.mean, std=data.std, input_size=[1, *data.train_x.shape[1:]],
                              config=config, metrics=metrics, epoch=epoch)
        return {**built, "init": dict(init)} if init else built

    return payload


def train_epochs(t: Training, on_epoch=None) -> tuple[bool, float]:
    """Epochs from t.first_epoch on, each checkpointed; whether early stopping ended them, and the
    training time (a resumed run's earlier epochs included)."""
    started = time.perf_counter() - sum(r["time_s"] for r in t.saver.rows)
    if t.stopped:
        return True, time.perf_counter() - started
    try:
        for epoch in range(t.first_epoch, t.cfg.train.epochs + 1):
            row = run_epoch(t, epoch)
            improved = t.saver.save(epoch, row)
            t.say(epoch_line(row, t.cfg.train.epochs, improved))
            if on_epoch is not None:
                try:
                    on_epoch(row)
                except Exception:
                    t.caller_stopped = True
                    raise
            if t.stopper is not None and t.stopper.step(row[t.stopper.monitor]):
                t.say(f"early stopping: {t.stopper.monitor} has not improved for {t.stopper.patience} epochs")
                return True, time.perf_counter() - started
    except KeyboardInterrupt:
        rows = t.saver.rows
        done = f"last.pt holds epoch {rows[-1]['epoch']}" if rows else "no epoch had finished"
        t.log(f"interrupted: {done}; resume with: {t.resume_hint}")
        raise
    return False, time.perf_counter() - started


def run_epoch(t: Training, epoch: int) -> dict:
    """One epoch of training and validation; its row (recorded), the scheduler stepped."""
    cfg, world = t.cfg, t.world
    epoch_start = time.perf_counter()
    torch.manual_seed(epoch_seed(cfg.seed, epoch, 1 + world.rank))  # dropout
    t.generators["shuffle"].manual_seed(epoch_seed(cfg.seed, epoch, 0))  # the same order on every rank
    t.generators["augment"].manual_seed(epoch_seed(cfg.seed, epoch, 1_000 + world.rank))
    sampler = getattr(getattr(t.batches["train"], "loader", None), "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    lr = current_lr(t.optimizer)
    train_start = time.perf_counter()
    stats = train_one_epoch(t.net, t.batches["train"], t.optimizer, t.device,
                            label_smoothing=cfg.train.label_smoothing, dtype=t.dtype, scaler=t.scaler,
                            batch_scheduler=t.scheduler if t.when == "batch" else None,
                            clip_grad_norm=cfg.train.clip_grad_norm, mix=batch_mixer(t, epoch),
                            desc=f"epoch {epoch}/{cfg.train.epochs}", show_progress=not t.quiet and world.is_main,
                            on_step=step_hook(t, epoch))
    train_seconds = time.perf_counter() - train_start  # stats were read back: the device is done
    loss_sum, correct, seen, diverged = sum_across(
        world, [stats.loss * stats.n, stats.acc * stats.n, stats.n, float(stats.nonfinite_step >= 0)], t.device)
    has_val = len(t.data.val_y) > 0
    val_loss, val_acc, _ = score_all(t, t.batches["val"]) if has_val else (None, None, 0)
    test_acc = score_all(t, t.batches["test"])[1] if cfg.train.checkpoint_monitor == "test_acc" else None
    row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
           "val_loss": val_loss, "val_acc": val_acc, "test_acc": test_acc, "lr": lr,
           "time_s": time.perf_counter() - epoch_start, "train_images_per_s": seen / train_seconds}
    t.saver.record(row)
    if t.tb:
        t.tb.log_epoch(row)
    if t.mlflow:
        t.mlflow.log_epoch(row)
    if diverged or not math.isfinite(row["val_loss"] if has_val else row["train_loss"]):
        raise diverged_error(t, epoch, stats.nonfinite_step, lr)
    if t.scheduler is not None and t.when == "epoch":
        t.scheduler.step()
    elif t.scheduler is not None and t.when == "metric":
        t.scheduler.step(row[cfg.train.scheduler.monitor])
    return row


def batch_mixer(t: Training, epoch: int):
    """data.augment.mixup/cutmix for this epoch's batches, or None; its draws are seeded by (seed, epoch,
    rank) like the other random streams, so a resumed run mixes as an uninterrupted one."""
    augment = t.cfg.data.augment
    if augment.mixup is None and augment.cutmix is None:
        return None
    rng = np.random.default_rng(epoch_seed(t.cfg.seed, epoch, 2_000 + t.world.rank))
    return functools.partial(mix_batch, mixup=augment.mixup, cutmix=augment.cutmix,
                             num_classes=t.data.num_classes, rng=rng)


def step_hook(t: Training, epoch: int):
    """What runs after every optimizer step: the weight average's update, TensorBoard's step loss."""
    log_step = t.tb.step_hook(epoch) if t.tb else None
    if t.ema is None:
        return log_step
    def after_step(step: int, loss: torch.Tensor) -> None:
        t.ema.update_parameters(t.trained)
        if log_step is not None:
            log_step(step, loss)

    return after_step


def diverged_error(t: Training, epoch: int, nonfinite_step: int, lr: float) -> NonFiniteLoss:
    step = f"step {nonfinite_step + 1}" if nonfinite_step >= 0 else "its end"
    best = t.saver.best_epoch
    kept = f"best.pt (epoch {best}) is kept in {t.run_dir}" if best else "no checkpoint was saved"
    return NonFiniteLoss(f"training diverged: non-finite loss at epoch {epoch}, {step} "
                         f"(lr {lr:.3g}); try a lower train.optimizer.lr, or amp: off; {kept}")


def score_all(t: Training, batches, views=None) -> tuple[float, float, int]:
    """Loss, accuracy and count over all ranks' shares of `batches`."""
    sync_buffers(t.world, t.model)
    r = score(t.model, batches, t.device, t.dtype, views)
    loss_sum, correct, n = sum_across(t.world, [r.loss * r.n, r.acc * r.n, r.n], t.device)
    return loss_sum / max(n, 1), correct / max(n, 1), int(n)


def finish(t: Training, stopped_early: bool, train_time: float, score_test: bool = True) -> dict:
    """The best checkpoint scored once on the test set; summary.json, curves.png; the summary."""
    in_sync = ranks_agree(t.world, t.model)
    barrier(t.world)  # rank 0 has written best.pt before anyone reads it
    best = t.saver.load_best()
    t.model.load_state_dict(best["state_dict"])
    if score_test:
        views = " with test-time augmentation (7 views each)" if t.cfg.train.tta else ""
        t.say(f"scoring best.pt (epoch {t.saver.best_epoch}) once on the test set{views}…")
    scores = final_scores(t) if score_test else {"test_acc": None, "test_loss": None, "test_n": 0}
    summary = build_summary(t, scores, stopped_early, train_time, in_sync)
    if score_test:
        t.saver.add_test_scores(best, {k: scores[k] for k in ("test_loss", "test_acc", "test_n")})
    if t.world.is_main:
        atomic_write_text(t.run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        write_run_curves_safely(t.run_dir, t.log)
    if t.tb:
        t.tb.finish(summary)
    if t.mlflow:
        t.mlflow.finish(summary, t.run_dir)
    score_line, how = result_lines(summary, len(t.data.test_y))
    t.log(paint(score_line, "result"))
    t.log(how)
    t.log(f"run directory: {t.run_dir}")
    return summary


def final_scores(t: Training) -> dict:
    """Test loss and accuracy of the loaded best weights; with train.tta also the single view and val."""
    test_loss, test_acc, test_n = score_all(t, t.batches["test"])
    scores = {"test_acc": test_acc, "test_loss": test_loss, "test_n": test_n}
    if t.cfg.train.tta:
        views = tta_for(t.data.mean, t.data.std)
        test_loss, test_acc, test_n = score_all(t, t.batches["test"], views)
        val_acc_tta = score_all(t, t.batches["val"], views)[1] if len(t.data.val_y) else None
        scores = {"test_acc": test_acc, "test_loss": test_loss, "test_n": test_n, "tta": True,
                  "test_acc_single_view": scores["test_acc"], "val_acc_tta": val_acc_tta}
    return scores


def build_summary(t: Training, scores: dict, stopped_early: bool, train_time: float, in_sync: bool) -> dict:
    """summary.json: what was trained, how, and how well (the key order is the file's)."""
    cfg, data, rows = t.cfg, t.data, t.saver.rows
    best_row = rows[t.saver.best_epoch - 1]
    tta = {k: scores[k] for k in ("tta", "test_acc_single_view", "val_acc_tta") if k in scores}
    return {
        "name": cfg.name, "model": cfg.model.name, "model_kwargs": cfg.model.kwargs, "params": t.params,
        **({"init": t.init} if t.init else {}),
        **({"freeze": cfg.train.freeze, "trainable_params": t.trainable} if cfg.train.freeze else {}),
        "dataset": data.dataset, "num_classes": data.num_classes, "seed": cfg.seed,
        **({"folds": cfg.data.folds, "fold": cfg.data.fold} if cfg.data.folds else {}),
        "test_acc": scores["test_acc"], "test_loss": scores["test_loss"], "test_n": scores["test_n"],
        "val_acc": best_row["val_acc"], "val_loss": best_row["val_loss"],
        "train_acc": best_row["train_acc"], "train_loss": best_row["train_loss"],
        "best_epoch": t.saver.best_epoch, "epochs_run": len(rows), "stopped_early": stopped_early,
        **tta, "selected_on": cfg.train.checkpoint_monitor, "train_time_s": train_time,
        "time_per_epoch_s": train_time / len(rows), "device": device_name(t.device),
        "amp": str(t.dtype).removeprefix("torch.") if t.dtype else "off",
        "pipeline": cfg.data.pipeline, "batch_size": t.batch_size, "train_size": len(data.train_y),
        "val_size": len(data.val_y), "world_size": t.world.size, "ranks_in_sync": in_sync,
        "run_dir": str(t.run_dir), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }


def already_finished(point: ResumePoint, log) -> dict:
    """--resume of a run that had finished: nothing to train; its curves drawn if the kill came first."""
    summary, acc = point.summary, point.summary.get("test_acc")
    if not (point.run_dir / CURVES).exists():
        write_run_curves_safely(point.run_dir, log)
    shown = f"{acc:.2%}" if isinstance(acc, (int, float)) else "not recorded"
    log(f"{point.run_dir} has already finished (it has a summary.json): test accuracy {shown}; nothing to do")
    return summary


# ---------------------------------------------------------------- helpers

def resolve_batch_size(setting, train_size: int) -> int:
    return min(4096, train_size) if setting == "auto" else int(setting)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Every random stream is reseeded from (seed, epoch, stream) at each epoch's start, so an
    epoch's randomness never depends on how the run got there: a resumed run repeats it exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63)


def create_training_model(cfg, num_classes: int, device: torch.device):
    """The config's model on `device`, in the memory layout it asks for."""
    model = create_model(cfg.model.name, num_classes=num_classes, in_channels=1, **cfg.model.kwargs).to(device)
    return apply_layout(model, cfg.train.channels_last)


def compile_if_asked(net, setting):
    """train.compile: false, true (torch.compile's default mode) or a mode name."""
    if not setting:
        return net
    return torch.compile(net, mode=None if setting is True else setting)


def wrap_distributed(model, world: World, device: torch.device, sync_batchnorm: bool):
    if not world.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:
        if device.type != "cuda":
            raise UserError("train.sync_batchnorm: SyncBatchNorm needs CUDA GPUs; set it to false on CPU")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def header_line(cfg, data: DataBundle, params: tuple[int, int], batch_size: int, device, dtype, world: World) -> str:
    """The run in one line; `params` is (all, training): train.freeze's frozen ones are counted apart."""
    total, trainable = params
    counted = f"{total:,} params" + (f", {trainable:,} of them train" if trainable != total else "")
    amp = (f", amp {str(dtype).removeprefix('torch.')}" if dtype else
           f", fp32 (amp {cfg.train.amp} is not used on {device.type})" if cfg.train.amp not in ("auto", "off")
           else "")
    return (f"{cfg.name}: {cfg.model.name} ({counted}) on {data.source}, {len(data.train_y):,} train / "
            f"{len(data.val_y):,} val / {len(data.test_y):,} test images, batch {batch_size}, device {device}"
            + amp + (f", {world.size} processes" if world.active else ""))


def init_line(init: dict, data: DataBundle) -> str:
    """What model.init started the run from, and its inputs' normalization: the checkpoint's unless
    data.normalize gives {mean, std} (training/finetune.py resolve_init)."""
    named = f" {init['from']}" if init["from"] != init["path"] else ""  # default, latest, best: which file
    return (f"  model.init{named}: {init['path']} (sha256 {init['sha256'][:12]})\n"
            f"  inputs normalised with mean {data.mean:.4g}, std {data.std:.4g}")


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
             f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"]
    if row["val_loss"] is not None:
        parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}")
    if row["test_acc"] is not None:
        parts.append(f"test acc {row['test_acc']:.2%}")
    parts.append(f"lr {row['lr']:.2e}")
    if row.get("train_images_per_s"):
        parts.append(f"{row['train_images_per_s']:,.0f} img/s")
    parts.append(f"{row['time_s']:.1f}s")
    return "  ".join(parts) + ("  " + paint("*", "best") if improved else "")


def result_lines(summary: dict, test_size: int) -> tuple[str, str]:
    """The run's result as two lines within 120 columns: the score, then which epoch and how it was chosen."""
    n, monitor = summary["test_n"], summary["selected_on"]
    selected = f"selected on {monitor}" if monitor != "last" else "the last epoch"
    how = f"best epoch {summary['best_epoch']} of {summary['epochs_run']}, {selected}; " \
          f"trained in {summary['train_time_s']:.1f}s"
    if summary["test_acc"] is None:
        val = f"val accuracy {summary['val_acc']:.2%}" if summary["val_acc"] is not None else "no validation set"
        return f"{val}, test set not scored", how
    scored = f"all {n:,} test images" if n == test_size else f"{n:,} of {test_size:,} test images (limit_eval_batches)"
    views = f"; 7 views, single view {summary['test_acc_single_view']:.2%}" if "tta" in summary else ""
    return f"test accuracy {summary['test_acc']:.2%} (loss {summary['test_loss']:.4f}{views}) on {scored}", how


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
