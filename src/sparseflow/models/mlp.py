"""Multilayer perceptrons of any depth and width (also LeNet-300-100)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .activations import make_activation

__all__ = ["MLP", "DenseBlock"]


class DenseBlock(nn.Module):
    """One hidden layer: ``Linear -> [BatchNorm1d] -> activation``, optionally residual.

    With ``residual=True`` the block returns ``x + act(bn(linear(x)))`` (needs equal in and
    out widths), so zero weights and biases with an activation that maps 0 to 0 (ReLU,
    PReLU, ELU, SiLU, tanh) make it the identity.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "relu",
        batchnorm: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError("a residual DenseBlock needs in_features == out_features")
        self.residual = residual
        self.linear = nn.Linear(in_features, out_features)
        self.bn = nn.BatchNorm1d(out_features) if batchnorm else None
        self.act = make_activation(activation, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``act(bn(linear(x)))``, plus ``x`` when residual."""
        y = self.linear(x)
        if self.bn is not None:
            y = self.bn(y)
        y = self.act(y)
        return x + y if self.residual else y


class MLP(nn.Module):
    """Flatten, hidden ``DenseBlock`` layers of the given widths, then a Linear classifier.

    ``skip=True`` makes hidden layer ``i >= 2`` residual when its width equals the width of
    hidden layer ``i - 1``; a layer whose width differs (and the first hidden layer, whose
    input is the flattened image) has no skip connection.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        *,
        activation: str = "relu",
        batchnorm: bool = False,
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.in_features = math.prod(self.input_shape)
        self.widths = [int(w) for w in widths]
        blocks = []
        prev = self.in_features
        for i, w in enumerate(self.widths):
            residual = skip and i > 0 and prev == w
            blocks.append(
                DenseBlock(prev, w, activation=activation, batchnorm=batchnorm, residual=residual)
            )
            prev = w
        self.hidden = nn.ModuleList(blocks)
        self.out = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch of any input shape ``(N, *input_shape)`` to logits ``(N, num_classes)``."""
        x = x.flatten(1)
        for block in self.hidden:
            x = block(x)
        return self.out(x)
