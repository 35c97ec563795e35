"""Tests for sparseflow.models.sizing: weight counts, small-dense widths, SC-SDC sizing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.models import (
    build_model,
    dense_weight_count,
    scsdc_layer_counts,
    scsdc_layer_densities,
    small_dense_widths,
    weight_count,
)
from sparseflow.models.errors import ModelError

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def linear_weight_numels(model: nn.Module) -> list[int]:
    return [m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)]


def test_weight_count_ignores_biases_and_batchnorm():
    model = build_model("mlp", (10,), 3, widths=(4, 5), batchnorm=True)
    assert weight_count(model) == 10 * 4 + 4 * 5 + 5 * 3
    assert weight_count(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())) == 2 * 3 * 9


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [("lenet5", MNIST, {}), ("resnet20", CIFAR, {}), ("wrn", CIFAR, {"depth": 10, "width": 2})],
)
def test_dense_weight_count_matches_a_real_build(name, shape, kwargs):
    assert dense_weight_count(name, shape, 10, **kwargs) == weight_count(
        build_model(name, shape, 10, **kwargs)
    )


# --- small dense ---------------------------------------------------------------------------


def relative_gap(name, shape, widths, target, **kwargs) -> float:
    return abs(dense_weight_count(name, shape, 10, widths=widths, **kwargs) - target) / target


def test_small_dense_lenet300_at_98_percent_sparsity():
    target = round(0.02 * 266_200)  # 5324 weights
    widths = small_dense_widths("lenet300", MNIST, 10, target)
    # 784*7 + 7*2 + 2*10 = 5522 (+3.7%); the paper's hand-picked (8, 8) has 6416 (+20.5%).
    assert widths == [7, 2]
    assert relative_gap("lenet300", MNIST, widths, target) < 0.05


def test_small_dense_lenet5_at_95_percent_sparsity():
    target = round(0.05 * 44_190)  # 2210 weights
    widths = small_dense_widths("lenet5", MNIST, 10, target)
    # 2*25 + 2*3*25 + 48*27 + 27*19 + 19*10 = 2199 (-0.5%); the paper's (3,3,27,20) has 2336.
    assert widths == [2, 3, 27, 19]
    assert relative_gap("lenet5", MNIST, widths, target) < 0.02


@pytest.mark.parametrize(
    ("name", "shape", "density", "kwargs"),
    [
        ("lenet300", MNIST, 0.1, {}),
        ("lenet5", CIFAR, 0.05, {}),
        ("vgg16", CIFAR, 0.05, {}),
        ("resnet20", CIFAR, 0.1, {}),
        ("wrn", CIFAR, 0.1, {"depth": 16}),
        ("mlp", MNIST, 0.05, {"depth": 4}),
    ],
)
def test_small_dense_close_to_target(name, shape, density, kwargs):
    target = round(density * dense_weight_count(name, shape, 10, **kwargs))
    widths = small_dense_widths(name, shape, 10, target, **kwargs)
    assert relative_gap(name, shape, widths, target, **kwargs) < 0.03
    built = build_model(name, shape, 10, widths=widths, **kwargs)
    assert built(torch.randn(2, *shape)).shape == (2, 10)


def test_small_dense_respects_explicit_widths_and_options():
    widths = small_dense_widths("mlp", MNIST, 10, 20_000, widths=(1000, 1000), batchnorm=True)
    assert len(widths) == 2 and abs(widths[0] - widths[1]) <= 1
    assert relative_gap("mlp", MNIST, widths, 20_000) < 0.03
    wide = small_dense_widths("mlp", MNIST, 10, 1_000_000, depth=2, width=100)
    assert wide[0] > 100  # targets above the dense count widen the model


def test_small_dense_tiny_target_gives_ones():
    assert small_dense_widths("lenet5", MNIST, 10, 5) == [1, 1, 1, 1]


@pytest.mark.parametrize("target", [0, -3, 2.5, True])
def test_small_dense_bad_target(target):
    with pytest.raises(ModelError):
        small_dense_widths("lenet300", MNIST, 10, target)


def test_small_dense_unknown_model():
    with pytest.raises(ModelError, match="valid models"):
        small_dense_widths("alexnet", MNIST, 10, 100)


# --- SC-SDC --------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_scsdc_counts_equal_the_dense_mlp(depth):
    in_features, classes, w_s, w_d = 784, 10, 3076, 308
    counts = scsdc_layer_counts(depth, w_s, w_d, in_features, classes)
    with torch.device("meta"):
        dense = build_model("mlp", MNIST, classes, depth=depth, width=w_d)
        sparse = build_model("mlp", MNIST, classes, depth=depth, width=w_s)
    assert counts == linear_weight_numels(dense)
    densities = scsdc_layer_densities(depth, w_s, w_d, in_features, classes)
    numels = linear_weight_numels(sparse)
    assert [round(d * n) for d, n in zip(densities, numels, strict=True)] == counts
    r = w_d / w_s
    expected = [r, *([r * r] * (depth - 1)), r]
    assert densities == pytest.approx(expected, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 5),
    w_s=st.integers(1, 4000),
    frac=st.floats(0.0, 1.0),
    in_features=st.integers(1, 3072),
    classes=st.integers(1, 100),
)
def test_scsdc_counts_property(depth, w_s, frac, in_features, classes):
    w_d = max(1, round(frac * w_s))
    counts = scsdc_layer_counts(depth, w_s, w_d, in_features, classes)
    densities = scsdc_layer_densities(depth, w_s, w_d, in_features, classes)
    assert len(counts) == len(densities) == depth + 1
    assert sum(counts) == in_features * w_d + (depth - 1) * w_d * w_d + w_d * classes
    assert all(0 < d <= 1 for d in densities)


@pytest.mark.parametrize(
    "args",
    [(0, 10, 5, 784, 10), (2, 10, 11, 784, 10), (2, 10, 5, 0, 10), (2, 10, 5, 784, 0)],
)
def test_scsdc_bad_arguments(args):
    with pytest.raises(ModelError):
        scsdc_layer_counts(*args)
