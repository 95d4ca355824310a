"""Building blocks shared by the reference models and mnistlab's own."""

from __future__ import annotations

from torch import nn


def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


def conv_block(cin: int, cout: int, k: int, bn: bool = False) -> list[nn.Module]:
    return [conv(cin, cout, k), *([nn.BatchNorm2d(cout)] if bn else []), nn.ReLU(inplace=True)]


def dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []
