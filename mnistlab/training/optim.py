"""Optimizers and learning-rate schedules from their config sections."""

from __future__ import annotations

import torch

from .engine import monitor_mode


def build_optimizer(cfg, params):
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.name]
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused_on(params))


def fused_on(params) -> bool | None:
    """Adam's fused kernel on CUDA: one launch per step for all the parameters, where the default
    (foreach) needs several (bench/launches.py counts them), and small models' GPU steps are bound by
    launches. The CPU keeps its default: fused did not measure faster there, and the documented
    results were trained so."""
    return True if params and all(p.is_cuda for p in params) else None


def build_scheduler(cfg, optimizer, epochs: int, steps_per_epoch: int):
    """Returns (scheduler or None, when): when is 'batch', 'epoch' or 'metric' (plateau)."""
    S = torch.optim.lr_scheduler
    if cfg.name == "none":
        return None, "epoch"
    if cfg.name in ("step", "multistep", "cosine"):
        return with_warmup(cfg, optimizer, epochs), "epoch"
    if cfg.name == "plateau":
        return S.ReduceLROnPlateau(optimizer, mode=monitor_mode(cfg.monitor), factor=cfg.factor, patience=cfg.patience,
                                   min_lr=cfg.min_lr), "metric"
    if cfg.name == "onecycle":
        max_lr = cfg.max_lr or optimizer.param_groups[0]["lr"]
        # OneCycleLR divides by zero when its warm-up ends exactly on step 0 (a smoke run of 5 steps at
        # pct_start 0.2): warm up for at least 2 steps, or 3/4 of a run shorter than 3 steps.
        pct_start = max(cfg.pct_start, min(2 / (epochs * steps_per_epoch), 0.75))
        return S.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            pct_start=pct_start, div_factor=cfg.div_factor,
                            final_div_factor=cfg.final_div_factor), "batch"
    raise AssertionError(f"unhandled scheduler {cfg.name}")


def with_warmup(cfg, optimizer, epochs: int):
    """An epoch-stepped schedule, after cfg.warmup_epochs of a linear rise from lr * warmup_start to lr
    (stepped per epoch like the schedule; the schedule's epochs count from the warm-up's end)."""
    S = torch.optim.lr_scheduler
    warmup = cfg.warmup_epochs
    if cfg.name == "step":
        main = S.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif cfg.name == "multistep":
        main = S.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    else:
        main = S.CosineAnnealingLR(optimizer, T_max=cfg.t_max or epochs - warmup, eta_min=cfg.eta_min)
    if not warmup:
        return main
    rise = S.LinearLR(optimizer, start_factor=cfg.warmup_start, end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(optimizer, [rise, main], milestones=[warmup])


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
