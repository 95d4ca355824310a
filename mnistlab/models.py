"""The built-in models: every seed model of ../shared/MODELS.md, exactly, plus mnistlab's own.

All take N x C x 28 x 28 and return logits (the loss applies log-softmax).
Layer lists are spelled out as nn.Sequential so torchsummary and the layer
counts in reports show them as the seeds described them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


def conv_block(cin: int, cout: int, k: int, bn: bool = False) -> list[nn.Module]:
    return [conv(cin, cout, k), *([nn.BatchNorm2d(cout)] if bn else []), nn.ReLU(inplace=True)]


def dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


# ---------------------------------------------------------------- seed 001 / 000

@register_model
def baseline_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 001's Model_1 / seed 000's script 1: two 3x3 convs, two FCs (the seed said 15,106; it is 26,698)."""
    return nn.Sequential(
        *conv_block(in_channels, 8, 3), nn.MaxPool2d(2),
        *conv_block(8, 16, 3), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(inplace=True), nn.Linear(32, num_classes),
    )


@register_model
def baseline_cnn_small(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.2) -> nn.Module:
    """Seed 001's Model_2: narrower convs (6, 12), dropout before a 24-unit FC."""
    return nn.Sequential(
        *conv_block(in_channels, 6, 3), nn.MaxPool2d(2),
        *conv_block(6, 12, 3), nn.MaxPool2d(2),
        *dropout(dropout_p),
        nn.Flatten(), nn.Linear(12 * 7 * 7, 24), nn.ReLU(inplace=True), nn.Linear(24, num_classes),
    )


@register_model
def bn_dropout_cnn(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.25) -> nn.Module:
    """Seed 000's script 2: baseline_cnn with BatchNorm after each conv and dropout before the last FC."""
    return nn.Sequential(
        *conv_block(in_channels, 8, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(8, 16, 3, bn=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(inplace=True),
        *dropout(dropout_p), nn.Linear(32, num_classes),
    )


# ---------------------------------------------------------------- seed 002: seven 1x1-conv iterations

def one_by_one_net(
    in_channels: int,
    num_classes: int,
    block1: int,
    block2: int,
    squeeze: int,
    block3: list[tuple[int, int]],
    bn: bool = False,
    drop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> nn.Module:
    """input -> block1 -> pool -> block2 -> pool -> 1x1 squeeze -> block3 -> fc.

    `block3` is a list of (out_channels, kernel); `drop` is dropout after block 1,
    after block 2, after block 3's first conv, and before the fc (seed 002's iteration 7).
    """
    layers: list[nn.Module] = [
        *conv_block(in_channels, block1, 3, bn), nn.MaxPool2d(2), *dropout(drop[0]),
        *conv_block(block1, block2, 3, bn), nn.MaxPool2d(2), *dropout(drop[1]),
        *conv_block(block2, squeeze, 1),
    ]
    channels = squeeze
    for i, (out, k) in enumerate(block3):
        layers += conv_block(channels, out, k)
        if i == 0:
            layers += dropout(drop[2])
        channels = out
    layers += [nn.Flatten(), *dropout(drop[3]), nn.Linear(channels * 7 * 7, num_classes)]
    return nn.Sequential(*layers)


@register_model
def iter1(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 002 iteration 1: 16/32 channels and a 1x1 squeeze, no BN."""
    return one_by_one_net(in_channels, num_classes, 16, 32, 16, [(32, 3), (32, 1)])


@register_model
def iter2(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 002 iteration 2: 8/16 channels, a longer block 3 (< 25K params)."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(16, 3), (16, 1), (32, 3), (32, 1)])


@register_model
def iter3(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 002 iteration 3: block 3 is conv 8->32 and a 1x1 to 28 (< 20K params)."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)])


@register_model
def iter4(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 002 iteration 4: iter3 with BatchNorm in blocks 1-2 and a 32->32 final 1x1."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (32, 1)], bn=True)


@register_model
def iter5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 002 iteration 5 (the seed's best): iter3 with BatchNorm in blocks 1-2."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)], bn=True)


@register_model
def iter6(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.5) -> nn.Module:
    """Seed 002 iteration 6: iter5 with dropout before the fc."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)], bn=True,
                          drop=(0.0, 0.0, 0.0, dropout_p))


@register_model
def iter7(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 002 iteration 7: iter5 with dropout 0.1 / 0.2 / 0.3 / 0.5 after each block."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)], bn=True,
                          drop=(0.1, 0.2, 0.3, 0.5))


# ---------------------------------------------------------------- seed 003: NN vs CNN vs VGG16

@register_model
def mlp(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 003's NN: two 512-unit hidden layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * 28 * 28, 512), nn.ReLU(inplace=True),
        nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )


@register_model
def cnn_large(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Seed 003's CNN: three 3x3 convs (32, 64, 64) and a 1024-512 FC head."""
    return nn.Sequential(
        *conv_block(in_channels, 32, 3), *conv_block(32, 64, 3), nn.MaxPool2d(2),
        *conv_block(64, 64, 3), nn.AdaptiveAvgPool2d((7, 7)),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )


class ResizeToRGB(nn.Module):
    """Grayscale digits into what an ImageNet network expects: resized up, 3 channels."""

    def __init__(self, size: int, in_channels: int):
        super().__init__()
        self.size, self.repeat = size, 3 // in_channels if in_channels in (1, 3) else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.repeat(1, self.repeat, 1, 1) if self.repeat > 1 else x


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 1, image_size: int = 32, pretrained: str | None = None) -> nn.Module:
    """Seed 003's VGG16 (torchvision's), 10-class head, input resized up; `pretrained`: a local weights file."""
    import warnings

    from torchvision.models import vgg16 as tv_vgg16

    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (VGG16's five pools), got {image_size}")
    if in_channels not in (1, 3):
        raise ValueError(f"vgg16 takes 1 or 3 input channels, got {in_channels}")
    net = tv_vgg16(weights=None, num_classes=num_classes)
    if pretrained:
        load_imagenet_backbone(net, pretrained)
    else:
        warnings.warn("vgg16: no `pretrained` weights file given, training from scratch", stacklevel=2)
    return nn.Sequential(ResizeToRGB(image_size, in_channels), net)


def load_imagenet_backbone(net: nn.Module, path: str) -> None:
    """Load torchvision ImageNet VGG16 weights from a local file, all but the class head."""
    from pathlib import Path

    from .errors import UserError

    if not Path(path).is_file():
        raise UserError(f"model.pretrained: weights file not found: {path} (nothing can be downloaded here)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's file, not our bug
        raise UserError(f"model.pretrained: cannot read {path} as VGG16 weights: {exc}") from None
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("features.") for k in usable):
        raise UserError(f"model.pretrained: {path} holds no VGG16 feature weights")
    net.load_state_dict(usable, strict=False)


# ---------------------------------------------------------------- seed 004

@register_model
def cnn3_bn(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.4) -> nn.Module:
    """Seed 004's CNN: three conv-BN-ReLU-pool blocks (32, 64, 128), a 128-unit FC, dropout 0.4."""
    return nn.Sequential(
        *conv_block(in_channels, 32, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(32, 64, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(64, 128, 3, bn=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 128), nn.ReLU(inplace=True),
        *dropout(dropout_p), nn.Linear(128, num_classes),
    )


# ---------------------------------------------------------------- mnistlab's own

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
