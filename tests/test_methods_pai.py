"""Pruning at initialisation: SNIP, GraSP, SynFlow scores against hand formulas, and masks."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparseflow.methods.pai import (
    grasp_scores,
    prune_at_init,
    snip_scores,
    synflow_scores,
)
from sparseflow.sparsity import select_weights


def _conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.BatchNorm1d(8),
        nn.Dropout(0.5),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def _batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


# --- SNIP -------------------------------------------------------------------------
def test_snip_linear_matches_hand_formula():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 1, 0, 1])
    params = {"weight": model.weight, "bias": model.bias}
    scores = snip_scores(model, params, x, y)

    # dL/dW for mean cross-entropy: (softmax(z) - onehot)^T x / N
    with torch.no_grad():
        delta = (torch.softmax(model(x), 1) - F.one_hot(y, 2).float()) / len(y)
    torch.testing.assert_close(scores["weight"], (delta.T @ x * model.weight).abs())
    torch.testing.assert_close(scores["bias"], (delta.sum(0) * model.bias).abs())

    # the same with plain autograd
    gw, gb = torch.autograd.grad(F.cross_entropy(model(x), y), [model.weight, model.bias])
    torch.testing.assert_close(scores["weight"], (gw * model.weight).abs().detach())
    assert model.weight.grad is None


def test_snip_scores_frozen_parameter_and_no_grad_context():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        scores = snip_scores(model, select_weights(model), x, y)
    assert set(scores) == {"0.weight", "2.weight"}
    assert bool((scores["0.weight"] > 0).any())
    assert model[0].weight.requires_grad is False
    assert model[2].weight.requires_grad is True


# --- GraSP ------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_equals_weights_times_dense_hessian_times_gradient(temperature):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    params = select_weights(model)
    scores = grasp_scores(model, params, x, y, temperature=temperature)

    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = [p.view(s) for p, s in zip(flat.split(sizes), shapes, strict=True)]
        out = functional_call(model, dict(zip(names, parts, strict=True)), (x,))
        return F.cross_entropy(out / temperature, y)

    hessian = torch.autograd.functional.hessian(loss, theta)
    grad = torch.autograd.functional.jacobian(loss, theta)
    expected = theta * (hessian @ grad)
    got = torch.cat([scores[n].reshape(-1) for n in names])
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_grasp_masks_remove_the_papers_highest_scores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    params = select_weights(model)
    paper = {n: -s for n, s in grasp_scores(model, params, x, y).items()}  # S = -w * Hg
    masks = prune_at_init("grasp", model, params, 20, x=x, y=y)
    kept = torch.cat([paper[n][masks[n]] for n in params])
    removed = torch.cat([paper[n][~masks[n]] for n in params])
    assert kept.numel() == 20
    assert float(kept.max()) <= float(removed.min())


# --- SynFlow ----------------------------------------------------------------------
def test_synflow_two_layer_linear_hand_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    before = copy.deepcopy(model.state_dict())
    params = select_weights(model)
    scores = synflow_scores(model, params, (4,))
    a1, a2 = model[0].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    # R = 1^T |W2| |W1| 1: dR/dW1_ij = sum_k |W2_ki|,  dR/dW2_ki = sum_j |W1_ij|
    torch.testing.assert_close(scores["0.weight"], a2.sum(0)[:, None] * a1)
    torch.testing.assert_close(scores["2.weight"], a2 * a1.sum(1)[None, :])
    assert scores["0.weight"].dtype == torch.float64
    for k, v in model.state_dict().items():  # signs (and values) unchanged
        assert torch.equal(v, before[k])
    assert bool((model[0].weight < 0).any())

    # with masks: the masked network |W2| (|W1| * M1); masked positions score 0
    m1 = torch.rand(3, 4) > 0.4
    masked = synflow_scores(model, params, (4,), {"0.weight": m1})
    b1 = a1 * m1
    torch.testing.assert_close(masked["0.weight"], a2.sum(0)[:, None] * b1)
    torch.testing.assert_close(masked["2.weight"], a2 * b1.sum(1)[None, :])


def test_synflow_uses_eval_mode_and_restores_flags():
    model = _conv_bn_net().train()
    model[6].eval()  # mixed flags must come back exactly
    flags = [m.training for m in model.modules()]
    before = copy.deepcopy(model.state_dict())
    scores = synflow_scores(model, select_weights(model), (1, 8, 8))
    again = synflow_scores(model, select_weights(model), (1, 8, 8))
    assert [m.training for m in model.modules()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for n, s in scores.items():  # eval mode: dropout off, so deterministic
        assert torch.equal(s, again[n])
        assert bool(torch.isfinite(s).all()) and bool((s > 0).any())


def test_synflow_float64_avoids_overflow_of_deep_nets():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(64, 64, bias=False) for _ in range(70)])
    params = select_weights(model)  # R ~ (sqrt(64) / 2)^70 ~ 1e42 > float32 max
    scores = synflow_scores(model, params, (64,))
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    with pytest.raises(FloatingPointError):
        synflow_scores(model, params, (64,), dtype=torch.float32)


def _path_count(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """1^T |W_L * M_L| ... |W_1 * M_1| 1: zero iff some layer cuts every input-output path."""
    v = torch.ones(model[1].in_features, dtype=torch.float64)
    for i in (1, 3, 5):
        w = model[i].weight.detach().abs().double() * masks[f"{i}.weight"]
        v = w @ v
    return float(v.sum())


def test_iterative_synflow_does_not_collapse_a_layer_at_99_percent():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )  # fmt: skip
    params = select_weights(model)
    total = sum(p.numel() for p in params.values())
    keep = round(0.01 * total)
    masks = prune_at_init("synflow", model, params, keep, input_shape=(1, 28, 28), iterations=100)
    counts = {n: int(m.sum()) for n, m in masks.items()}
    assert sum(counts.values()) == keep
    assert all(c > 0 for c in counts.values()), counts
    assert _path_count(model, masks) > 0
    # contrast (the paper's point): one-shot SynFlow cuts the first layer off here
    once = prune_at_init("synflow", model, params, keep, input_shape=(1, 28, 28), iterations=1)
    assert _path_count(model, once) == 0


def test_iterative_synflow_never_regrows_a_pruned_weight(monkeypatch):
    import sparseflow.methods.pai as pai

    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    params = select_weights(model)
    seen: list[dict[str, torch.Tensor]] = []
    gen = torch.Generator().manual_seed(0)

    def fake_scores(model, params, input_shape, masks=None):  # ignores the masks on purpose
        seen.append({n: m.clone() for n, m in masks.items()})
        return {k: torch.rand(p.shape, generator=gen) for k, p in params.items()}

    monkeypatch.setattr(pai, "synflow_scores", fake_scores)
    masks = prune_at_init("synflow", model, params, 10, input_shape=(6,), iterations=8)
    seen.append(masks)
    assert len(seen) > 3
    for earlier, later in itertools.pairwise(seen):
        assert all(bool((later[n] <= earlier[n]).all()) for n in params)


def test_synflow_one_iteration_is_one_shot_top_k():
    model = _conv_bn_net()
    params = select_weights(model)
    masks = prune_at_init("synflow", model, params, 50, input_shape=(1, 8, 8), iterations=1)
    scores = synflow_scores(model, params, (1, 8, 8))
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    kept = torch.cat([scores[n][masks[n]] for n in params])
    assert kept.numel() == 50
    assert float(kept.min()) >= float(flat.sort(descending=True).values[49])


def test_iterative_synflow_layer_scope_exact_counts():
    model = _conv_bn_net()
    params = select_weights(model)
    counts = {n: p.numel() // 5 for n, p in params.items()}
    masks = prune_at_init(
        "synflow", model, params, counts, input_shape=(1, 8, 8), scope="layer", iterations=10
    )
    assert {n: int(m.sum()) for n, m in masks.items()} == counts


# --- prune_at_init: counts, determinism, untouched model ----------------------------
def _kwargs(method: str) -> dict:
    if method == "synflow":
        return {"input_shape": (1, 8, 8), "iterations": 5}
    x, y = _batch()
    return {"x": x, "y": y}


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_exact_counts_and_determinism(method):
    model = _conv_bn_net().eval()  # eval: no dropout noise, so calls must agree
    params = select_weights(model)
    counts = {n: p.numel() // 3 for n, p in params.items()}
    layer = prune_at_init(method, model, params, counts, scope="layer", **_kwargs(method))
    assert {n: int(m.sum()) for n, m in layer.items()} == counts
    for n, m in layer.items():
        assert m.dtype == torch.bool and m.shape == params[n].shape

    masks = prune_at_init(method, model, params, 77, **_kwargs(method))
    assert sum(int(m.sum()) for m in masks.values()) == 77
    again = prune_at_init(method, model, params, 77, **_kwargs(method))
    assert all(torch.equal(masks[n], again[n]) for n in params)

    assert prune_at_init(method, model, params, 0, **_kwargs(method))["0.weight"].sum() == 0
    full = prune_at_init(method, model, params, sum(p.numel() for p in params.values()),
                         **_kwargs(method))  # fmt: skip
    assert all(bool(m.all()) for m in full.values())


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_model_state_untouched(method):
    model = _conv_bn_net().train()
    model[6].eval()
    model[0].bias.requires_grad_(False)
    model[5].bias.grad = torch.full_like(model[5].bias, 3.0)
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    params = select_weights(model)
    with torch.no_grad():
        prune_at_init(method, model, params, 100, **_kwargs(method))
    for k, v in model.state_dict().items():  # includes BN running stats and batch counts
        assert torch.equal(v, before[k]), k
    assert [m.training for m in model.modules()] == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == req
    for n, p in model.named_parameters():
        if n == "5.bias":
            assert torch.equal(p.grad, torch.full_like(p, 3.0))
        else:
            assert p.grad is None, n


def test_ties_are_broken_by_layer_order_then_index():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[2].weight.zero_()  # every SNIP score is 0
    params = select_weights(model)
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    masks = prune_at_init("snip", model, params, 14, x=x, y=y)
    assert bool(masks["0.weight"].all())
    assert masks["2.weight"].reshape(-1).tolist() == [True, True] + [False] * 6
    layer = prune_at_init("snip", model, params, {"0.weight": 2, "2.weight": 1},
                          x=x, y=y, scope="layer")  # fmt: skip
    assert layer["0.weight"].reshape(-1).tolist() == [True, True] + [False] * 10
    assert layer["2.weight"].reshape(-1).tolist() == [True] + [False] * 7


# --- errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "counts", "kwargs", "match"),
    [
        ("magnitude", 5, {}, "unknown method 'magnitude'; valid: snip, grasp, synflow"),
        ("snip", 5, {}, "needs a batch"),
        ("grasp", 5, {"x": torch.zeros(2, 3)}, "needs a batch"),
        ("synflow", 5, {}, "needs input_shape"),
        ("snip", 99, {"x": 0, "y": 0}, r"counts=99 outside \[0, 20\]"),
        ("snip", -1, {"x": 0, "y": 0}, "outside"),
        ("snip", 2.5, {"x": 0, "y": 0}, "must be an int"),
        ("snip", {"0.weight": 1, "2.weight": 1}, {"x": 0, "y": 0}, "needs counts as one int"),
        ("snip", 5, {"x": 0, "y": 0, "scope": "layer"}, r"needs counts as \{name: int\}"),
        ("snip", {"0.weight": 13, "2.weight": 0}, {"x": 0, "y": 0, "scope": "layer"},
         r"counts\['0.weight'\]=13 outside \[0, 12\]"),
        ("snip", {"0.weight": 1}, {"x": 0, "y": 0, "scope": "layer"}, "missing"),
        ("snip", 5, {"x": 0, "y": 0, "scope": "rows"}, "unknown scope"),
        ("synflow", 5, {"input_shape": (3,), "iterations": 0}, "iterations must be >= 1"),
    ],
)  # fmt: skip
def test_errors_are_one_line_value_errors(method, counts, kwargs, match):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=match) as info:
        prune_at_init(method, model, select_weights(model), counts, **kwargs)
    assert "\n" not in str(info.value)


def test_foreign_parameter_and_bad_masks_are_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    other = nn.Linear(3, 4)
    with pytest.raises(ValueError, match="not a parameter of the model"):
        snip_scores(model, {"w": other.weight}, torch.zeros(2, 3), torch.zeros(2).long())
    with pytest.raises(ValueError, match="params is empty"):
        synflow_scores(model, {}, (3,))
    params = select_weights(model)
    with pytest.raises(ValueError, match="names no parameter"):
        synflow_scores(model, params, (3,), {"nope": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        synflow_scores(model, params, (3,), {"0.weight": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="temperature"):
        grasp_scores(model, params, torch.zeros(2, 3), torch.zeros(2).long(), temperature=0)
