"""VGG-11 and VGG-16 for CIFAR-sized inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .activations import make_activation
from .errors import ModelError

__all__ = ["VGG", "VGG_STAGE_DEPTHS", "VGG_WIDTHS"]

VGG_WIDTHS = (64, 128, 256, 512, 512)
"""Default channels of the five stages."""

VGG_STAGE_DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3)}
"""Number of 3x3 convs in each stage (configurations A and D of Simonyan & Zisserman)."""


class VGG(nn.Module):
    """Five stages of ``[Conv3x3(pad 1) -> [BN] -> act] x n`` each ending in MaxPool2, then
    one Linear classifier (the common CIFAR form: 32x32 inputs reach 1x1 after five pools,
    so the classifier is ``Linear(widths[-1], num_classes)``).

    Convs have a bias without BN and none with BN (BN's shift makes it redundant).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        stage_depths: Sequence[int],
        widths: Sequence[int] = VGG_WIDTHS,
        *,
        activation: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"vgg needs input_shape (C, H, W), got {tuple(input_shape)}")
        if len(widths) != len(stage_depths):
            raise ModelError(
                f"vgg widths must have {len(stage_depths)} entries (one per stage), got {widths}"
            )
        c_in, h, w = (int(d) for d in input_shape)
        pools = 2 ** len(stage_depths)
        if h < pools or w < pools:
            raise ModelError(f"vgg needs inputs of at least {pools}x{pools}, got {h}x{w}")
        self.widths = [int(c) for c in widths]
        layers: list[nn.Module] = []
        prev = c_in
        for depth, c in zip(stage_depths, self.widths, strict=True):
            for _ in range(depth):
                layers.append(nn.Conv2d(prev, c, 3, padding=1, bias=not batchnorm))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(c))
                layers.append(make_activation(activation, c))
                prev = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.flat_features = prev * (h // pools) * (w // pools)
        self.classifier = nn.Linear(self.flat_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to logits ``(N, num_classes)``."""
        return self.classifier(self.features(x).flatten(1))
