"""layer_counts / layer_densities: exact totals, proportionality, capping, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseflow.sparsity import kept_count, layer_counts, layer_densities, raw_density

linear = st.tuples(st.integers(1, 300), st.integers(1, 300))
conv = st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 5), st.integers(1, 5))
shape_lists = st.lists(st.one_of(linear, conv), min_size=1, max_size=6)


def _named(shapes):
    return {f"l{i}.weight": s for i, s in enumerate(shapes)}


def _target(shapes, s, dense=()):
    """round((1 - s) * N), halves up, float noise snapped (``kept_count``, which
    test_sparsity_counts checks against exact rational arithmetic)."""
    return kept_count(1 - s, sum(math.prod(v) for n, v in shapes.items() if n not in dense))


@settings(max_examples=150, deadline=None)
@given(
    shape_lists,
    st.floats(0.0, 0.995),
    st.sampled_from(["uniform", "er", "erk"]),
    st.data(),
)
def test_exact_total_and_bounds(shapes, s, dist, data):
    shapes = _named(shapes)
    dense = data.draw(st.sets(st.sampled_from(sorted(shapes))))
    sparse = [n for n in shapes if n not in dense]
    target = _target(shapes, s, dense)
    if sparse and target < len(sparse):
        with pytest.raises(ValueError, match="at least 1"):
            layer_counts(shapes, s, dist, dense=dense)
        return
    counts = layer_counts(shapes, s, dist, dense=dense)
    assert list(counts) == list(shapes)
    for n, c in counts.items():
        numel = math.prod(shapes[n])
        assert isinstance(c, int)
        assert (c == numel) if n in dense else (1 <= c <= numel)
    if sparse:
        assert sum(counts[n] for n in sparse) == target
    dens = layer_densities(shapes, s, dist, dense=dense)
    assert all(0 < d <= 1 for d in dens.values())


@settings(max_examples=150, deadline=None)
@given(shape_lists, st.floats(0.0, 0.99))
def test_uniform_equal_per_layer_sparsity(shapes, s):
    shapes = _named(shapes)
    cont = {n: (1 - s) * math.prod(v) for n, v in shapes.items()}
    if min(cont.values()) < 1:  # the ">= 1 weight" floor may move counts; covered elsewhere
        return
    counts = layer_counts(shapes, s, "uniform")
    for n, c in counts.items():
        assert abs(c - cont[n]) < 1 + 1e-9


@settings(max_examples=150, deadline=None)
@given(
    shape_lists, st.floats(0.0, 0.99), st.sampled_from(["er", "erk"]), st.sampled_from([0.5, 1.0])
)
def test_er_erk_proportional_to_raw_and_capped_dense(shapes, s, dist, power):
    shapes = _named(shapes)
    if _target(shapes, s) < len(shapes):
        return
    counts = layer_counts(shapes, s, dist, erk_power_scale=power)
    numel = {n: math.prod(v) for n, v in shapes.items()}
    raw = {n: raw_density(v, dist, power) for n, v in shapes.items()}
    free = [n for n in shapes if counts[n] < numel[n] and counts[n] >= 2]
    full = [n for n in shapes if counts[n] == numel[n]]
    for a in free:
        for b in free:
            # d_a / d_b = raw_a / raw_b up to one weight of rounding in each count
            lo = (counts[a] - 1) / (counts[b] + 1) * numel[b] / numel[a]
            hi = (counts[a] + 1) / (counts[b] - 1) * numel[b] / numel[a]
            assert lo - 1e-9 <= raw[a] / raw[b] <= hi + 1e-9
        for c in full:
            # a dense layer's eps * raw is >= 1 (or it is within rounding of density 1)
            eps_hi = (counts[a] + 1) / (numel[a] * raw[a])
            assert eps_hi * raw[c] >= 1 - 1e-9 or numel[c] - 1 <= eps_hi * raw[c] * numel[c]


def test_hand_computed_two_linear_layers():
    # A: Linear(10 -> 4), B: Linear(4 -> 2); numel 40 + 8 = 48.
    shapes = {"a": (4, 10), "b": (2, 4)}
    # raw_a = 14/40 = 0.35, raw_b = 6/8 = 0.75. s = 0.5: T = 24, eps = 24 / (14 + 6) = 1.2,
    # d_a = 0.42 -> 16.8 -> 17, d_b = 0.9 -> 7.2 -> 7.
    assert layer_counts(shapes, 0.5, "erk") == {"a": 17, "b": 7}
    assert layer_counts(shapes, 0.5, "er") == {"a": 17, "b": 7}
    # s = 0.25: T = 36, eps = 1.8 gives d_b = 1.35 > 1 -> b dense (8), eps = 28 / 14 = 2,
    # d_a = 0.7 -> 28.
    assert layer_counts(shapes, 0.25, "erk") == {"a": 28, "b": 8}
    # uniform s = 0.5: 20 and 4.
    assert layer_counts(shapes, 0.5, "uniform") == {"a": 20, "b": 4}
    assert layer_densities(shapes, 0.5, "uniform") == {"a": 0.5, "b": 0.5}
    # b kept dense: the budget is over a alone: round(0.5 * 40) = 20.
    assert layer_counts(shapes, 0.5, "erk", dense={"b"}) == {"a": 20, "b": 8}


def test_er_ignores_kernel_erk_uses_it():
    assert raw_density((8, 3, 3, 3), "er") == pytest.approx(11 / 24)
    assert raw_density((8, 3, 3, 3), "erk") == pytest.approx(17 / 216)
    assert raw_density((4, 10), "erk") == raw_density((4, 10), "er")
    assert raw_density((4, 10), "erk", 0.5) == pytest.approx(0.35**0.5)


def test_rounding_fix_uses_largest_residuals():
    # three equal layers of 3 weights, s = 0.5: c = 1.5 each -> 2, 2, 2 = 6, target
    # round(4.5) = 5 (floor(x + .5)); one layer loses a weight, the first on ties.
    shapes = {"a": (1, 3), "b": (1, 3), "c": (1, 3)}
    assert layer_counts(shapes, 0.5, "uniform") == {"a": 1, "b": 2, "c": 2}


def test_accepts_tensors_as_shapes():
    t = {"w": torch.empty(10, 10)}
    assert layer_counts(t, 0.9, "uniform") == {"w": 10}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity": 1.0}, r"\[0, 1\)"),
        ({"sparsity": -0.1}, r"\[0, 1\)"),
        ({"sparsity": 0.5, "distribution": "foo"}, "valid: uniform, er, erk"),
        ({"sparsity": 0.5, "dense": ["nope"]}, "dense names"),
        ({"sparsity": 0.99}, "at least 1"),
    ],
)
def test_bad_inputs(kwargs, match):
    shapes = {"a": (4, 10), "b": (2, 4)}
    with pytest.raises(ValueError, match=match):
        layer_counts(shapes, **kwargs)


def test_one_dim_shape_refused_for_er():
    with pytest.raises(ValueError, match=">= 2 dims"):
        layer_counts({"a": (10,)}, 0.5, "er")
    assert layer_counts({"a": (10,)}, 0.5, "uniform") == {"a": 5}


def test_all_dense_is_fine():
    assert layer_counts({"a": (3, 3)}, 0.5, dense={"a"}) == {"a": 9}


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=4),
    dist=st.sampled_from(["uniform", "er", "erk"]),
    s1=st.floats(0.0, 0.9),
    ds=st.floats(0.0, 0.09),
)
def test_per_layer_rounding_is_monotone_in_sparsity(shapes, dist, s1, ds):
    """exact_total=False: no layer's count rises when the sparsity rises (magnitude pruning)."""
    named = {f"l{i}": s for i, s in enumerate(shapes)}
    total = sum(a * b for a, b in shapes)
    s2 = s1 + ds
    if kept_count(1 - s2, total) < len(shapes):
        return
    c1 = layer_counts(named, s1, dist, exact_total=False)
    c2 = layer_counts(named, s2, dist, exact_total=False)
    assert all(c2[n] <= c1[n] for n in named)
    assert abs(sum(c2.values()) - (1 - s2) * total) <= len(shapes)  # one weight per layer
