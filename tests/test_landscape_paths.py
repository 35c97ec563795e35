"""Linear interpolation, barriers, mask rules and BatchNorm re-estimation (landscape/paths.py,
landscape/evaluation.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.grids import parse_grid
from sparseflow.landscape.evaluation import evaluate_state, reset_bn_
from sparseflow.landscape.paths import (
    combine_masks,
    interpolate_states,
    is_monotone,
    linear_path,
    path_barrier,
)
from sparseflow.models import build_model
from sparseflow.sparsity import MaskSet


def parse_alphas(text: str) -> list[float]:
    return parse_grid(text, "alphas", increasing=True)


ALPHAS = parse_alphas("-0.2:1.2:29")


def blobs(n: int = 300, dim: int = 5, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=g)
    return x, y


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_logreg(x, y, seed: int, steps: int = 200) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return clone_state(model)


@pytest.fixture(scope="module")
def convex():
    x, y = blobs()
    a = train_logreg(x[:150], y[:150], seed=0)  # two solutions from different data subsets
    b = train_logreg(x[150:], y[150:], seed=1)
    return nn.Linear(5, 3), a, b, x, y


# --- convex model ------------------------------------------------------------------------


def test_convex_trained_endpoints_have_no_barrier(convex):
    model, a, b, x, y = convex
    res = linear_path(model, a, b, x, y, ALPHAS)
    assert len(res.loss) == len(ALPHAS) == len(res.accuracy)
    assert 0.0 <= res.barrier <= 1e-6
    # the endpoint losses are reproduced exactly
    i0, i1 = ALPHAS.index(0.0), ALPHAS.index(1.0)
    assert res.loss[i0] == evaluate_state(model, a, x, y)[0] == res.loss_a
    assert res.loss[i1] == evaluate_state(model, b, x, y)[0] == res.loss_b
    assert res.accuracy[i0] == evaluate_state(model, a, x, y)[1]


def test_convex_random_endpoints_have_no_barrier():
    x, y = blobs(seed=3)
    g = torch.Generator().manual_seed(5)
    a = {"weight": torch.randn(3, 5, generator=g) * 3, "bias": torch.randn(3, generator=g)}
    b = {"weight": torch.randn(3, 5, generator=g) * 3, "bias": torch.randn(3, generator=g)}
    model = nn.Linear(5, 3)
    res = linear_path(model, a, b, x, y, parse_alphas("0:1:41"))
    assert res.barrier <= 1e-6
    assert res.loss[0] == evaluate_state(model, a, x, y)[0]
    assert res.loss[-1] == evaluate_state(model, b, x, y)[0]


def test_endpoints_computed_when_not_in_alphas(convex):
    model, a, b, x, y = convex
    res = linear_path(model, a, b, x, y, [0.25, 0.5, 0.75])
    assert res.alphas == [0.25, 0.5, 0.75]
    assert res.loss_a == evaluate_state(model, a, x, y)[0]
    assert res.loss_b == evaluate_state(model, b, x, y)[0]


def test_self_interpolation_is_constant(convex):
    model, a, _, x, y = convex
    res = linear_path(model, a, a, x, y, ALPHAS)
    assert max(res.loss) - min(res.loss) <= 1e-7
    assert res.barrier <= 1e-7
    assert res.monotone


def test_model_object_is_untouched(convex):
    model, a, b, x, y = convex
    before = clone_state(model)
    linear_path(model, a, b, x, y, [0.0, 0.5, 1.0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_monotone_path_from_init_to_solution(convex):
    model, _, b, x, y = convex
    init = {"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}
    full = train_logreg(x, y, seed=2, steps=2000)
    alphas = parse_alphas("0:1:11")
    forward = linear_path(model, init, full, x, y, alphas)
    assert forward.monotone
    assert forward.loss_a > forward.loss_b
    backward = linear_path(model, full, init, x, y, alphas)
    assert not backward.monotone


# --- barrier / monotone helpers ----------------------------------------------------------


def test_path_barrier_and_monotone_helpers():
    alphas = [-0.2, 0.0, 0.5, 1.0, 1.2]
    losses = [9.0, 1.0, 3.0, 2.0, 9.0]  # points outside [0, 1] are ignored
    barrier, where = path_barrier(alphas, losses, 1.0, 2.0)
    assert barrier == pytest.approx(1.5) and where == 0.5
    assert path_barrier([0.5], [0.0], 1.0, 1.0) == (0.0, 0.0)  # endpoints count: barrier >= 0
    assert not is_monotone(alphas, losses, 1.0, 2.0)
    assert is_monotone([0.0, 0.5, 1.0], [3.0, 2.0, 1.0], 3.0, 1.0)
    assert is_monotone([0.5], [2.0 + 1e-7], 2.0, 1.0)  # within tol
    assert not is_monotone([0.5], [2.0 + 1e-5], 2.0, 1.0)


# --- masks -------------------------------------------------------------------------------


def test_combine_masks_rules():
    a = {"w": torch.tensor([True, True, False, False]), "v": torch.tensor([True, False])}
    b = {"w": torch.tensor([True, False, True, False]), "v": torch.tensor([True, False])}
    assert combine_masks(None, None, "union") is None
    assert combine_masks(a, b, "union")["w"].tolist() == [True, True, True, False]
    assert combine_masks(a, b, "intersection")["w"].tolist() == [True, False, False, False]
    assert combine_masks(a, b, "a")["w"].tolist() == a["w"].tolist()
    assert combine_masks(a, b, "b")["w"].tolist() == b["w"].tolist()
    assert combine_masks(a, a, "shared")["w"].tolist() == a["w"].tolist()
    with pytest.raises(ValueError, match="'w'"):
        combine_masks(a, b, "shared")
    with pytest.raises(ValueError, match="rule"):
        combine_masks(a, b, "xor")
    # one side None (dense) reads as all-ones
    assert combine_masks(a, None, "union")["w"].all()
    assert combine_masks(None, b, "intersection")["w"].tolist() == b["w"].tolist()
    assert combine_masks(a, None, "b")["w"].all()
    with pytest.raises(ValueError):
        combine_masks(a, None, "shared")
    # a weight masked on one side only
    c = {"w": a["w"]}
    assert combine_masks(c, b, "intersection")["v"].tolist() == [True, False]
    # the result does not alias the inputs
    out = combine_masks(a, a, "shared")
    out["w"][0] = False
    assert a["w"][0]


def test_interpolate_states_exact_ends_and_masks():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(4, 6, generator=g), "b": torch.randn(4, generator=g),
         "n": torch.tensor(3)}
    b = {"w": torch.randn(4, 6, generator=g), "b": torch.randn(4, generator=g),
         "n": torch.tensor(7)}
    s0, s1 = interpolate_states(a, b, 0.0), interpolate_states(a, b, 1.0)
    for k in a:
        assert torch.equal(s0[k], a[k]) and torch.equal(s1[k], b[k])
    assert s0["w"] is not a["w"]  # copies
    mid = interpolate_states(a, b, 0.3)
    assert torch.allclose(mid["w"], 0.7 * a["w"] + 0.3 * b["w"], atol=1e-6)
    assert mid["n"].item() == 3  # integer buffers come from A
    mask = {"w": torch.rand(4, 6, generator=g) < 0.5}
    for alpha in (-0.2, 0.0, 0.3, 1.0, 1.2):
        s = interpolate_states(a, b, alpha, masks=mask)
        assert (s["w"][~mask["w"]] == 0).all()
        assert torch.equal(s["w"][mask["w"]], interpolate_states(a, b, alpha)["w"][mask["w"]])
        assert torch.equal(s["b"], interpolate_states(a, b, alpha)["b"])  # unmasked: dense
    with pytest.raises(ValueError, match="keys"):
        interpolate_states(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="mask"):
        interpolate_states(a, b, 0.5, masks={"zz": mask["w"]})


def test_linear_path_with_masks_stays_in_subspace():
    x, y = blobs(seed=1)
    g = torch.Generator().manual_seed(1)
    mask = {"weight": torch.rand(3, 5, generator=g) < 0.6}
    a = {"weight": torch.randn(3, 5, generator=g) * mask["weight"], "bias": torch.zeros(3)}
    b = {"weight": torch.randn(3, 5, generator=g) * mask["weight"], "bias": torch.ones(3)}
    model = nn.Linear(5, 3)
    res = linear_path(model, a, b, x, y, [0.0, 0.5, 1.0], masks=combine_masks(mask, mask))
    assert res.loss[0] == evaluate_state(model, a, x, y)[0]
    assert res.barrier <= 1e-6
    # a sparsity.MaskSet works wherever a mask dict does
    ms = MaskSet({"weight": model.weight}, {"weight": mask["weight"]})
    assert torch.equal(combine_masks(ms, None, "a")["weight"], mask["weight"])
    s = interpolate_states(a, b, 0.5, masks=ms)
    assert (s["weight"][~mask["weight"]] == 0).all()


# --- BatchNorm ---------------------------------------------------------------------------


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (5,), 3, widths=(16, 16), batchnorm=True)


def test_reset_bn_estimates_the_data_mean_in_place():
    x, _ = blobs(n=50)
    model = bn_model()
    model.train()
    bn = model.hidden[0].bn
    momentum = bn.momentum
    reset_bn_(model, x, batch_size=7)  # unequal batches: 6 x 7 + 8 (1 merged)
    with torch.no_grad():
        pre = model.hidden[0].linear(x)
    assert torch.allclose(bn.running_mean, pre.mean(0), atol=1e-5)
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    assert model.training and bn.momentum == momentum  # modes and momenta restored
    plain = nn.Linear(5, 3)
    reset_bn_(plain, x)  # no BatchNorm: a no-op


def test_evaluate_state_bn_reset_uses_copies():
    x, y = blobs(n=120)
    model = bn_model()
    state = clone_state(model)
    before = clone_state(model)
    plain = evaluate_state(model, state, x, y)
    reset = evaluate_state(model, state, x, y, bn_x=x, batch_size=40)
    for k, v in model.state_dict().items():  # neither the model nor the state changed
        assert torch.equal(v, before[k]) and torch.equal(state[k], before[k])
    assert reset != plain
    twin = copy.deepcopy(model)
    reset_bn_(twin, x, batch_size=40)
    assert twin.hidden[0].bn.running_mean.abs().sum() > 0
    want = evaluate_state(twin, clone_state(twin), x, y, batch_size=40)
    assert reset[0] == pytest.approx(want[0], rel=1e-6, abs=1e-7)
    assert reset[1] == want[1]


def test_linear_path_with_batchnorm():
    x, y = blobs(n=120)
    a, b = clone_state(bn_model(0)), clone_state(bn_model(1))
    model = bn_model(2)
    before = clone_state(model)
    res = linear_path(model, a, b, x, y, [0.0, 0.5, 1.0])
    assert res.loss[0] == evaluate_state(model, a, x, y, bn_x=x)[0]
    off = linear_path(model, a, b, x, y, [0.0, 0.5, 1.0], bn_reset=False)
    assert off.loss[0] == evaluate_state(model, a, x, y)[0]
    assert off.loss != res.loss
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
