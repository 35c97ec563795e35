"""Bezier / polygonal-chain curves between solutions (landscape/curves.py,
landscape/curve_fit.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.landscape.curve_fit import fit_curve
from sparseflow.landscape.curves import (
    bezier_point,
    curve_coefficients,
    curve_point,
    curve_state,
    evaluate_curve,
    polychain_point,
)
from sparseflow.landscape.evaluation import evaluate_state
from sparseflow.landscape.paths import linear_path
from sparseflow.models import build_model
from sparseflow.sparsity import default_weight_names

TS = [i / 20 for i in range(21)]


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def spiral(n: int = 600, arms: int = 3, seed: int = 0):
    """Interleaved 2-D spirals: a task with many non-equivalent MLP solutions."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % arms
    r = torch.rand(n, generator=g) + 0.05
    angle = 3.5 * r + y * (2 * math.pi / arms) + 0.15 * torch.randn(n, generator=g)
    return 2 * torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1), y


def train(model: nn.Module, x, y, steps: int, lr: float = 0.01, masks=None) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if masks:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])
    return model


# --- points --------------------------------------------------------------------------------


def test_point_formulas():
    g = torch.Generator().manual_seed(0)
    w1, th, w2 = (torch.randn(3, 4, generator=g) for _ in range(3))
    for point in (bezier_point, polychain_point):
        assert torch.equal(point(w1, th, w2, 0.0), w1)
        assert torch.equal(point(w1, th, w2, 1.0), w2)
    assert torch.allclose(bezier_point(w1, th, w2, 0.5), 0.25 * w1 + 0.5 * th + 0.25 * w2)
    assert torch.equal(polychain_point(w1, th, w2, 0.5), th)
    t = 0.3141
    assert torch.allclose(
        bezier_point(w1, th, w2, t), (1 - t) ** 2 * w1 + 2 * t * (1 - t) * th + t**2 * w2
    )
    assert torch.allclose(polychain_point(w1, th, w2, t), 2 * (t * th + (0.5 - t) * w1))
    t = 0.8
    assert torch.allclose(polychain_point(w1, th, w2, t), 2 * ((t - 0.5) * w2 + (1 - t) * th))
    for kind, point in (("bezier", bezier_point), ("polychain", polychain_point)):
        for t in (0.0, 0.2, 0.5, 0.7, 1.0):
            c1, ct, c2 = curve_coefficients(kind, t)
            assert torch.allclose(c1 * w1 + ct * th + c2 * w2, point(w1, th, w2, t), atol=1e-6)
            assert curve_point(kind, w1, th, w2, t).equal(point(w1, th, w2, t))
    assert bezier_point(1.0, 3.0, 5.0, 0.5) == 3.0  # floats; and dicts key by key
    d = bezier_point({"a": w1}, {"a": th}, {"a": w2}, t)
    assert torch.allclose(d["a"], bezier_point(w1, th, w2, t))


# --- convex model ----------------------------------------------------------------------------


def test_convex_curve_no_worse_than_line():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=g) * 1.5
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 5, generator=g)
    a = {"weight": torch.randn(3, 5, generator=g), "bias": torch.randn(3, generator=g)}
    b = {"weight": torch.randn(3, 5, generator=g), "bias": torch.randn(3, generator=g)}
    model = nn.Linear(5, 3)
    line = linear_path(model, a, b, x, y, TS)
    curve = fit_curve(model, a, b, x, y, subspace="dense", epochs=10, batch_size=50, lr=0.05)
    assert curve.ts == TS
    assert curve.max_loss <= max(line.loss) + 1e-6
    assert curve.loss[0] == line.loss[0] and curve.loss[-1] == line.loss[-1]  # fixed endpoints


# --- mode connectivity -------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_mlps():
    x, y = spiral()
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(train(build_model("mlp", (2,), 3, widths=(32, 32)), x, y, steps=600))
    return models[0], clone_state(models[0]), clone_state(models[1]), x, y


def test_bezier_curve_removes_the_linear_barrier(two_mlps):
    model, a, b, x, y = two_mlps
    line = linear_path(model, a, b, x, y, TS)
    assert max(line.loss_a, line.loss_b) < 0.1  # two good solutions ...
    assert line.barrier > 0.5  # ... with a real barrier between them
    curve = fit_curve(model, a, b, x, y, subspace="dense", epochs=20, batch_size=64, lr=0.01)
    assert curve.max_loss < max(line.loss)
    assert curve.max_loss < 0.5 * max(line.loss)
    assert curve.train_history[-1] < curve.train_history[0]
    chain = fit_curve(model, a, b, x, y, kind="polychain", subspace="dense", epochs=20,
                      batch_size=64, lr=0.01)
    assert chain.max_loss < max(line.loss)


