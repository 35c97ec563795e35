"""Optimisers, coupled vs decoupled decay, and schedules, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparseflow.config import OPTIMIZERS, OptimConfig
from sparseflow.training import optim as O


def test_schedule_values_by_hand():
    assert O.lr_factor(0, 100, "constant") == 1.0
    assert O.lr_factor(0, 100, "cosine") == 1.0
    assert O.lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert O.lr_factor(100, 100, "cosine") == pytest.approx(0.0)
    assert O.lr_factor(25, 100, "linear") == pytest.approx(0.75)
    assert O.lr_factor(49, 100, "step", milestones=(0.5, 0.75)) == 1.0
    assert O.lr_factor(50, 100, "step", milestones=(0.5, 0.75)) == pytest.approx(0.1)
    assert O.lr_factor(80, 100, "step", milestones=(0.5, 0.75)) == pytest.approx(0.01)
    # warm-up ramps linearly, then the schedule runs over the remaining steps
    assert O.lr_factor(0, 110, "cosine", warmup=10) == pytest.approx(0.1)
    assert O.lr_factor(9, 110, "cosine", warmup=10) == pytest.approx(1.0)
    assert O.lr_factor(60, 110, "cosine", warmup=10) == pytest.approx(0.5)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_steps(name):
    m = _tiny()
    opt = O.build_optimizer(OptimConfig(name=name, lr=0.01), m)
    before = [p.clone() for p in m.parameters()]
    m(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def _one_adam_step(l2: float, wd: float, name: str = "adam"):
    m = _tiny()
    w0 = m[0].weight.detach().clone()
    b0 = m[0].bias.detach().clone()
    opt = O.build_optimizer(OptimConfig(name=name, lr=0.1, l2=l2, weight_decay=wd), m)
    grad_w = torch.full_like(w0, 0.5)
    m[0].weight.grad = grad_w.clone()
    m[0].bias.grad = torch.zeros_like(b0)
    O.coupled_l2_(opt)
    O.decoupled_decay_(opt)
    opt.step()
    return w0, b0, grad_w, m


def test_coupled_l2_passes_through_adam():
    # first Adam step: update = lr * g' / (|g'| + eps) with g' = g + l2 * w
    w0, b0, g, m = _one_adam_step(l2=0.3, wd=0.0)
    gp = g + 0.3 * w0
    expect = w0 - 0.1 * gp / (gp.abs() + 1e-8)
    assert torch.allclose(m[0].weight, expect, atol=1e-6)
    assert torch.equal(m[0].bias, b0)  # biases are not decayed by default


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_decoupled_decay_is_applied_outside_adam(name):
    # decoupled: w <- w * (1 - lr * wd) - lr * g / (|g| + eps)
    w0, _, g, m = _one_adam_step(l2=0.0, wd=0.2, name=name)
    expect = w0 * (1 - 0.1 * 0.2) - 0.1 * g / (g.abs() + 1e-8)
    assert torch.allclose(m[0].weight, expect, atol=1e-6)


def test_adamw_with_coupled_l2_too():
    w0, _, g, m = _one_adam_step(l2=0.3, wd=0.2, name="adamw")
    gp = g + 0.3 * w0
    expect = w0 * (1 - 0.1 * 0.2) - 0.1 * gp / (gp.abs() + 1e-8)
    assert torch.allclose(m[0].weight, expect, atol=1e-6)


def test_decay_all_includes_biases():
    decayed, other = O.param_groups(_tiny(), decay_all=False)
    assert len(decayed) == 1 and len(other) == 1
    decayed, other = O.param_groups(_tiny(), decay_all=True)
    assert len(decayed) == 2 and not other


def test_sgd_coupled_equals_decoupled_for_plain_sgd():
    # for plain SGD the two rules coincide: w - lr (g + l w) == w (1 - lr l) - lr g
    outs = []
    for l2, wd in ((0.1, 0.0), (0.0, 0.1)):
        m = _tiny()
        opt = O.build_optimizer(OptimConfig(name="sgd", lr=0.5, l2=l2, weight_decay=wd), m)
        m[0].weight.grad = torch.ones_like(m[0].weight)
        m[0].bias.grad = torch.ones_like(m[0].bias)
        O.decoupled_decay_(opt)
        opt.step()
        outs.append(m[0].weight.detach().clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-7)
    assert not math.isnan(outs[0].sum().item())
