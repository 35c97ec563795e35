"""attach(optimizer) keeps masked weights at zero; reset_optimizer_state for any optimiser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseflow.sparsity import (
    INITIAL_STATE,
    MaskSet,
    layer_counts,
    reset_optimizer_state,
    select_weights,
)

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=0.01),
    "adagrad": lambda p: torch.optim.Adagrad(
        p, lr=0.1, weight_decay=0.01, initial_accumulator_value=0.1
    ),
    "adadelta": lambda p: torch.optim.Adadelta(p, weight_decay=0.01),
    "adamax": lambda p: torch.optim.Adamax(p, lr=0.01),
    "nadam": lambda p: torch.optim.NAdam(p, lr=0.01),
    "radam": lambda p: torch.optim.RAdam(p, lr=0.01, weight_decay=0.01),
    "asgd": lambda p: torch.optim.ASGD(p, lr=0.01, weight_decay=0.01),
    "rprop": lambda p: torch.optim.Rprop(p, lr=0.01),
}


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 12), nn.Linear(12, 3)
    )


def _masked(model, sparsity=0.8):
    params = select_weights(model)
    ms = MaskSet.random(params, layer_counts(params, sparsity), torch.Generator().manual_seed(1))
    ms.apply_()
    return ms


def _initial(opt, key, group):
    for (cls, k), fn in INITIAL_STATE.items():
        if k == key and isinstance(opt, cls):
            return fn(group)
    return 0.0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_attach_keeps_masked_weights_zero(name):
    model = _model()
    ms = _masked(model)
    counts = ms.nnz()
    opt = OPTIMIZERS[name](model.parameters())
    ms.attach(opt)
    g = torch.Generator().manual_seed(2)
    for _ in range(40):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        for n, p in ms.params.items():
            assert bool((p[~ms[n]] == 0).all()), n
    assert ms.nnz() == counts
    for n, p in ms.params.items():
        assert int((p != 0).sum()) == counts[n]  # active weights moved off zero
        # no gradient reached the state at masked positions: it equals the state of a
        # zero weight that only ever received zero gradients
        twin = nn.Parameter(torch.zeros_like(p))
        twin_opt = OPTIMIZERS[name]([twin])
        for _ in range(40):
            twin.grad = torch.zeros_like(twin)
            twin_opt.step()
        for key, v in opt.state[p].items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and key != "step":
                ref = twin_opt.state[twin][key]
                assert torch.equal(v[~ms[n]], ref[~ms[n]]), (n, key)


def test_attach_with_real_loss_and_detach():
    model = _model()
    ms = _masked(model, 0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    handles = ms.attach(opt)
    assert len(handles) == 2 + len(ms)  # step pre- and post-hook, one backward hook a weight
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(bool((p[~ms[n]] == 0).all()) for n, p in ms.params.items())
    ms.detach()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert any(bool((p[~ms[n]] != 0).any()) for n, p in ms.params.items())


def test_attach_without_grad_masking_still_zeroes_weights():
    model = _model()
    ms = _masked(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    assert len(ms.attach(opt, mask_grads=False)) == 1
    for _ in range(10):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    assert all(bool((p[~ms[n]] == 0).all()) for n, p in ms.params.items())
    # the state at masked positions did see gradients: that is the documented price
    w = model[0].weight
    assert bool((opt.state[w]["exp_avg"][~ms["0.weight"]] != 0).any())


def test_post_hook_zeroes_even_with_stale_state():
    # momentum accumulated while dense, then masked: the post-hook still keeps zeros
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    ms = _masked(model)
    ms.attach(opt)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    assert all(bool((p[~ms[n]] == 0).all()) for n, p in ms.params.items())


def test_attach_refuses_unrelated_optimizer():
    ms = _masked(_model())
    with pytest.raises(ValueError, match="none of the masked"):
        ms.attach(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1))


RESET_CASES = {
    "sgd_momentum": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), ["momentum_buffer"]),
    "adam_amsgrad": (
        lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
        ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    ),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01), ["exp_avg", "exp_avg_sq"]),
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, centered=True),
        ["square_avg", "momentum_buffer", "grad_avg"],
    ),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.3), ["sum"]),
    "adadelta": (lambda p: torch.optim.Adadelta(p), ["square_avg", "acc_delta"]),
    "rprop": (lambda p: torch.optim.Rprop(p, lr=0.02), ["prev", "step_size"]),
}


@pytest.mark.parametrize("name", sorted(RESET_CASES))
@pytest.mark.parametrize("as_bool", [False, True])
def test_reset_optimizer_state(name, as_bool):
    make, keys = RESET_CASES[name]
    w = nn.Parameter(torch.randn(6, 5))
    opt = make([w])
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        w.grad = torch.randn(w.shape, generator=g)
        opt.step()
    before = {k: v.clone() for k, v in opt.state[w].items() if isinstance(v, torch.Tensor)}
    idx = torch.tensor([0, 7, 29])
    where = torch.zeros(30, dtype=torch.bool)
    where[idx] = True
    where = where.view(6, 5)
    reset = reset_optimizer_state(opt, w, where if as_bool else idx)
    assert sorted(reset) == sorted(keys)
    group = opt.param_groups[0]
    for key, v in opt.state[w].items():
        if key in keys:
            v0 = _initial(opt, key, group)
            assert bool((v[where] == v0).all()), key
            assert torch.equal(v[~where], before[key][~where]), key
        elif isinstance(v, torch.Tensor):
            assert torch.equal(v, before[key]), key  # scalar state (step) untouched
    assert (name != "adagrad") or _initial(opt, "sum", group) == 0.3


def test_reset_by_name_and_via_maskset():
    model = nn.Sequential(nn.Linear(4, 3))
    opt = torch.optim.Adam(model.named_parameters(), lr=0.01)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    assert reset_optimizer_state(opt, "0.weight", [1]) == ["exp_avg", "exp_avg_sq"]
    assert opt.state[model[0].weight]["exp_avg"].view(-1)[1] == 0
    with pytest.raises(ValueError, match="not in the optimizer"):
        reset_optimizer_state(opt, "nope", [1])
    unnamed = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="no parameter names"):
        reset_optimizer_state(unnamed, "0.weight", [1])
    ms = MaskSet.dense(select_weights(model))
    assert ms.reset_optimizer_state(opt, "0.weight", [2]) == ["exp_avg", "exp_avg_sq"]
    assert ms.reset_optimizer_state(unnamed, "0.weight", [2]) == []  # never stepped


def _sgd_step_state(model, ms, opt, x, y, after_backward=None):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    if after_backward is not None:
        after_backward()
    opt.step()


def _masked_state_is_zero(opt, ms):
    return all(bool((opt.state[p]["momentum_buffer"][~ms[n]] == 0).all())
               for n, p in ms.params.items())


def test_gradients_are_masked_as_backward_writes_them():
    model = _model()
    ms = _masked(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ms.attach(opt, mask_weights=False)
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    for n, p in ms.params.items():  # before any optimiser step
        assert bool((p.grad[~ms[n]] == 0).all()), n
        assert bool((p.grad[ms[n]] != 0).any()), n


@pytest.mark.parametrize("change", ["in_place", "replaced", "deferred"])
def test_gradients_changed_after_backward_are_masked_at_the_step(change):
    # the step pre-hook masks what the backward hooks did not: a gradient changed in place or
    # replaced after backward, or every gradient while masking is deferred to the step
    model = _model()
    ms = _masked(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ms.attach(opt, mask_weights=False)  # gradients alone must keep the weights at zero
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    ms.defer_grad_masking = change == "deferred"
    seen_dense = []

    def after_backward():
        for n, p in ms.params.items():
            if change == "in_place":
                p.grad.add_(1.0)
            elif change == "replaced":
                p.grad = torch.ones_like(p)
            else:
                seen_dense.append(bool((p.grad[~ms[n]] != 0).any()))

    for _ in range(3):
        _sgd_step_state(model, ms, opt, x, y, after_backward)
        assert all(bool((p[~ms[n]] == 0).all()) for n, p in ms.params.items())
        assert _masked_state_is_zero(opt, ms)
    if change == "deferred":
        assert all(seen_dense)  # the dense gradient was there to read before the step


def test_detach_removes_the_backward_hooks():
    model = _model()
    ms = _masked(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ms.attach(opt)
    ms.detach()
    x, y = torch.randn(16, 2, 6, 6), torch.randint(0, 3, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    assert any(bool((p.grad[~ms[n]] != 0).any()) for n, p in ms.params.items())
