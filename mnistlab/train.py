"""`mnistlab train`: config -> data -> model -> engine -> checkpoints -> summary.

`run_training` is the whole pipeline in reading order, as torchvision's
references/classification/train.py `main` is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .checkpoint import (atomic_write_text, load_checkpoint, make_run_dir, model_payload, save_checkpoint,
                         versions)
from .config import config_to_dict, config_to_yaml
from .data import load_data, resolve_root
from .errors import UserError
from .engine import (EarlyStopping, NonFiniteLoss, amp_dtype, evaluate, is_improvement, monitor_mode,
                     resolve_device, train_one_epoch)
from .optim import build_optimizer, build_scheduler, current_lr
from .pipeline import DeviceBatches, classic_batches, eval_batches
from .registry import create_model
from .report import write_run_curves_safely

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "lr", "time_s"]


def resolve_batch_size(setting, train_size: int) -> int:
    return min(4096, train_size) if setting == "auto" else int(setting)


def run_training(cfg, *, data_dir: str | None = None, out_dir: str | Path = "checkpoints", quiet: bool = False,
                 log=print, resume: str | Path | None = None, config_path: str | None = None) -> dict:
    """Train one config to its best checkpoint, score it once on the test set, return the summary.

    With `resume` (a run directory or its last.pt) training continues from the last finished epoch
    with every piece of state restored, so the remaining epochs match an uninterrupted run.
    """
    previous = load_resume_state(resume, cfg) if resume else None
    say = (lambda *args, **kw: None) if quiet else log
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.train.amp, device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    data = load_data(cfg.data, cfg.seed, resolve_root(data_dir, cfg.data.root))
    batch_size = resolve_batch_size(cfg.train.batch_size, len(data.train_y))
    model = create_model(cfg.model.name, num_classes=data.num_classes, in_channels=1, **cfg.model.kwargs).to(device)
    params = sum(p.numel() for p in model.parameters())

    if cfg.data.pipeline == "device":
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        train_batches = DeviceBatches(data.train_x.to(device), data.train_y.to(device), batch_size, data.mean,
                                      data.std, cfg.data.augment, generator, limit=cfg.train.limit_train_batches)
    else:
        generator = torch.Generator().manual_seed(cfg.seed)
        train_batches = classic_batches(data.train_x, data.train_y, batch_size, data.mean, data.std,
                                        cfg.data.augment, generator, cfg.data.num_workers,
                                        cfg.data.pin_memory and device.type == "cuda", cfg.train.limit_train_batches)
    eval_bs, eval_limit = cfg.train.eval_batch_size, cfg.train.limit_eval_batches
    val_batches = eval_batches(data.val_x.to(device), data.val_y.to(device), eval_bs, data.mean, data.std, eval_limit)
    test_batches = eval_batches(data.test_x.to(device), data.test_y.to(device), eval_bs, data.mean, data.std,
                                eval_limit)

    optimizer = build_optimizer(cfg.train.optimizer, model.parameters())
    scheduler, when = build_scheduler(cfg.train.scheduler, optimizer, cfg.train.epochs, len(train_batches))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    stopper = (EarlyStopping(cfg.train.early_stopping.monitor, cfg.train.early_stopping.patience,
                             cfg.train.early_stopping.min_delta) if cfg.train.early_stopping else None)
    monitor = cfg.train.checkpoint_monitor
    config = config_to_dict(cfg)

    if previous is None:
        run_dir = make_run_dir(Path(out_dir), cfg.name)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    else:
        run_dir = previous["run_dir"]
    say(f"{cfg.name}: {cfg.model.name} ({params:,} params) on {data.dataset}, {len(data.train_y):,} train / "
        f"{len(data.val_y):,} val / {len(data.test_y):,} test images, batch {batch_size}, device {device}"
        + (f", amp {str(dtype).removeprefix('torch.')}" if dtype else ""))
    if monitor == "test_acc":
        say("note: the checkpoint is selected on TEST accuracy (allow_test_selection: true); "
            "the test number below is not an unbiased estimate")

    def payload(epoch: int, metrics: dict) -> dict:
        return model_payload(model, model_name=cfg.model.name, model_kwargs=cfg.model.kwargs, classes=data.classes,
                             mean=data.mean, std=data.std, input_size=[1, *data.train_x.shape[1:]],
                             config=config, metrics=metrics, epoch=epoch)

    rows: list[dict] = []
    best_value, best_epoch, stopped_early, first_epoch = None, 0, False, 1
    if previous is not None:
        state = previous["training_state"]
        model.load_state_dict(previous["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if stopper is not None:
            stopper.load_state_dict(state["early_stopping"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["generator"])
        if device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        rows, best_value, best_epoch = list(state["rows"]), state["best_value"], state["best_epoch"]
        first_epoch = previous["epoch"] + 1
        say(f"resuming {run_dir} after epoch {previous['epoch']}")
    started = time.perf_counter() - sum(r["time_s"] for r in rows)
    resume_hint = f"mnistlab train {config_path or '<config>'} --resume {run_dir}"
    try:
        for epoch in range(first_epoch, cfg.train.epochs + 1):
            epoch_start = time.perf_counter()
            lr = current_lr(optimizer)
            stats = train_one_epoch(model, train_batches, optimizer, device, label_smoothing=cfg.train.label_smoothing,
                                    dtype=dtype, scaler=scaler, batch_scheduler=scheduler if when == "batch" else None,
                                    desc=f"epoch {epoch}/{cfg.train.epochs}", show_progress=not quiet)
            val = evaluate(model, val_batches, device, dtype) if len(data.val_y) else None
            test = evaluate(model, test_batches, device, dtype) if monitor == "test_acc" else None
            row = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc,
                   "val_loss": val.loss if val else None, "val_acc": val.acc if val else None,
                   "test_acc": test.acc if test else None, "lr": lr, "time_s": time.perf_counter() - epoch_start}
            rows.append(row)
            atomic_write_text(run_dir / "metrics.csv", metrics_csv(rows))
            if stats.nonfinite_step >= 0 or not math.isfinite(row["val_loss"] if val else stats.loss):
                step = stats.nonfinite_step if stats.nonfinite_step >= 0 else len(train_batches) - 1
                kept = f"best.pt (epoch {best_epoch}) is kept in {run_dir}" if best_epoch else "no checkpoint was saved"
                raise NonFiniteLoss(f"training diverged: non-finite loss at epoch {epoch}, step {step + 1} "
                                    f"(lr {lr:.3g}); try a lower train.optimizer.lr, or amp: off; {kept}")
            if scheduler is not None and when == "epoch":
                scheduler.step()
            elif scheduler is not None and when == "metric":
                scheduler.step(row[cfg.train.scheduler.monitor])

            value = epoch if monitor == "last" else row[monitor]
            improved = monitor == "last" or is_improvement(value, best_value, monitor_mode(monitor))
            if improved:
                best_value, best_epoch = value, epoch
                save_checkpoint(payload(epoch, row), run_dir / "best.pt")
            last = payload(epoch, row)
            last["training_state"] = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "early_stopping": stopper.state_dict() if stopper else None,
                "best_value": best_value, "best_epoch": best_epoch, "rows": rows,
                "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            }
            save_checkpoint(last, run_dir / "last.pt")
            say(epoch_line(row, cfg.train.epochs, improved))
            if stopper is not None and stopper.step(row[stopper.monitor]):
                stopped_early = True
                say(f"early stopping: {stopper.monitor} has not improved for {stopper.patience} epochs")
                break
    except KeyboardInterrupt:
        done = f"last.pt holds epoch {rows[-1]['epoch']}" if rows else "no epoch had finished"
        log(f"interrupted: {done}; resume with: {resume_hint}")
        raise
    train_time = time.perf_counter() - started

    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    test = evaluate(model, test_batches, device, dtype)
    best["metrics"] = {**best["metrics"], "test_loss": test.loss, "test_acc": test.acc, "test_n": test.n}
    save_checkpoint(best, run_dir / "best.pt")

    best_row = rows[best_epoch - 1]
    summary = {
        "name": cfg.name, "model": cfg.model.name, "model_kwargs": cfg.model.kwargs, "params": params,
        "dataset": data.dataset, "num_classes": data.num_classes, "seed": cfg.seed,
        "test_acc": test.acc, "test_loss": test.loss, "test_n": test.n,
        "val_acc": best_row["val_acc"], "val_loss": best_row["val_loss"],
        "train_acc": best_row["train_acc"], "train_loss": best_row["train_loss"],
        "best_epoch": best_epoch, "epochs_run": len(rows), "stopped_early": stopped_early,
        "selected_on": monitor, "train_time_s": train_time, "time_per_epoch_s": train_time / len(rows),
        "device": device_name(device), "amp": str(dtype).removeprefix("torch.") if dtype else "off",
        "pipeline": cfg.data.pipeline, "batch_size": batch_size, "train_size": len(data.train_y),
        "val_size": len(data.val_y), "world_size": 1, "run_dir": str(run_dir),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_run_curves_safely(run_dir, log)
    selected = f"selected on {monitor}" if monitor != "last" else "the last epoch"
    scored = f"all {test.n:,}" if test.n == len(data.test_y) else f"only {test.n:,} of {len(data.test_y):,} (limit_eval_batches)"
    log(f"test accuracy {test.acc:.2%} (loss {test.loss:.4f}) on {scored} test images; "
        f"best epoch {best_epoch} of {len(rows)}, {selected}; trained in {train_time:.1f}s")
    log(f"run directory: {run_dir}")
    return summary


def load_resume_state(resume: str | Path, cfg) -> dict:
    """last.pt of an unfinished run whose config matches (more epochs may be asked for)."""
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
    if ckpt["epoch"] >= cfg.train.epochs:
        raise UserError(f"--resume: the run already did {ckpt['epoch']} epochs; raise train.epochs to go on")
    ckpt["run_dir"] = run_dir
    return ckpt


def first_difference(a, b, ignore=(), prefix=""):
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
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                         for k in METRIC_COLUMNS})
    return out.getvalue()


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
             f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"]
    if row["val_loss"] is not None:
        parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}")
    if row["test_acc"] is not None:
        parts.append(f"test acc {row['test_acc']:.2%}")
    parts += [f"lr {row['lr']:.2e}", f"{row['time_s']:.1f}s"]
    return "  ".join(parts) + ("  *" if improved else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
