"""Inits: sparsity-aware variance gain2 / f (not std!), fans, uniform, conv, Liu, dispatcher."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.sparsity import (
    MaskSet,
    initialize_,
    liu_scale_,
    select_weights,
    sparse_init_,
    sparse_variance,
    unit_fans,
)


def _draws(mask, n, **opts):
    """n independent draws of sparse_init_ on a weight of the mask's shape, stacked."""
    g = torch.Generator().manual_seed(123)
    w = torch.empty(mask.shape)
    out = torch.empty((n, *mask.shape))
    for i in range(n):
        sparse_init_(w, mask, generator=g, **opts)
        out[i] = w
    return out


def _hand_fans(mask):
    """Fans by explicit loops, independent of the library's tensor code."""
    out_units, in_units = mask.shape[0], mask.shape[1]
    f_in = [int(mask[j].sum()) for j in range(out_units)]
    f_out = [int(mask[:, i].sum()) for i in range(in_units)]
    return f_in, f_out


def test_fan_in_variance_pooled_over_units_with_equal_fan():
    # 60 output units, 400 inputs; unit j has fan-in from a known list
    fans = [1, 3, 10, 50, 400]
    rows = []
    g = torch.Generator().manual_seed(0)
    for j in range(60):
        f = fans[j % len(fans)]
        row = torch.zeros(400, dtype=torch.bool)
        row[torch.randperm(400, generator=g)[:f]] = True
        rows.append(row)
    mask = torch.stack(rows)
    draws = _draws(mask, 200)  # mode fan_in, normal, gain2 = 2 by default
    for f in fans:
        units = [j for j in range(60) if fans[j % len(fans)] == f]
        vals = draws[:, units][:, mask[units]]
        n = vals.numel()
        var = vals.double().pow(2).mean().item()  # mean is 0 by construction
        assert var == pytest.approx(2.0 / f, rel=6 * math.sqrt(2 / n)), f
        # the known bug (2/f used as std) would give 4/f^2: far off for f != 2
        assert abs(var - 4.0 / f**2) > 0.2 * (2.0 / f)
        assert abs(vals.double().mean().item()) < 6 * math.sqrt(2.0 / f / n)


def _check_per_entry(mask, mode, distribution, gain2, n=3000):
    f_in, f_out = _hand_fans(mask if mask.dim() == 2 else mask.sum(dim=(2, 3)))
    draws = _draws(mask, n, mode=mode, distribution=distribution, gain2=gain2).double()
    emp = draws.pow(2).mean(0)
    tol = 6 * math.sqrt(2 / n)
    for idx in torch.nonzero(mask).tolist():
        j, i = idx[0], idx[1]
        f = {"fan_in": f_in[j], "fan_out": f_out[i], "fan_avg": (f_in[j] + f_out[i]) / 2}[mode]
        want = gain2 / max(1.0, f)
        assert emp[tuple(idx)].item() == pytest.approx(want, rel=tol), (idx, mode)
        if distribution == "uniform":
            assert draws[(slice(None), *idx)].abs().max() <= math.sqrt(3 * want) + 1e-6
    assert bool((draws[:, ~mask] == 0).all())


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_per_entry_variance_all_modes(mode, distribution):
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0, 0, 0],  # no input: stays zero
            [1, 1, 0, 1, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    _check_per_entry(mask, mode, distribution, gain2=2.0 if distribution == "normal" else 1.0)


def test_conv_fan_in_counts_kernel_positions():
    # out 3, in 2, 3x3 kernels; unit 0 fully active (f = 18), unit 1 one channel (f = 9),
    # unit 2 a single weight (f = 1)
    mask = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    mask[0] = True
    mask[1, 0] = True
    mask[2, 1, 1, 1] = True
    f_in, f_out = unit_fans(mask)
    assert f_in.tolist() == [18, 9, 1] and f_out.tolist() == [18, 10]
    draws = _draws(mask, 1500).double()
    for j, f in enumerate([18, 9, 1]):
        vals = draws[:, j][:, mask[j]]
        assert vals.pow(2).mean().item() == pytest.approx(2.0 / f, rel=0.1)
    _check_per_entry(mask, "fan_out", "normal", 2.0, n=1500)


def test_dead_unit_zeroed_even_if_weight_was_nonzero():
    w = torch.randn(3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    sparse_init_(w, mask)
    assert bool((w[1] == 0).all()) and bool((w[[0, 2]] != 0).all())


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.tuples(st.integers(1, 30), st.integers(1, 30)),
        st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3)),
    ),
    st.floats(0.0, 1.0),
    st.sampled_from(["fan_in", "fan_out", "fan_avg"]),
    st.sampled_from(["normal", "uniform"]),
    st.integers(0, 2**31 - 1),
)
def test_sparse_init_support_and_formula(shape, density, mode, dist, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < density
    w = torch.full(shape, 7.0)
    sparse_init_(w, mask, mode=mode, distribution=dist, generator=g)
    assert bool((w[~mask] == 0).all()) and bool(torch.isfinite(w).all())
    assert bool((w[mask] != 0).all())
    var = sparse_variance(mask, mode)
    if dist == "uniform":
        assert bool((w.abs() <= (3 * var).sqrt() + 1e-6).all())
    assert bool((var <= 2.0).all()) and bool((var > 0).all())


def test_liu_scaling_exact_and_std_ratio():
    torch.manual_seed(0)
    w = torch.randn(400, 300)
    dense = w.clone()
    mask = torch.rand(400, 300) < 0.25
    d = mask.sum().item() / mask.numel()
    liu_scale_({"w": w}, {"w": mask})
    assert torch.allclose(w, dense * mask / math.sqrt(d))
    assert (w[mask].std() / dense.std()).item() == pytest.approx(1 / math.sqrt(d), rel=0.02)
    empty = torch.randn(3, 3)
    liu_scale_({"e": empty}, {"e": torch.zeros(3, 3, dtype=torch.bool)})
    assert bool((empty == 0).all())


def test_initialize_dispatch():
    model = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 10))
    params = select_weights(model)
    mask = {n: torch.rand(p.shape) < 0.5 for n, p in params.items()}
    ms = MaskSet(params, mask)
    before = {n: p.detach().clone() for n, p in params.items()}
    initialize_(ms, "dense")
    assert all(torch.equal(p.detach(), before[n] * mask[n]) for n, p in params.items())
    initialize_(ms, "liu")
    for n, p in params.items():
        d = mask[n].float().mean().item()
        assert torch.allclose(p.detach(), before[n] * mask[n] / math.sqrt(d))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    initialize_(ms, "sparse", generator=g1, mode="fan_avg")
    first = {n: p.detach().clone() for n, p in params.items()}
    initialize_(ms, "sparse", generator=g2, mode="fan_avg")
    assert all(torch.equal(p.detach(), first[n]) for n, p in params.items())
    assert ms.nnz() == {n: int(m.sum()) for n, m in mask.items()}
    with pytest.raises(ValueError, match="valid: dense, liu, sparse"):
        initialize_(ms, "glorot")
    with pytest.raises(ValueError, match="takes no options"):
        initialize_(ms, "liu", gain2=1.0)
    with pytest.raises(ValueError, match="valid: fan_in"):
        initialize_(ms, "sparse", mode="fanin")
    with pytest.raises(ValueError, match="valid: normal, uniform"):
        initialize_(ms, "sparse", distribution="gauss")
