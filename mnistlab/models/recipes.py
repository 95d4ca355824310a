"""mnistlab's own models: small, accurate or fast, each with a config that trains it.

Their parameter counts are in their descriptions and in `mnistlab models`; the configs that
train them are configs/compact8k.yaml, configs/best.yaml, configs/speedrun.yaml and
configs/resnet_mnist.yaml.
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


@register_model
def resnet_mnist(num_classes: int = 10, in_channels: int = 1, width: int = 16, blocks: int = 1) -> nn.Module:
    """mnistlab's residual family (77,754 params at width 16): a conv stem, three stages of residual blocks."""
    # Stages at 28x28, 14x14 and 7x7 with width, 2*width and 4*width channels; each stage is `blocks`
    # of torchvision's BasicBlock (two 3x3 conv-BN, identity shortcut), the first block of stages two
    # and three halving the side with a stride-2 conv and a 1x1 conv-BN shortcut. Global average pool
    # and one linear layer: the 7x7 map's position is averaged out, as in ResNet.
    if not (1 <= width <= 256 and 1 <= blocks <= 8):
        raise ValueError("width must be in [1, 256] and blocks in [1, 8]")
    # Here, not at the top: importing torchvision costs every command about a second and a half of start-up
    # (it pulls in torch._dynamo), and only this model needs it.
    from torchvision.models.resnet import BasicBlock

    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU(inplace=True)]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            shortcut = None
            if stride != 1 or cin != cout:
                shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            layers.append(BasicBlock(cin, cout, stride=stride, downsample=shortcut))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
