"""train.ema: an exponential moving average of the weights, scored and checkpointed as the model.

After every optimizer step each averaged weight moves 1 - decay of the way to the trained one
(torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn: one foreach lerp per step). The
average starts as a copy of the initial weights; with decay 0.999 it forgets them within a few
thousand steps, so short runs want a smaller decay. BatchNorm's running statistics are averaged
with the weights (use_buffers), as timm's ModelEmaV3 does: the statistics then belong to weights
like the averaged ones, and the averaged model needs no extra pass over the data.

The trained model stays what the optimizer steps; the average is what validation sees, what
best.pt and last.pt hold as the model, and what the test set scores. last.pt also keeps the
trained weights and the average's step count, so a resumed run continues both.
"""

from __future__ import annotations

import torch


def build_ema(setting, trained: torch.nn.Module):
    """The average of `trained` (an AveragedModel; its .module is a model of the same class), or None."""
    if setting is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(setting.decay), use_buffers=True)
