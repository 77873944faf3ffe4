"""ResNet-32, the CIFAR ResNet of He et al. (2016), with timm's backbone interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut; when the block halves the
    resolution and doubles the width, the shortcut subsamples and zero-pads the
    channels (option A of the paper, no extra parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad_channels = planes - in_planes

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride == 1 and self.pad_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.pad_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad_channels - half))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 (and smaller) inputs: a 3x3 stem, three stages of basic blocks
    with 16, 32 and 64 channels, global average pooling.

    - [0] He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
      https://arxiv.org/abs/1512.03385 (Sec. 4.2: depth 6n+2; ResNet-32 has n=5)

    Follows timm's interface: ``forward_features`` (feature map), ``forward_head(x,
    pre_logits=False)``, ``reset_classifier(num_classes)``, ``num_features``. With
    ``num_classes=0`` the model returns the pooled ``[B, 64]`` features.

    Args:
        blocks_per_stage: n; the depth is 6n+2.
        num_classes: size of the linear classifier; 0 for none.
        in_chans: input channels.
    """

    def __init__(self, blocks_per_stage: int = 5, num_classes: int = 0, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_planes
        self.reset_classifier(num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def resnet32(num_classes: int = 0, in_chans: int = 3) -> CifarResNet:
    """ResNet-32 (0.46M parameters), the backbone of the CIFAR-LT literature."""
    return CifarResNet(5, num_classes, in_chans)
