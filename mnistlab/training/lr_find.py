"""`mnistlab lr-find`: the learning-rate range test (Leslie Smith's, as fastai's and Lightning's lr_find run it).

From the config's initial weights (model.init's, or a fresh model seeded by `seed`), train on the training
split with the learning rate rising exponentially each step from `start` to `end`, keep an exponentially
smoothed loss, and stop when it diverges (over DIVERGED x its best, or not finite). The suggestion is the
learning rate where the smoothed loss falls fastest (its steepest descent against log lr), as Lightning
suggests; a curve too short for a slope (under MIN_POINTS_FOR_SLOPE steps) suggests its minimum's lr / 10,
fastai's older rule. Nothing is written here: the caller draws the curve. The test set is never loaded
onto the device, and validation is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.datasets import load_data, resolve_root
from ..errors import UserError
from .distributed import World
from .engine import amp_dtype, autocast, optimizer_step, resolve_device
from .finetune import read_start, resolve_init
from .optim import build_optimizer
from .trainer import resolve_batch_size, starting_model, train_batches

DIVERGED = 4.0  # the smoothed loss over this many times its best ends the test
SMOOTHING = 0.98  # fastai's beta: the debiased exponential moving average of the loss
MIN_POINTS_FOR_SLOPE = 5


@dataclass
class LRFind:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    method: str  # how the suggestion was found, in words
    stopped: str  # why the test ended, in words


def check_range(start: float, end: float, steps: int) -> None:
    if not (math.isfinite(start) and start > 0):
        raise UserError(f"--start: got {start}; give a learning rate above 0, e.g. 1e-7")
    if not (math.isfinite(end) and end > start):
        raise UserError(f"--end: got {end}; give a learning rate above --start ({start:g}), e.g. 1")
    if steps < 2:
        raise UserError(f"--steps: got {steps}; give 2 or more steps")


def lr_range_test(cfg, *, start: float = 1e-7, end: float = 1.0, steps: int = 100, data_dir=None,
                  quiet: bool = False) -> LRFind:
    check_range(start, end, steps)
    if cfg.model.init:
        cfg = resolve_init(cfg, begin := read_start(cfg.model.init))
    else:
        begin = None
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.train.amp, device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, cfg.seed, resolve_root(data_dir, cfg.data.root), progress=not quiet)
    model, _, _, _ = starting_model(cfg, data, device, begin, None)
    generators = {"shuffle": torch.Generator(device=device if cfg.data.pipeline == "device" else "cpu"),
                  "augment": torch.Generator(device=device)}
    generators["shuffle"].manual_seed(cfg.seed)
    generators["augment"].manual_seed(cfg.seed + 1)
    batches = train_batches(cfg, data, resolve_batch_size(cfg.train.batch_size, len(data.train_y)), device,
                            World(), generators)
    optimizer = build_optimizer(cfg.train.optimizer, [p for p in model.parameters() if p.requires_grad])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    lrs, losses, stopped = run_range(model, batches, optimizer, scaler, device, dtype, cfg.train.label_smoothing,
                                     [start * (end / start) ** (i / (steps - 1)) for i in range(steps)])
    if not lrs:
        raise UserError(f"lr-find: the loss was not finite from the first step at lr {start:g}; lower --start")
    suggestion, method = suggest(lrs, losses)
    return LRFind(lrs, losses, suggestion, method, stopped)


def run_range(model, batches, optimizer, scaler, device, dtype, label_smoothing: float, schedule: list[float]):
    """One training step per learning rate in `schedule`, cycling the batches; the lrs reached, the smoothed
    losses, and why it ended."""
    model.train()
    lrs, losses, average, best = [], [], 0.0, math.inf
    step = 0
    while True:
        for x, y in batches:
            if step == len(schedule):
                return lrs, losses, f"all {len(schedule)} steps run"
            for group in optimizer.param_groups:
                group["lr"] = schedule[step]
            loss = train_step(model, x.to(device), y.to(device), optimizer, scaler, device, dtype, label_smoothing)
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
                return lrs, losses, f"the loss diverged at lr {schedule[step]:.2g} (step {step + 1})"
            lrs.append(schedule[step])
            losses.append(smoothed)
            best = min(best, smoothed)
            step += 1


def train_step(model, x, y, optimizer, scaler, device, dtype, label_smoothing: float) -> float:
    with autocast(device, dtype):
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    optimizer_step(loss, optimizer, scaler)
    return float(loss.detach())


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, str]:
    """The lr of the steepest descent of the smoothed loss against log lr, or the minimum's lr / 10."""
    if len(lrs) < MIN_POINTS_FOR_SLOPE:
        return max(lrs[0], lrs[losses.index(min(losses))] / 10), "the lr of the lowest loss / 10 (too few steps for a slope)"
    import numpy as np

    slopes = np.gradient(np.asarray(losses), np.log10(lrs))
    return float(lrs[int(np.argmin(slopes))]), "steepest descent of the smoothed loss"
