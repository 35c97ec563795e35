"""Counts from fractions (sparsity/counts.py) against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseflow.sparsity import (
    floor_count,
    kept_count,
    round_half_even,
    round_half_up,
    snap,
    step_at,
)


def decimals(max_digits: int = 6) -> st.SearchStrategy[Fraction]:
    """Decimals in [0, 1] with at most ``max_digits`` digits after the point, short ones often."""
    return st.one_of(*[st.integers(0, 10**d).map(lambda m, d=d: Fraction(m, 10**d))
                       for d in range(1, max_digits + 1)])


counts = st.one_of(st.integers(0, 1000), st.integers(0, 10**8))


def half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@settings(max_examples=2000, deadline=None)
@given(decimals(), counts)
def test_kept_count_of_a_density_is_exact(d, n):
    assert kept_count(float(d), n) == half_up(d * n)


@settings(max_examples=2000, deadline=None)
@given(decimals(), counts)
def test_kept_count_of_one_minus_a_sparsity_is_exact(s, n):
    """The usual call: density = 1 - s computed in floats (1 - 0.9 = 0.09999999999999998)."""
    assert kept_count(1.0 - float(s), n) == half_up((1 - s) * n)


@settings(max_examples=2000, deadline=None)
@given(decimals(), counts)
def test_floor_count_is_exact(f, n):
    assert floor_count(float(f), n) == math.floor(f * n)


@settings(max_examples=1000, deadline=None)
@given(decimals(), counts)
def test_round_half_even_and_step_at_are_exact(f, n):
    assert round_half_even(float(f) * n) == round(f * n)  # Fraction: exact, halves to even
    assert step_at(float(f), n) == max(1, round(f * n))


@settings(max_examples=500, deadline=None)
@given(st.floats(-1e9, 1e9, allow_nan=False))
def test_round_half_up_is_floor_x_plus_half_away_from_halves(x):
    """Away from the snapping band around halves the helpers are the plain float rules."""
    if abs(2 * x - round(2 * x)) > 1e-6:
        assert snap(x) == x
        assert round_half_up(x) == math.floor(x + 0.5)
        assert round_half_even(x) == round(x)


@settings(max_examples=500, deadline=None)
@given(decimals(), decimals(), st.integers(0, 10**6))
def test_counts_are_monotone_in_the_fraction(a, b, n):
    lo, hi = sorted((a, b))
    assert kept_count(float(lo), n) <= kept_count(float(hi), n)
    assert floor_count(float(lo), n) <= floor_count(float(hi), n)


def test_the_float_cases_that_motivated_the_helpers():
    assert 0.29 * 100 < 29  # 28.999999999999996
    assert floor_count(0.29, 100) == 29
    assert (1 - 0.55) * 110 < 49.5  # 49.49999999999999
    assert kept_count(1 - 0.55, 110) == 50  # round half up of 49.5
    assert kept_count(0.5, 7) == 4 and kept_count(0.25, 2) == 1  # exact halves go up
    assert step_at(0.75, 10) == 8 and step_at(0.75, 6) == 4  # 7.5 -> 8, 4.5 -> 4 (to even)
    assert step_at(0.75, 1) == 1 and step_at(0.0, 100) == 1  # at least step 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_amounts_are_refused(bad):
    with pytest.raises(ValueError, match="non-finite"):
        kept_count(bad, 10)
    with pytest.raises(ValueError, match="non-finite"):
        floor_count(bad, 10)
