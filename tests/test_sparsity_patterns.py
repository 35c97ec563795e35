"""Sparsity patterns (docs/science.md section 17): parsing, the matrix view of conv weights,
hand-checked masks for each pattern, and properties on random shapes and scores: exact counts
per group / block / row, best scores kept, ties to the lower index."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseflow.sparsity.patterns import (
    Pattern,
    achievable_count,
    from_matrix,
    matrix_view,
    parse_pattern,
    pattern_topk,
    pattern_violations,
    random_pattern_mask,
)


@pytest.mark.parametrize("text, want", [
    ("unstructured", Pattern()), ("2:4", Pattern("nm", 2, 4)), ("1:4", Pattern("nm", 1, 4)),
    ("4:8", Pattern("nm", 4, 8)), ("block:4x4", Pattern("block", block=4)),
    ("block:2", Pattern("block", block=2)), ("unit", Pattern("unit")),
    ("fan_in", Pattern("fan_in")), ("fan-in", Pattern("fan_in")), (" 2:4 ", Pattern("nm", 2, 4)),
])
def test_parse(text, want):
    assert parse_pattern(text) == want
    assert parse_pattern(str(want)) == want  # the canonical spelling reads back


@pytest.mark.parametrize("text, msg", [
    ("4:4", "1 <= N < M"), ("0:4", "1 <= N < M"), ("block:4x2", "square"),
    ("block:1", "at least 2"),
    ("block:x", "expected"), ("2-4", "expected unstructured, N:M"), ("", "expected"),
])
def test_parse_refuses(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_pattern(text)


def test_conv_matrix_view_runs_along_input_channels_and_inverts():
    w = torch.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # (out, in, kh, kw)
    mat = matrix_view(w)
    assert mat.shape == (2, 12)
    # first row: kernel position (0, 0) for in-channels 0, 1, 2, then position (0, 1), ...
    assert mat[0, :3].tolist() == [w[0, 0, 0, 0], w[0, 1, 0, 0], w[0, 2, 0, 0]]
    assert mat[0, 3:6].tolist() == [w[0, 0, 0, 1], w[0, 1, 0, 1], w[0, 2, 0, 1]]
    assert torch.equal(from_matrix(mat, w.shape), w)


def test_two_four_by_hand():
    s = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 0.0, 5.0, 5.0],
                      [1.0, 1.0, 1.0, 1.0, -1.0, -2.0, -3.0, -4.0]])
    mask = pattern_topk(s, 0, parse_pattern("2:4"))  # the count is N/M whatever is asked
    assert mask.int().tolist() == [[1, 0, 1, 0, 0, 0, 1, 1],
                                   [1, 1, 0, 0, 1, 1, 0, 0]]  # ties: the lower index


def test_block_unit_and_fan_in_by_hand():
    s = torch.tensor([[9.0, 9.0, 0.0, 0.0],
                      [9.0, 9.0, 0.0, 1.0],
                      [1.0, 1.0, 8.0, 8.0],
                      [0.0, 0.0, 8.0, 8.0]])
    blocks = pattern_topk(s, 8, parse_pattern("block:2x2"))  # two of four 2x2 blocks
    assert blocks.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    units = pattern_topk(s, 5, parse_pattern("unit"))  # 5 -> one row of 4 (1.25 rounds to 1)
    # row sums 18, 19, 18, 16: row 1 wins
    assert units.int().tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    ties = pattern_topk(s, 6, parse_pattern("unit"))  # 1.5 -> two rows: 19, then 18 of row 0
    assert ties.all(1).tolist() == [True, True, False, False]
    fan = pattern_topk(s, 8, parse_pattern("fan_in"))  # 2 per row
    assert fan.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert fan.sum(1).tolist() == [2, 2, 2, 2]


def test_achievable_counts_and_shapes_that_do_not_fit():
    assert achievable_count((8, 16), 10, parse_pattern("2:4")) == 64
    assert achievable_count((8, 16), 10, Pattern()) == 10
    assert achievable_count((8, 16), 10, parse_pattern("block:2")) == 12  # 2.5 blocks -> 3
    assert achievable_count((8, 16), 10, parse_pattern("unit")) == 16  # at least one row
    assert achievable_count((8, 16), 12, parse_pattern("fan_in")) == 16  # 1.5 -> 2 per row
    assert achievable_count((8, 16), 0, parse_pattern("fan_in")) == 0
    with pytest.raises(ValueError, match="fan-in 10, not a multiple of 4"):
        achievable_count((3, 10), 5, parse_pattern("2:4"))
    with pytest.raises(ValueError, match="not divisible into 4 x 4"):
        achievable_count((6, 8), 5, parse_pattern("block:4x4"))


SHAPES = st.sampled_from([(8, 16), (4, 8, 3, 3), (16, 4), (12, 24), (4, 4, 1, 1)])
PATTERNS = st.sampled_from(["unstructured", "2:4", "1:4", "block:2x2", "block:4x4", "unit",
                            "fan_in"])


@settings(max_examples=120, deadline=None)
@given(shape=SHAPES, text=PATTERNS, frac=st.floats(0.0, 1.0), seed=st.integers(0, 10**6))
def test_properties_on_random_scores(shape, text, frac, seed):
    pattern = parse_pattern(text)
    n = 1
    for d in shape:
        n *= d
    k = int(frac * n)
    try:
        want = achievable_count(shape, k, pattern)
    except ValueError:
        return  # the shape does not fit this pattern (checked by hand above)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(shape, generator=g)
    mask = pattern_topk(scores, k, pattern)
    assert mask.shape == scores.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == want
    assert pattern_violations(mask, pattern) == []
    # best scores the pattern allows: no allowed swap improves the kept sum
    mat, smat = matrix_view(mask), matrix_view(scores)
    if pattern.kind in ("nm", "fan_in"):  # within a group / row, kept >= dropped
        width = pattern.m if pattern.kind == "nm" else smat.shape[1]
        gm = mat.reshape(mat.shape[0], -1, width)
        gs = smat.reshape(smat.shape[0], -1, width)
        kept_min = torch.where(gm, gs, torch.inf).amin(-1)
        drop_max = torch.where(~gm, gs, -torch.inf).amax(-1)
        assert bool((kept_min >= drop_max).all())
    if pattern.kind == "unit" and 0 < want < n:
        rows = smat.sum(1)
        kept = mat.any(1)
        assert rows[kept].min() >= rows[~kept].max()
    # the random mask has the same count and pattern
    rnd = random_pattern_mask(shape, k, pattern, torch.Generator().manual_seed(seed))
    assert int(rnd.sum()) == want and pattern_violations(rnd, pattern) == []


def test_violations_are_named():
    two_four = parse_pattern("2:4")
    bad = torch.tensor([[True, True, True, False]])
    assert pattern_violations(bad, two_four) == ["1 groups of 4 without exactly 2 active"]
    assert pattern_violations(torch.tensor([[True, False], [True, True]]),
                              parse_pattern("unit")) == ["1 units partly active"]
    assert "fan-in differs" in pattern_violations(
        torch.tensor([[True, False], [True, True]]), parse_pattern("fan_in"))[0]


def test_random_masks_are_uniform_over_the_allowed_ones():
    # 1:4 on one group: each of the 4 positions equally often
    pattern = parse_pattern("1:4")
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts += random_pattern_mask((1, 4), 1, pattern, g)[0].double()
    assert ((counts - 1000).abs() < 120).all()  # ~3.5 standard deviations
    # every 2:4 choice of one group occurs
    seen = {tuple(random_pattern_mask((1, 4), 2, parse_pattern("2:4"), g)[0].tolist())
            for _ in range(300)}
    assert seen == {tuple(c) for c in (
        [i in pair for i in range(4)] for pair in itertools.combinations(range(4), 2))}
