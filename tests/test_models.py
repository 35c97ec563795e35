"""Tests for sparseflow.models: registry, architectures, activations and errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from sparseflow.models import (
    ACTIVATIONS,
    MODELS,
    SReLU,
    activation_names,
    build_model,
    make_activation,
    model_names,
    weight_count,
)
from sparseflow.models.errors import ModelError

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)

CASES = [
    ("mlp", MNIST, {}),
    ("mlp", CIFAR, {"depth": 4, "width": 32, "batchnorm": True, "skip": True}),
    ("lenet300", MNIST, {}),
    ("lenet5", MNIST, {}),
    ("lenet5", CIFAR, {"batchnorm": True}),
    ("vgg11", CIFAR, {}),
    ("vgg16", CIFAR, {"batchnorm": True}),
    ("resnet20", CIFAR, {}),
    ("resnet32", CIFAR, {}),
    ("wrn", CIFAR, {"depth": 16, "width": 4}),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_numel(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k


def test_registry_lists_every_model():
    expected = ["lenet300", "lenet5", "mlp", "resnet20", "resnet32", "vgg11", "vgg16", "wrn"]
    assert model_names() == expected
    assert sorted(MODELS) == expected
    assert {name for name, _, _ in CASES} == set(expected)


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES)
def test_model_builds_and_maps_batch_to_logits(name, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, shape, 7, **kwargs)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("name", "shape", "kwargs"), CASES)
def test_functional_call_matches_forward(name, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, shape, 5, **kwargs).eval()
    x = torch.randn(2, *shape)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    torch.testing.assert_close(functional_call(model, state, (x,)), model(x))
    head_bias = list(dict(model.named_parameters()))[-1]
    assert head_bias.endswith("bias")
    before = state[head_bias].clone()
    shifted = {**state, head_bias: state[head_bias] + 1.0}
    torch.testing.assert_close(functional_call(model, shifted, (x,)), model(x) + 1.0)
    torch.testing.assert_close(state[head_bias], before)  # the module's own weights untouched


def test_spec_is_callable_like_build_model():
    torch.manual_seed(0)
    a = MODELS["lenet5"](MNIST, 10)
    assert isinstance(a, nn.Module) and n_params(a) == n_params(build_model("lenet5", MNIST, 10))


# --- parameter counts computed by hand ------------------------------------------------------


def test_lenet300_counts():
    model = build_model("lenet300", MNIST, 10)
    weights = 784 * 300 + 300 * 100 + 100 * 10
    assert weights == 266_200 == weight_count(model)
    assert n_params(model) == weights + 300 + 100 + 10 == 266_610


def test_lenet5_counts_mnist():
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: flatten 16 * 4 * 4 = 256
    model = build_model("lenet5", MNIST, 10)
    weights = 1 * 6 * 25 + 6 * 16 * 25 + 256 * 120 + 120 * 84 + 84 * 10
    assert weights == 44_190 == weight_count(model)
    assert n_params(model) == weights + 6 + 16 + 120 + 84 + 10 == 44_426
    assert model.flat_features == 256
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_lenet5_counts_cifar_and_paper_small_dense():
    # 32 -> 28 -> 14 -> 10 -> 5: flatten 16 * 5 * 5 = 400
    model = build_model("lenet5", CIFAR, 10)
    assert model.flat_features == 400
    assert weight_count(model) == 3 * 6 * 25 + 6 * 16 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    # The paper's small dense LeNet5 (3, 3, 27, 20) has 2399 parameters with biases.
    assert n_params(build_model("lenet5", MNIST, 10, widths=(3, 3, 27, 20))) == 2399
    # The paper's small dense MLP (8, 8) has 6442.
    assert n_params(build_model("lenet300", MNIST, 10, widths=(8, 8))) == 6442


def test_resnet20_and_resnet32_counts():
    def resnet(n: int) -> int:
        convs = conv_numel(3, 16)
        convs += 2 * n * conv_numel(16, 16)
        convs += conv_numel(16, 32) + (2 * n - 1) * conv_numel(32, 32)
        convs += conv_numel(32, 64) + (2 * n - 1) * conv_numel(64, 64)
        bn = 2 * (16 + 2 * n * (16 + 32 + 64))
        return convs + bn + 64 * 10 + 10

    r20 = build_model("resnet20", CIFAR, 10)
    assert n_params(r20) == resnet(3) == 269_722  # "0.27M" in He et al. 2016
    assert n_params(build_model("resnet32", CIFAR, 10)) == resnet(5) == 464_154  # "0.46M"
    convs = [m for m in r20.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # option A: no projection convs; 19 convs + 1 Linear = 20 layers
    assert all(c.bias is None for c in convs)


def test_wrn_16_4_counts():
    k, n = 4, 2
    convs = conv_numel(3, 16)
    bns = 0
    for c_in, c_out in ((16, 16 * k), (16 * k, 32 * k), (32 * k, 64 * k)):
        convs += conv_numel(c_in, c_out) + conv_numel(c_out, c_out) + c_in * c_out  # 1x1 proj
        convs += (n - 1) * 2 * conv_numel(c_out, c_out)
        bns += 2 * (c_in + c_out) + (n - 1) * 4 * c_out
    bns += 2 * 64 * k
    expected = convs + bns + 64 * k * 10 + 10
    model = build_model("wrn", CIFAR, 10, depth=16, width=4)
    assert n_params(model) == expected == 2_748_890  # "2.7M" in Zagoruyko & Komodakis
    assert len(model.blocks) == 6


def test_vgg_counts_and_bias_convention():
    def vgg(stages):
        total, prev = 0, 3
        for depth, c in zip(stages, (64, 128, 256, 512, 512), strict=True):
            for _ in range(depth):
                total += conv_numel(prev, c)
                prev = c
        return total + 512 * 10

    assert weight_count(build_model("vgg11", CIFAR, 10)) == vgg((1, 1, 2, 2, 2)) == 9_222_848
    plain = build_model("vgg16", CIFAR, 10)
    assert weight_count(plain) == vgg((2, 2, 3, 3, 3)) == 14_715_584
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    bn = build_model("vgg16", CIFAR, 10, batchnorm=True)
    assert all(m.bias is None for m in bn.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 13
    conv_channels = 64 * 2 + 128 * 2 + 256 * 3 + 512 * 6
    assert n_params(plain) == 14_715_584 + conv_channels + 10 == 14_719_818
    assert n_params(bn) == 14_715_584 + 2 * conv_channels + 10 == 14_724_042


def test_widths_override_channels():
    model = build_model("resnet20", CIFAR, 10, widths=(8, 16, 32))
    assert model.fc.in_features == 32
    wrn = build_model("wrn", CIFAR, 10, depth=10, widths=(4, 8, 16, 32))
    assert wrn.fc.in_features == 32 and len(wrn.blocks) == 3
    vgg = build_model("vgg11", CIFAR, 10, widths=(4, 8, 8, 16, 16))
    assert vgg.classifier.in_features == 16


# --- MLP -----------------------------------------------------------------------------------


def test_mlp_depth_width_and_widths():
    model = build_model("mlp", MNIST, 10, depth=3, width=50)
    assert [b.linear.out_features for b in model.hidden] == [50, 50, 50]
    model = build_model("mlp", (5, 2, 3), 4, widths=(7, 9))
    assert model.hidden[0].linear.in_features == 30
    assert model(torch.randn(2, 5, 2, 3)).shape == (2, 4)
    default = build_model("mlp", MNIST, 10)
    assert [b.linear.out_features for b in default.hidden] == [256, 256]


def test_mlp_batchnorm_only_when_asked():
    plain = build_model("mlp", MNIST, 10, depth=3, width=16)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    bn = build_model("mlp", MNIST, 10, depth=3, width=16, batchnorm=True)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bn.modules()) == 3
    assert all(b.linear.bias is not None for b in bn.hidden)


def test_mlp_skip_only_between_equal_widths():
    model = build_model("mlp", MNIST, 10, widths=(32, 32, 16, 16, 16), skip=True)
    assert [b.residual for b in model.hidden] == [False, True, False, True, True]
    no_skip = build_model("mlp", MNIST, 10, widths=(32, 32, 16), skip=False)
    assert not any(b.residual for b in no_skip.hidden)


@pytest.mark.parametrize("activation", ["relu", "prelu", "elu", "silu", "tanh"])
def test_mlp_zeroed_residual_blocks_are_identity(activation):
    """With zero weights and biases, a residual block returns its input exactly, so the
    deep skip-MLP computes the same function as its first hidden layer plus the head."""
    torch.manual_seed(0)
    model = build_model("mlp", MNIST, 10, depth=4, width=24, skip=True, activation=activation)
    with torch.no_grad():
        for block in model.hidden[1:]:
            block.linear.weight.zero_()
            block.linear.bias.zero_()
    x = torch.randn(5, *MNIST)
    h = model.hidden[0](x.flatten(1))
    torch.testing.assert_close(model.hidden[1](h), h)
    torch.testing.assert_close(model(x), model.out(h))


def test_lenet5_batchnorm_flag():
    model = build_model("lenet5", MNIST, 10, batchnorm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2


# --- activations ---------------------------------------------------------------------------


def test_activation_names():
    assert activation_names() == sorted(
        ["relu", "prelu", "elu", "silu", "swish", "srelu", "sigmoid", "tanh"]
    )
    assert set(ACTIVATIONS) == set(activation_names())


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(4, 6), (2, 6, 5, 5)])
def test_activation_forward_2d_and_4d(name, shape):
    act = make_activation(name, num_features=6)
    x = torch.randn(*shape)
    y = act(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    shared = make_activation(name)
    assert shared(x).shape == x.shape


def test_swish_is_silu_and_names_are_case_insensitive():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(make_activation("swish")(x), nn.functional.silu(x))
    assert isinstance(make_activation("ReLU"), nn.ReLU)


def test_prelu_init_and_per_channel():
    act = make_activation("prelu", num_features=8)
    assert act.weight.shape == (8,)
    assert torch.all(act.weight == 0.25)
    assert make_activation("prelu").weight.shape == (1,)
    torch.testing.assert_close(act(torch.tensor([[-2.0] * 8])), torch.full((1, 8), -0.5))


def test_srelu_piecewise_at_hand_picked_points():
    act = SReLU()  # t_l=-0.4, a_l=0.4, t_r=0.4, a_r=2.0
    x = torch.tensor([-2.0, -0.4, -0.1, 0.0, 0.3, 0.4, 1.0])
    expected = torch.tensor(
        [
            -0.4 + 0.4 * (-2.0 + 0.4),  # left branch: -1.04
            -0.4,  # at t_l
            -0.1,  # identity
            0.0,
            0.3,
            0.4,  # at t_r
            0.4 + 2.0 * (1.0 - 0.4),  # right branch: 1.6
        ]
    )
    torch.testing.assert_close(act(x), expected)


def test_srelu_per_channel_parameters_4d():
    act = SReLU(2, t_left=-1.0, a_left=0.0, t_right=1.0, a_right=1.0)
    with torch.no_grad():
        act.t_right[1] = 0.5
        act.a_right[1] = 3.0
    x = torch.full((1, 2, 2, 2), 2.0)
    y = act(x)
    torch.testing.assert_close(y[0, 0], torch.full((2, 2), 2.0))  # 1 + 1 * (2 - 1)
    torch.testing.assert_close(y[0, 1], torch.full((2, 2), 5.0))  # 0.5 + 3 * 1.5
    assert {n for n, _ in act.named_parameters()} == {"t_left", "a_left", "t_right", "a_right"}
    y.sum().backward()
    assert act.a_right.grad is not None


@settings(max_examples=50, deadline=None)
@given(st.floats(-10, 10, allow_nan=False))
def test_srelu_matches_formula(v):
    tl, al, tr, ar = -0.4, 0.4, 0.4, 2.0
    expected = tr + ar * (v - tr) if v >= tr else (tl + al * (v - tl) if v <= tl else v)
    got = SReLU()(torch.tensor([v], dtype=torch.float64).float()).item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("activation", ["prelu", "srelu", "elu"])
def test_models_take_any_activation(activation):
    for name, shape in (("lenet5", MNIST), ("resnet20", CIFAR)):
        model = build_model(name, shape, 10, activation=activation)
        assert model(torch.randn(2, *shape)).shape == (2, 10)


# --- errors --------------------------------------------------------------------------------


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_model_error_is_value_error():
    assert issubclass(ModelError, ValueError)


def test_unknown_model_lists_valid_names():
    message = one_line_error(build_model, "resnet50", CIFAR, 10)
    assert "resnet50" in message
    assert all(name in message for name in model_names())


def test_unknown_activation_lists_valid_names():
    for fn, args in ((make_activation, ("gelu",)), (build_model, ("mlp", MNIST, 10))):
        kwargs = {} if fn is make_activation else {"activation": "gelu"}
        message = one_line_error(fn, *args, **kwargs)
        assert "gelu" in message
        assert all(name in message for name in activation_names())


@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "fragment"),
    [
        ("lenet5", MNIST, {"skip": True}, "skip"),
        ("lenet5", MNIST, {"depth": 3}, "depth"),
        ("lenet300", MNIST, {"width": 3}, "width"),
        ("vgg16", CIFAR, {"skip": True}, "skip"),
        ("resnet20", CIFAR, {"batchnorm": False}, "batchnorm"),
        ("resnet20", CIFAR, {"skip": False}, "skip"),
        ("resnet32", CIFAR, {"depth": 20}, "depth"),
        ("wrn", CIFAR, {"batchnorm": False}, "batchnorm"),
    ],
)
def test_unsupported_option_names_it(name, shape, kwargs, fragment):
    message = one_line_error(build_model, name, shape, 10, **kwargs)
    assert name in message and fragment in message
    assert "options:" in message


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("wrn", CIFAR, {"depth": 15}),
        ("wrn", CIFAR, {"widths": (16, 32, 64, 128), "width": 2}),
        ("mlp", MNIST, {"widths": (4, 4), "depth": 3}),
        ("mlp", MNIST, {"widths": (4, 4), "width": 4}),
        ("mlp", MNIST, {"widths": ()}),
        ("mlp", MNIST, {"widths": (4, 0)}),
        ("mlp", MNIST, {"depth": 0}),
        ("lenet5", MNIST, {"widths": (6, 16, 120)}),
        ("lenet5", (784,), {}),
        ("lenet5", (1, 8, 8), {}),
        ("vgg11", (3, 16, 16), {}),
        ("resnet20", CIFAR, {"widths": (32, 16, 64)}),
        ("mlp", (), {}),
        ("mlp", (1, -28), {}),
    ],
)
def test_bad_requests_raise_model_error(name, shape, kwargs):
    one_line_error(build_model, name, shape, 10, **kwargs)


def test_bad_num_classes():
    one_line_error(build_model, "mlp", MNIST, 0)
