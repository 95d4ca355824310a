"""mnistlab's own models: small, accurate or fast, each with a config that trains it.

Their parameter counts are in their descriptions and in `mnistlab models`; the configs that
train them are configs/compact8k.yaml, configs/best.yaml and configs/speedrun.yaml.
"""

from __future__ import annotations

from torch import nn

from ._layers import conv_block, dropout
from ._registry import register_model



@register_model
def compact8k(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """mnistlab's small model (7,646 params): five 3x3 conv-BN-ReLU, two pools, global average pool, 1x1 head."""
    return nn.Sequential(
        *conv_block(in_channels, 8, 3, bn=True), *conv_block(8, 12, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(12, 16, 3, bn=True), *conv_block(16, 16, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(16, 16, 3, bn=True), nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(16, num_classes, 1), nn.Flatten(),
    )


@register_model
def speedrun(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """mnistlab's fast-to-99% model (23,194 params): three conv-BN-ReLU-pool blocks (16, 32, 48), one linear layer."""
    return nn.Sequential(
        *conv_block(in_channels, 16, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(16, 32, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(32, 48, 3, bn=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(48 * 3 * 3, num_classes),
    )


@register_model
def cnn5_bn(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.3) -> nn.Module:
    """mnistlab's accurate model (87,346 params): two conv-BN-ReLU pairs (24, 48), a conv (96), dropout, linear."""
    return nn.Sequential(
        *conv_block(in_channels, 24, 3, bn=True), *conv_block(24, 24, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(24, 48, 3, bn=True), *conv_block(48, 48, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(48, 96, 3, bn=True), nn.MaxPool2d(2),
        nn.Flatten(), *dropout(dropout_p), nn.Linear(96 * 3 * 3, num_classes),
    )
