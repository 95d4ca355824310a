"""`mnistlab train`: config -> data -> model -> engine -> checkpoints -> summary.

`run_training` is the whole pipeline in reading order, as torchvision's
references/classification/train.py `main` is. Under torchrun every rank runs it;
rank 0 alone prints and writes the run directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .augment import tta_for
from .checkpoint import (atomic_write_text, load_checkpoint, make_run_dir, model_payload, save_checkpoint,
                         versions)
from .config import config_to_dict, config_to_yaml
from .data import load_data, resolve_root
from .distributed import World, broadcast_object, init_world, ranks_agree, shutdown, sum_across, sync_buffers
from .engine import (EarlyStopping, NonFiniteLoss, amp_dtype, evaluate, is_improvement, keep_freed_host_memory,
                     monitor_mode, resolve_device, train_one_epoch)
from .errors import UserError
from .layout import apply_layout
from .optim import build_optimizer, build_scheduler, current_lr
from .pipeline import DeviceBatches, classic_batches, eval_batches
from .registry import create_model
from .report import write_run_curves_safely

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "lr", "time_s",
                  "train_images_per_s"]


def resolve_batch_size(setting, train_size: int) -> int:
    return min(4096, train_size) if setting == "auto" else int(setting)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Every random stream is reseeded from (seed, epoch, stream) at each epoch's start, so an
    epoch's randomness never depends on how the run got there: a resumed run repeats it exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63)


def run_training(cfg, *, data_dir: str | None = None, out_dir: str | Path = "checkpoints", quiet: bool = False,
                 log=print, resume: str | Path | None = None, config_path: str | None = None) -> dict:
    """Train one config to its best checkpoint, score it once on the test set, return the summary.

    With `resume` (a run directory or its last.pt) training continues after the last finished epoch
    with model, optimizer, scheduler, scaler and early-stopping state restored.
    """
    world, device_setting = init_world(cfg.device)
    try:
        return _train(cfg, world, device_setting, data_dir, out_dir, quiet, log, resume, config_path)
    finally:
        shutdown(world)


def _train(cfg, world: World, device_setting: str, data_dir, out_dir, quiet, log, resume, config_path) -> dict:
    log = log if world.is_main else (lambda *args, **kw: None)
    say = (lambda *args, **kw: None) if quiet else log
    previous = load_resume_state(resume, cfg, world.size) if resume else None
    device = resolve_device(device_setting)
    dtype = amp_dtype(cfg.train.amp, device)
    keep_freed_host_memory()
    torch.manual_seed(cfg.seed)  # the model's initial weights: the same on every rank

    data = load_data(cfg.data, cfg.seed, resolve_root(data_dir, cfg.data.root))
    batch_size = resolve_batch_size(cfg.train.batch_size, len(data.train_y))
    model = create_training_model(cfg, data.num_classes, device)
    params = sum(p.numel() for p in model.parameters())
    net = compile_if_asked(wrap_distributed(model, world, device, cfg.train.sync_batchnorm), cfg.train.compile)

    shuffle_gen = torch.Generator(device=device if cfg.data.pipeline == "device" else "cpu")
    aug_gen = torch.Generator(device=device)
    if cfg.data.pipeline == "device":
        train_batches = DeviceBatches(data.train_x.to(device), data.train_y.to(device), batch_size, data.mean,
                                      data.std, cfg.data.augment, shuffle_gen, limit=cfg.train.limit_train_batches,
                                      aug_generator=aug_gen, rank=world.rank, world=world.size)
    else:
        train_batches = classic_batches(data.train_x, data.train_y, batch_size, data.mean, data.std,
                                        cfg.data.augment, shuffle_gen, cfg.data.num_workers,
                                        cfg.data.pin_memory and device.type == "cuda", cfg.train.limit_train_batches,
                                        world.rank, world.size)
    eval_bs, eval_limit = cfg.train.eval_batch_size, cfg.train.limit_eval_batches
    val_batches = eval_batches(data.val_x.to(device), data.val_y.to(device), eval_bs, data.mean, data.std,
                               eval_limit, world.rank, world.size)
    test_batches = eval_batches(data.test_x.to(device), data.test_y.to(device), eval_bs, data.mean, data.std,
                                eval_limit, world.rank, world.size)

    def score(batches, views=None) -> tuple[float, float, int]:
        """Loss, accuracy and count over all ranks' shares."""
        sync_buffers(world, model)
        r = evaluate(model, batches, device, dtype, views)
        loss_sum, correct, n = sum_across(world, [r.loss * r.n, r.acc * r.n, r.n], device)
        return loss_sum / max(n, 1), correct / max(n, 1), int(n)

    optimizer = build_optimizer(cfg.train.optimizer, net.parameters())
    scheduler, when = build_scheduler(cfg.train.scheduler, optimizer, cfg.train.epochs, len(train_batches))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    stopper = (EarlyStopping(cfg.train.early_stopping.monitor, cfg.train.early_stopping.patience,
                             cfg.train.early_stopping.min_delta) if cfg.train.early_stopping else None)
    monitor = cfg.train.checkpoint_monitor
    config = config_to_dict(cfg)
    run_dir = open_run_dir(cfg, world, out_dir, previous)

    say(f"{cfg.name}: {cfg.model.name} ({params:,} params) on {data.dataset}, {len(data.train_y):,} train / "
        f"{len(data.val_y):,} val / {len(data.test_y):,} test images, batch {batch_size}, device {device}"
        + (f", amp {str(dtype).removeprefix('torch.')}" if dtype else
           f", fp32 (amp {cfg.train.amp} is not used on {device.type})" if cfg.train.amp not in ("auto", "off") else "")
        + (f", {world.size} processes" if world.active else ""))
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
        rows, best_value, best_epoch = list(state["rows"]), state["best_value"], state["best_epoch"]
        first_epoch = previous["epoch"] + 1
        say(f"resuming {run_dir} after epoch {previous['epoch']}")
    started = time.perf_counter() - sum(r["time_s"] for r in rows)
    resume_hint = f"mnistlab train {config_path or '<config>'} --resume {run_dir}"
    try:
        for epoch in range(first_epoch, cfg.train.epochs + 1):
            epoch_start = time.perf_counter()
            torch.manual_seed(epoch_seed(cfg.seed, epoch, 1 + world.rank))  # dropout
            shuffle_gen.manual_seed(epoch_seed(cfg.seed, epoch, 0))  # the same order on every rank
            aug_gen.manual_seed(epoch_seed(cfg.seed, epoch, 1_000 + world.rank))
            sampler = getattr(getattr(train_batches, "loader", None), "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            lr = current_lr(optimizer)
            train_start = time.perf_counter()
            stats = train_one_epoch(net, train_batches, optimizer, device, label_smoothing=cfg.train.label_smoothing,
                                    dtype=dtype, scaler=scaler, batch_scheduler=scheduler if when == "batch" else None,
                                    desc=f"epoch {epoch}/{cfg.train.epochs}", show_progress=not quiet and world.is_main)
            train_seconds = time.perf_counter() - train_start  # stats were read back: the device is done
            loss_sum, correct, seen, diverged = sum_across(
                world, [stats.loss * stats.n, stats.acc * stats.n, stats.n, float(stats.nonfinite_step >= 0)], device)
            val_loss, val_acc, val_n = score(val_batches) if len(data.val_y) else (None, None, 0)
            test_acc = score(test_batches)[1] if monitor == "test_acc" else None
            row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   "val_loss": val_loss, "val_acc": val_acc, "test_acc": test_acc, "lr": lr,
                   "time_s": time.perf_counter() - epoch_start, "train_images_per_s": seen / train_seconds}
            rows.append(row)
            if world.is_main:
                atomic_write_text(run_dir / "metrics.csv", metrics_csv(rows))
            if diverged or not math.isfinite(row["val_loss"] if val_n else row["train_loss"]):
                step = f"step {stats.nonfinite_step + 1}" if stats.nonfinite_step >= 0 else "its end"
                kept = f"best.pt (epoch {best_epoch}) is kept in {run_dir}" if best_epoch else "no checkpoint was saved"
                raise NonFiniteLoss(f"training diverged: non-finite loss at epoch {epoch}, {step} "
                                    f"(lr {lr:.3g}); try a lower train.optimizer.lr, or amp: off; {kept}")
            if scheduler is not None and when == "epoch":
                scheduler.step()
            elif scheduler is not None and when == "metric":
                scheduler.step(row[cfg.train.scheduler.monitor])

            value = epoch if monitor == "last" else row[monitor]
            improved = monitor == "last" or is_improvement(value, best_value, monitor_mode(monitor))
            if improved:
                best_value, best_epoch = value, epoch
            if world.is_main:
                if improved:
                    save_checkpoint(payload(epoch, row), run_dir / "best.pt")
                last = payload(epoch, row)
                last["training_state"] = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "early_stopping": stopper.state_dict() if stopper else None,
                    "best_value": best_value, "best_epoch": best_epoch, "rows": rows, "world_size": world.size,
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
    in_sync = ranks_agree(world, model)

    broadcast_object(world, None)  # rank 0 has written best.pt before anyone reads it
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    test_loss, test_acc, test_n = score(test_batches)
    best_row = rows[best_epoch - 1]
    tta = {}
    if cfg.train.tta:
        views = tta_for(data.mean, data.std)
        single_view = test_acc
        test_loss, test_acc, test_n = score(test_batches, views)
        tta = {"tta": True, "test_acc_single_view": single_view,
               "val_acc_tta": score(val_batches, views)[1] if len(data.val_y) else None}
    summary = {
        "name": cfg.name, "model": cfg.model.name, "model_kwargs": cfg.model.kwargs, "params": params,
        "dataset": data.dataset, "num_classes": data.num_classes, "seed": cfg.seed,
        "test_acc": test_acc, "test_loss": test_loss, "test_n": test_n,
        "val_acc": best_row["val_acc"], "val_loss": best_row["val_loss"],
        "train_acc": best_row["train_acc"], "train_loss": best_row["train_loss"],
        "best_epoch": best_epoch, "epochs_run": len(rows), "stopped_early": stopped_early,
        **tta, "selected_on": monitor, "train_time_s": train_time, "time_per_epoch_s": train_time / len(rows),
        "device": device_name(device), "amp": str(dtype).removeprefix("torch.") if dtype else "off",
        "pipeline": cfg.data.pipeline, "batch_size": batch_size, "train_size": len(data.train_y),
        "val_size": len(data.val_y), "world_size": world.size, "ranks_in_sync": in_sync, "run_dir": str(run_dir),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
    }
    if world.is_main:
        best["metrics"] = {**best["metrics"], "test_loss": test_loss, "test_acc": test_acc, "test_n": test_n}
        save_checkpoint(best, run_dir / "best.pt")
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        write_run_curves_safely(run_dir, log)
    selected = f"selected on {monitor}" if monitor != "last" else "the last epoch"
    scored = f"all {test_n:,}" if test_n == len(data.test_y) else f"only {test_n:,} of {len(data.test_y):,} (limit_eval_batches)"
    how = f" with test-time augmentation, {tta['test_acc_single_view']:.2%} single-view," if tta else ""
    log(f"test accuracy {test_acc:.2%} (loss {test_loss:.4f}){how} on {scored} test images; "
        f"best epoch {best_epoch} of {len(rows)}, {selected}; trained in {train_time:.1f}s")
    log(f"run directory: {run_dir}")
    return summary


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


def open_run_dir(cfg, world: World, out_dir, previous) -> Path:
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
        writer.writerow({k: ("" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                         for k in METRIC_COLUMNS})  # rows resumed from older runs may lack a column
    return out.getvalue()


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
    return "  ".join(parts) + ("  *" if improved else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
