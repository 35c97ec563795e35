"""Models of one's own, imported by reference (``model=own_models:tiny``) in
tests/test_own_models.py."""

from __future__ import annotations

import math

from torch import nn


def tiny(input_shape, num_classes, hidden=8, depth=1):
    """A plain MLP: ``depth`` hidden layers of ``hidden`` units."""
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def not_a_model(input_shape, num_classes):
    return "a string"
