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


def blobs(n=600, dim=6, classes=3, seed=0):
    """Gaussian blobs as a sparseflow Dataset (no held-out batches: sparseflow carves them)."""
    import torch

    from sparseflow.data import Dataset

    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, dim, generator=g)

    def draw(m):
        y = torch.randint(0, classes, (m,), generator=g)
        return centres[y] + torch.randn(m, dim, generator=g), y

    x_train, y_train = draw(n)
    x_test, y_test = draw(n // 4)
    return Dataset(name="blobs", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, heldout=[], num_classes=classes, input_shape=(dim,))


def tensors_not_a_dataset(n=10):
    return [1, 2, 3]
