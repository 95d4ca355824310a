"""train.ema: an exponential moving average of the weights, scored and checkpointed as the model.

After every optimizer step each averaged weight moves 1 - decay of the way to the trained one
(torch.optim.swa_utils.AveragedModel: one foreach lerp per step). The average starts as a copy of
the initial weights. Without a warm-up, decay 0.999 takes a few thousand steps to forget them, and
a short run's average is still mostly its random start (compact8k's read 17% on validation after
its first epoch). With `warmup` (the default) the decay of the k-th update is
min(decay, 1 - (1 + k) ** -2/3), timm's ModelEmaV3 warm-up: 0.37 at the first update, 0.95 at the
hundredth, 0.99 at the thousandth, the full 0.999 from about 31,600 on, so the average follows the
trained weights early on and smooths them later. BatchNorm's running statistics are averaged
with the weights (use_buffers), as timm's ModelEmaV3 does: the statistics then belong to weights
like the averaged ones, and the averaged model needs no extra pass over the data.

The trained model stays what the optimizer steps; the average is what validation sees, what
best.pt and last.pt hold as the model, and what the test set scores. last.pt also keeps the
trained weights and the average's step count, so a resumed run continues both.
"""

from __future__ import annotations

import torch


WARMUP_POWER = 2 / 3  # timm's ModelEmaV3 default (warmup_power); its warmup_gamma 1 is built in below


def build_ema(setting, trained: torch.nn.Module):
    """The average of `trained` (an AveragedModel; its .module is a model of the same class), or None."""
    if setting is None:
        return None
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(trained, multi_avg_fn=ema_update(setting.decay, setting.warmup), use_buffers=True)


def decay_at(decay: float, warmup: bool, updates: int) -> float:
    """The decay of an update made after `updates` earlier ones (the first, updates 0, copies)."""
    return min(decay, 1.0 - (1.0 + updates) ** -WARMUP_POWER) if warmup else decay


def ema_update(decay: float, warmup: bool):
    """AveragedModel's multi_avg_fn. Its update count (n_averaged, a buffer) is saved in last.pt, so a
    resumed run goes on with the decay it had reached."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        d = decay_at(decay, warmup, int(n_averaged))  # AveragedModel reads n_averaged on the host anyway
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # BatchNorm's step counter (an integer buffer), as torch's own EMA function does
            for a, c in zip(averaged, current, strict=True):
                a.copy_(a * d + c * (1 - d))

    return update
