"""parse_grid: the one parser of ``START:STOP:N`` / ``A,B,C`` grids (sparsities, alphas)."""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparseflow.grids
from sparseflow.grids import parse_grid


def alphas(text: str) -> list[float]:
    return parse_grid(text, "alphas", increasing=True)


# --- the sparsity grids (formerly flow.signal.parse_range) ----------------------------------
def test_sparsity_grids():
    vals = parse_grid("0:0.97:12", "sparsities")
    assert len(vals) == 12 and vals[0] == 0.0 and vals[-1] == 0.97
    steps = [b - a for a, b in zip(vals[:-1], vals[1:], strict=True)]
    assert max(steps) - min(steps) < 1e-9
    assert parse_grid("0:0.5:6", "s") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert parse_grid("0.5,0.9,0.95", "s") == [0.5, 0.9, 0.95]
    assert parse_grid(" 0.5 , .9 ", "s") == [0.5, 0.9]
    assert parse_grid("0.3", "s") == [0.3]
    assert parse_grid("0.2:0.2:1", "s") == [0.2]
    assert parse_grid("1e-1:2E-1:2", "s") == [0.1, 0.2]
    assert parse_grid("0.9:0.5:3", "s") == [0.9, 0.7, 0.5]  # decreasing is fine here


@pytest.mark.parametrize(
    "text",
    ["", "  ", "a", "0:1", "0:1:2:3", "0:1:0", "0:1:x", "0:1:2.5", "0:1:-3", "0.5,,0.9", "0.5,",
     "nan", "inf", "0:1:1", "0..5", "1e999"],
)
def test_bad_sparsity_grids(text):
    with pytest.raises(ValueError) as err:
        parse_grid(text, "sparsities")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("sparsities: ")


# --- the alphas of a path (formerly landscape.paths.parse_alphas) ---------------------------
def test_alpha_grids():
    grid = alphas("-0.2:1.2:29")
    assert len(grid) == 29
    assert grid[0] == -0.2 and grid[-1] == 1.2
    assert 0.0 in grid and 1.0 in grid and 0.5 in grid
    assert all(b > a for a, b in zip(grid, grid[1:], strict=False))
    assert all(math.copysign(1.0, v) == 1.0 for v in grid if v == 0.0)  # no -0.0
    assert alphas("0:1:5") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert alphas("0, 0.5,1") == [0.0, 0.5, 1.0]
    assert alphas("0.3:0.3:1") == [0.3]


@pytest.mark.parametrize(
    "text", ["", "  ", "1:0:5", "0.5:0.5:3", "0:1:1", "0:1:0", "0:1:x", "0:1", "0:1:2:3", "a,b",
             "0:inf:3"]
)
def test_bad_alpha_grids(text):
    with pytest.raises(ValueError) as err:
        alphas(text)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("alphas: ")


# --- properties -----------------------------------------------------------------------------
decimal = st.integers(-10**6, 10**6).map(lambda m: Fraction(m, 10**4))


@settings(max_examples=200, deadline=None)
@given(decimal, decimal, st.integers(2, 60))
def test_range_is_the_exact_grid_to_12_decimals(start, stop, n):
    """Every value is start + (stop - start) i / (n - 1), computed exactly, within 1e-12."""
    text = f"{float(start)!r}:{float(stop)!r}:{n}"
    got = parse_grid(text, "grid")
    assert len(got) == n
    assert got[0] == float(start) and got[-1] == float(stop)
    for i, v in enumerate(got):
        exact = start + (stop - start) * Fraction(i, n - 1)
        assert abs(Fraction(v) - exact) <= Fraction(1, 10**12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=8))
def test_list_returns_the_numbers_as_written(values):
    text = ",".join(repr(v) for v in values)
    assert parse_grid(text, "grid") == [v + 0.0 for v in values]


def test_imports_only_the_standard_library_and_errors():
    tree = ast.parse(Path(sparseflow.grids.__file__).read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
            for a in n.names}
    mods |= {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"__future__", "math", "re", "sparseflow.errors"}
    assert mods <= allowed, mods - allowed