def test_fit_is_deterministic_and_leaves_global_rng(two_mlps):
    model, a, b, x, y = two_mlps
    state = torch.get_rng_state()
    r1 = fit_curve(model, a, b, x, y, subspace="dense", epochs=2, batch_size=100, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    r2 = fit_curve(model, a, b, x, y, subspace="dense", epochs=2, batch_size=100, seed=3)
    assert r1.train_history == r2.train_history and r1.loss == r2.loss
    assert all(torch.equal(r1.control[k], r2.control[k]) for k in r1.control)
    r3 = fit_curve(model, a, b, x, y, subspace="dense", epochs=2, batch_size=100, seed=4)
    assert r3.train_history != r1.train_history


# --- subspaces -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparse_pair():
    x, y = spiral(n=300, seed=1)
    torch.manual_seed(0)
    template = build_model("mlp", (2,), 3, widths=(32, 32))
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(p.shape, generator=g) < 0.5
             for n, p in template.named_parameters() if n in default_weight_names(template)}
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_model("mlp", (2,), 3, widths=(32, 32))
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n in masks:
                    p.mul_(masks[n])
        states.append(clone_state(train(m, x, y, steps=150, masks=masks)))
    return template, states[0], states[1], x, y, masks


@pytest.mark.parametrize("opt,lr,wd", [("sgd", 0.05, 0.0), ("adam", 0.01, 1e-3)])
def test_sparse_subspace_keeps_inactive_coordinates_zero(sparse_pair, opt, lr, wd):
    model, a, b, x, y, masks = sparse_pair
    res = fit_curve(model, a, b, x, y, subspace="sparse", masks=masks, epochs=5, batch_size=50,
                    optimizer=opt, lr=lr, weight_decay=wd, eval_ts=[0.0, 0.5, 1.0])
    assert res.subspace == "sparse" and res.kind == "bezier"
    for name, m in masks.items():
        off = res.control[name][~m]
        assert off.numel() > 0 and torch.equal(off, torch.zeros_like(off))
        assert not torch.signbit(off).any()  # exactly +0.0
        assert res.control[name][m].abs().sum() > 0
    mid = curve_state(model, a, b, res.control, 0.37, masks=masks)
    for name, m in masks.items():
        assert (mid[name][~m] == 0).all()
    assert res.loss[0] == evaluate_state(model, a, x, y)[0]
    assert res.loss[-1] == evaluate_state(model, b, x, y)[0]
    again = evaluate_curve(model, a, b, res.control, x, y, [0.0, 0.5, 1.0], masks=masks)
    assert again == (res.loss, res.accuracy)


def test_dense_subspace_leaves_the_mask(sparse_pair):
    model, a, b, x, y, masks = sparse_pair
    res = fit_curve(model, a, b, x, y, subspace="dense", masks=masks, epochs=5, batch_size=50,
                    lr=0.05, eval_ts=[0.5])
    assert res.subspace == "dense"
    assert any((res.control[n][~m] != 0).any() for n, m in masks.items())
    assert math.isfinite(res.max_loss) and res.max_t == 0.5


def test_bad_arguments(sparse_pair):
    model, a, b, x, y, masks = sparse_pair
    with pytest.raises(ValueError, match="kind"):
        fit_curve(model, a, b, x, y, kind="spline", epochs=0)
    with pytest.raises(ValueError, match="subspace"):
        fit_curve(model, a, b, x, y, subspace="half", epochs=0)
    with pytest.raises(ValueError, match="mask"):
        fit_curve(model, a, b, x, y, masks={"nope": torch.ones(2, dtype=torch.bool)}, epochs=0)
    with pytest.raises(ValueError, match="lacks"):
        fit_curve(model, {"out.bias": a["out.bias"]}, b, x, y, epochs=0)


# --- BatchNorm convnet -------------------------------------------------------------------


def test_lenet5_batchnorm_runs_and_leaves_model_untouched():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    torch.manual_seed(0)
    a = clone_state(build_model("lenet5", (1, 28, 28), 10, batchnorm=True))
    torch.manual_seed(1)
    b = clone_state(build_model("lenet5", (1, 28, 28), 10, batchnorm=True))
    torch.manual_seed(2)
    model = build_model("lenet5", (1, 28, 28), 10, batchnorm=True)
    model.train()
    before = clone_state(model)
    masks = {n: torch.rand(p.shape, generator=g) < 0.3
             for n, p in model.named_parameters() if n in default_weight_names(model)}
    for subspace in ("sparse", "dense"):
        res = fit_curve(model, a, b, x, y, subspace=subspace, masks=masks, epochs=2,
                        batch_size=16, lr=0.01, eval_ts=[0.0, 0.5, 1.0])
        assert len(res.train_history) == 2
        assert all(math.isfinite(v) for v in res.loss + res.train_history)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
