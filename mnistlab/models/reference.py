"""The models of the projects mnistlab started from, layer for layer, with their true parameter counts.

The projects: the Model_1 / Model_2 project ("MNIST Classification with PyTorch"), the two-script
comparison, the seven-iteration 1x1-conv study, the NN / CNN / VGG16 comparison, and the CNN report
(three conv-BN blocks, EMNIST tried first). Where a project misstated its count, the description says so.

All take N x C x 28 x 28 and return logits (the loss applies log-softmax). Layer lists are spelled out
as nn.Sequential so torchsummary and the layer counts in reports show them as the projects described them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import conv_block, dropout
from ._registry import register_model


# ---------------------------------------------------------------- the Model_1 / Model_2 project, the two-script comparison

@register_model
def baseline_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Model_1 of the Model_1/Model_2 project, script 1 of the two-script comparison: two 3x3 convs, two FCs (26,698 params; the project said 15,106)."""
    return nn.Sequential(
        *conv_block(in_channels, 8, 3), nn.MaxPool2d(2),
        *conv_block(8, 16, 3), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(inplace=True), nn.Linear(32, num_classes),
    )


@register_model
def baseline_cnn_small(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.2) -> nn.Module:
    """Model_2 of the Model_1/Model_2 project: narrower convs (6, 12), dropout before a 24-unit FC."""
    return nn.Sequential(
        *conv_block(in_channels, 6, 3), nn.MaxPool2d(2),
        *conv_block(6, 12, 3), nn.MaxPool2d(2),
        *dropout(dropout_p),
        nn.Flatten(), nn.Linear(12 * 7 * 7, 24), nn.ReLU(inplace=True), nn.Linear(24, num_classes),
    )


@register_model
def bn_dropout_cnn(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.25) -> nn.Module:
    """Script 2 of the two-script comparison: baseline_cnn with BatchNorm after each conv, dropout before the last FC."""
    return nn.Sequential(
        *conv_block(in_channels, 8, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(8, 16, 3, bn=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(inplace=True),
        *dropout(dropout_p), nn.Linear(32, num_classes),
    )


# ---------------------------------------------------------------- the seven-iteration 1x1-conv study

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
    after block 2, after block 3's first conv, and before the fc (the study's iteration 7).
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
    """1x1-conv study, iteration 1: 16/32 channels and a 1x1 squeeze, no BN."""
    return one_by_one_net(in_channels, num_classes, 16, 32, 16, [(32, 3), (32, 1)])


@register_model
def iter2(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """1x1-conv study, iteration 2: 8/16 channels, a longer block 3 (< 25K params)."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(16, 3), (16, 1), (32, 3), (32, 1)])


@register_model
def iter3(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """1x1-conv study, iteration 3: block 3 is conv 8->32 and a 1x1 to 28 (< 20K params)."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)])


@register_model
def iter4(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """1x1-conv study, iteration 4: iter3 with BatchNorm in blocks 1-2 and a 32->32 final 1x1."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (32, 1)], bn=True)


@register_model
def iter5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """1x1-conv study, iteration 5 (the study's best): iter3 with BatchNorm in blocks 1-2."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)], bn=True)


@register_model
def iter6(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.5) -> nn.Module:
    """1x1-conv study, iteration 6: iter5 with dropout before the fc."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)], bn=True,
                          drop=(0.0, 0.0, 0.0, dropout_p))


@register_model
def iter7(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """1x1-conv study, iteration 7: iter5 with dropout 0.1 / 0.2 / 0.3 / 0.5 after each block."""
    return one_by_one_net(in_channels, num_classes, 8, 16, 8, [(32, 3), (28, 1)], bn=True,
                          drop=(0.1, 0.2, 0.3, 0.5))


# ---------------------------------------------------------------- the NN / CNN / VGG16 comparison

@register_model
def mlp(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The NN of the NN/CNN/VGG16 comparison: two 512-unit hidden layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * 28 * 28, 512), nn.ReLU(inplace=True),
        nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )


@register_model
def cnn_large(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The CNN of the NN/CNN/VGG16 comparison: three 3x3 convs (32, 64, 64) and a 1024-512 FC head."""
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
    """The VGG16 of the NN/CNN/VGG16 comparison (torchvision's), 10-class head, input resized up; `pretrained`: a local weights file."""
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

    from ..errors import UserError, one_line

    if not Path(path).is_file():
        raise UserError(f"model.pretrained: weights file not found: {path} (nothing can be downloaded here)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file is the user's file, not our bug)
        raise UserError(f"model.pretrained: cannot read {path} as VGG16 weights: {one_line(exc, 160)}") from None
    if not isinstance(state, dict):
        raise UserError(f"model.pretrained: {path} holds a {type(state).__name__}, not VGG16 weights (a state_dict)")
    own = net.state_dict()
    usable = {k: v for k, v in state.items()
              if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape}
    if not any(k.startswith("features.") for k in usable):
        raise UserError(f"model.pretrained: {path} holds no VGG16 feature weights")
    net.load_state_dict(usable, strict=False)


# ---------------------------------------------------------------- the CNN report

@register_model
def cnn3_bn(num_classes: int = 10, in_channels: int = 1, dropout_p: float = 0.4) -> nn.Module:
    """The CNN report's model: three conv-BN-ReLU-pool blocks (32, 64, 128), a 128-unit FC, dropout 0.4."""
    return nn.Sequential(
        *conv_block(in_channels, 32, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(32, 64, 3, bn=True), nn.MaxPool2d(2),
        *conv_block(64, 128, 3, bn=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 128), nn.ReLU(inplace=True),
        *dropout(dropout_p), nn.Linear(128, num_classes),
    )
