"""kth_largest, topk_mask and topk_indices: exact against a sort, sampled path and fallback."""

from __future__ import annotations

import pytest
import torch

from sparseflow.sparsity import kth_largest, topk_indices, topk_mask
from sparseflow.sparsity.topk import SAMPLE_FROM


def _reference_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    # stable sort by descending score: ties keep flat order, so the lower index wins
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[order] = True
    return out


def _cases():
    g = torch.Generator().manual_seed(0)
    n = 3 * SAMPLE_FROM + 17
    yield "normal", torch.randn(n, generator=g)
    yield "few_values", torch.randint(0, 5, (n,), generator=g).float()  # massive ties
    ramp = torch.arange(n, dtype=torch.float32)
    yield "ascending", ramp
    yield "descending", ramp.flip(0)
    inf = torch.randn(n, generator=g)
    inf[torch.rand(n, generator=g) < 0.9] = float("-inf")  # keep_top's ineligible positions
    yield "mostly_minus_inf", inf
    spiky = torch.zeros(n)
    spiky[:: n // 4096] = 1.0  # every sampled position is large: the sample misleads
    yield "sample_misleads", spiky


@pytest.mark.parametrize("case", [c for c, _ in _cases()])
@pytest.mark.parametrize("frac", [1e-4, 0.02, 0.3, 0.5, 0.7, 0.98, 0.9999])
def test_topk_mask_equals_a_stable_sort(case, frac):
    flat = dict(_cases())[case]
    k = max(1, int(frac * flat.numel()))
    want = _reference_mask(flat, k)
    got = topk_mask(flat, k)
    assert int(got.sum()) == k
    assert torch.equal(got, want)
    assert kth_largest(flat, k) == torch.sort(flat, descending=True).values[k - 1]
    assert torch.equal(topk_indices(flat, k), want.nonzero().squeeze(1))


def test_small_and_2d_inputs_keep_the_rule():
    scores = torch.tensor([[3.0, 1.0, 3.0], [2.0, 3.0, 0.0]])
    # three scores tie at 3 for two places: the two lowest flat indices win
    assert topk_mask(scores, 2).tolist() == [[True, False, True], [False, False, False]]
    assert topk_mask(scores, 4).tolist() == [[True, False, True], [True, True, False]]
    assert topk_mask(scores, 0).sum() == 0 and topk_mask(scores, 6).all()
    assert topk_indices(scores, 2).tolist() == [0, 2]
    assert topk_indices(scores, 0).numel() == 0
    assert topk_indices(scores, 6).tolist() == list(range(6))
    with pytest.raises(ValueError, match="outside"):
        topk_mask(scores, 7)
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([1.0, float("nan")]), 1)
