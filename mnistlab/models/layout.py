"""The memory layout a model trains in: train.channels_last.

true: every 4-D weight, and so every activation, is NHWC (channels_last), the layout tensor-core GPUs
and oneDNN's CPU convolutions prefer. after_first_pool: the stem, everything before the first pooling
layer, stays NCHW and the rest is NHWC. Why: on CPUs ATen's NHWC BatchNorm is slow for narrow
(8-channel) stems while its NCHW max-pooling is slow everywhere, so models with narrow batch-normalized
stems (iter5, compact8k) train fastest this way, and models with wide stems prefer true.
`python bench/scaling.py` prices the three layouts per model; the README has its figures. None changes what is computed beyond float rounding, and a checkpoint loads into a model of
any layout.
"""

from __future__ import annotations

import torch
from torch import nn

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)


class _ToChannelsLast(torch.autograd.Function):
    """NHWC forward; the gradient goes back NCHW, the layout of the stem it flows into (an NHWC
    gradient there would send every stem layer's backward down its slow mixed-layout path)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _nhwc_input(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (_ToChannelsLast.apply(x), *args[1:]) if x.dim() == 4 else args


def apply_layout(model: nn.Module, setting: bool | str) -> nn.Module:
    """`model` in the layout train.channels_last asks for (false, true or after_first_pool)."""
    if not setting:
        return model
    if setting is True:
        return model.to(memory_format=torch.channels_last)
    modules = list(model.modules())  # pre-order: for nn.Sequential models, the order layers run in
    first = next((i for i, m in enumerate(modules) if isinstance(m, POOLS)), None)
    if first is None:
        return model
    modules[first].register_forward_pre_hook(_nhwc_input)
    for later in modules[first + 1:]:  # a container listed after the pool holds only later layers
        later.to(memory_format=torch.channels_last)
    return model
