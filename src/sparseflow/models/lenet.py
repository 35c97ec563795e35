"""LeNet5 (the Evci et al. MNIST convnet)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .activations import make_activation
from .errors import ModelError

__all__ = ["LENET5_WIDTHS", "LeNet5"]

LENET5_WIDTHS = (6, 16, 120, 84)
"""Default (conv1 channels, conv2 channels, fc1 units, fc2 units)."""

KERNEL = 5


def _conv_out(size: int) -> int:
    """Spatial size after a valid 5x5 convolution and a 2x2 max-pool."""
    return (size - KERNEL + 1) // 2


class LeNet5(nn.Module):
    """``Conv(c1,5x5,valid)-act-MaxPool2-Conv(c2,5x5)-act-MaxPool2-FC(f1)-act-FC(f2)-act-FC``.

    With ``batchnorm`` a BatchNorm2d follows each conv and a BatchNorm1d each hidden FC, both
    before the activation. Layers keep their biases either way, so that the models with and
    without BN differ only in the BN layers. The flatten size is computed from
    ``input_shape = (C, H, W)``: 256 for 1x28x28, 400 for 3x32x32.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = LENET5_WIDTHS,
        *,
        activation: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"lenet5 needs input_shape (C, H, W), got {tuple(input_shape)}")
        if len(widths) != 4:
            raise ModelError(f"lenet5 widths must have 4 entries (c1, c2, f1, f2), got {widths}")
        c_in, h, w = (int(d) for d in input_shape)
        c1, c2, f1, f2 = (int(v) for v in widths)
        h2, w2 = _conv_out(_conv_out(h)), _conv_out(_conv_out(w))
        if h2 < 1 or w2 < 1:
            raise ModelError(f"lenet5 needs inputs of at least 16x16, got {h}x{w}")
        self.widths = [c1, c2, f1, f2]
        self.conv1 = nn.Conv2d(c_in, c1, KERNEL)
        self.bn1 = nn.BatchNorm2d(c1) if batchnorm else None
        self.act1 = make_activation(activation, c1)
        self.conv2 = nn.Conv2d(c1, c2, KERNEL)
        self.bn2 = nn.BatchNorm2d(c2) if batchnorm else None
        self.act2 = make_activation(activation, c2)
        self.pool = nn.MaxPool2d(2)
        self.flat_features = c2 * h2 * w2
        self.fc1 = nn.Linear(self.flat_features, f1)
        self.bn3 = nn.BatchNorm1d(f1) if batchnorm else None
        self.act3 = make_activation(activation, f1)
        self.fc2 = nn.Linear(f1, f2)
        self.bn4 = nn.BatchNorm1d(f2) if batchnorm else None
        self.act4 = make_activation(activation, f2)
        self.fc3 = nn.Linear(f2, num_classes)

    @staticmethod
    def _layer(x: torch.Tensor, lin: nn.Module, bn: nn.Module | None, act: nn.Module):
        x = lin(x)
        if bn is not None:
            x = bn(x)
        return act(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to logits ``(N, num_classes)``."""
        x = self.pool(self._layer(x, self.conv1, self.bn1, self.act1))
        x = self.pool(self._layer(x, self.conv2, self.bn2, self.act2))
        x = x.flatten(1)
        x = self._layer(x, self.fc1, self.bn3, self.act3)
        x = self._layer(x, self.fc2, self.bn4, self.act4)
        return self.fc3(x)
