"""MaskSet: construction, exact counts, top-k ties, state_dict, updates, reporting."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.sparsity import MaskSet, check_masks, layer_counts, select_weights, topk_mask

shapes = st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 3), st.integers(1, 3)),
)


def _params(*shps):
    return {f"l{i}": nn.Parameter(torch.randn(s)) for i, s in enumerate(shps)}


@settings(max_examples=80, deadline=None)
@given(st.lists(shapes, min_size=1, max_size=4), st.data(), st.integers(0, 2**31 - 1))
def test_random_exact_counts(shps, data, seed):
    params = _params(*shps)
    counts = {n: data.draw(st.integers(0, p.numel())) for n, p in params.items()}
    ms = MaskSet.random(params, counts, torch.Generator().manual_seed(seed))
    assert ms.nnz() == counts
    for n, m in ms.masks.items():
        assert m.dtype == torch.bool and m.shape == params[n].shape
    ms.apply_()
    for n, p in params.items():
        assert int((p != 0).sum()) <= counts[n]
        assert bool((p[~ms[n]] == 0).all())


def test_random_is_uniform_over_positions():
    params = _params((2, 5))
    g = torch.Generator().manual_seed(0)
    freq = torch.zeros(2, 5)
    n = 3000
    for _ in range(n):
        freq += MaskSet.random(params, {"l0": 3}, g)["l0"]
    p = 0.3
    assert (freq / n - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)


def test_random_same_seed_same_masks():
    params = _params((30, 20), (5, 3, 3, 3))
    counts = layer_counts(params, 0.8)
    a = MaskSet.random(params, counts, torch.Generator().manual_seed(7))
    b = MaskSet.random(params, counts, torch.Generator().manual_seed(7))
    assert all(torch.equal(a[n], b[n]) for n in params)


def _reference_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    flat = scores.reshape(-1).tolist()
    order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))
    out = torch.zeros(len(flat), dtype=torch.bool)
    out[order[:k]] = True
    return out.view(scores.shape)


@settings(max_examples=150, deadline=None)
@given(shapes, st.integers(1, 4), st.data())
def test_topk_matches_reference_with_ties(shape, levels, data):
    n = math.prod(shape)
    values = data.draw(st.lists(st.integers(0, levels), min_size=n, max_size=n))
    scores = torch.tensor(values, dtype=torch.float32).view(shape)
    k = data.draw(st.integers(0, n))
    mask = topk_mask(scores, k)
    assert int(mask.sum()) == k
    assert torch.equal(mask, _reference_topk(scores, k))


def test_topk_masks_all_equal_take_lowest_indices():
    params = _params((6, 7))
    ms = MaskSet(params, {"l0": topk_mask(torch.ones(6, 7), 10)})
    flat = ms["l0"].reshape(-1)
    assert flat[:10].all() and not flat[10:].any()


def test_topk_masks_pick_top_scores():
    params = _params((50, 40))
    scores = torch.randn(50, 40)
    ms = MaskSet(params, {"l0": topk_mask(scores, 123)})
    kept = scores[ms["l0"]]
    dropped = scores[~ms["l0"]]
    assert kept.numel() == 123 and kept.min() > dropped.max()


def test_topk_masks_refuse_nan_and_bad_shape():
    params = _params((2, 2))
    with pytest.raises(ValueError, match="NaN"):
        MaskSet(params, {"l0": topk_mask(torch.tensor([[1.0, float("nan")], [0, 0]]), 1)})
    with pytest.raises(ValueError, match=r"mask for 'l0' has shape \(4,\)"):
        MaskSet(params, {"l0": topk_mask(torch.ones(4), 1)})


def test_dense_masks():
    params = _params((3, 4))
    ms = MaskSet.dense(params)
    assert ms.densities() == {"l0": 1.0} and ms.sparsity() == 0.0


def test_state_dict_round_trip_weights_only():
    params = _params((30, 20), (5, 3, 3, 3))
    ms = MaskSet.random(params, layer_counts(params, 0.7), torch.Generator().manual_seed(1))
    buf = io.BytesIO()
    torch.save(ms.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert all(t.dtype == torch.bool for t in state.values())
    other = MaskSet.dense(params)
    other.load_state_dict(state)
    assert all(torch.equal(other[n], ms[n]) for n in params)


def test_load_state_dict_errors():
    params = _params((3, 4))
    ms = MaskSet.dense(params)
    with pytest.raises(
        ValueError, match=r"'l0' has shape \(4, 3\) but the parameter has shape \(3, 4\)"
    ):
        ms.load_state_dict({"l0": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="missing"):
        ms.load_state_dict({})
    ms.load_state_dict({}, strict=False)
    with pytest.raises(ValueError, match="has shape"):
        MaskSet(params, {"l0": torch.ones(12, dtype=torch.bool)})


def test_shuffled_keeps_counts():
    params = _params((40, 30), (6, 4, 3, 3))
    ms = MaskSet.random(params, layer_counts(params, 0.9), torch.Generator().manual_seed(2))
    sh = ms.shuffled(torch.Generator().manual_seed(3))
    assert sh.nnz() == ms.nnz()
    assert sh.params["l0"] is params["l0"]
    assert not torch.equal(sh["l0"], ms["l0"])


def test_apply_and_mask_grads():
    params = _params((10, 10))
    mask = torch.rand(10, 10) < 0.3
    ms = MaskSet(params, {"l0": mask})
    params["l0"].grad = torch.randn(10, 10)
    before = params["l0"].detach().clone()
    ms.apply_().mask_grads_()
    assert torch.equal(params["l0"].detach(), before * mask)
    assert bool((params["l0"].grad[~mask] == 0).all())
    assert bool((params["l0"].grad[mask] != 0).all())


def test_apply_follows_dtype_change():
    model = nn.Sequential(nn.Linear(5, 5))
    ms = MaskSet(select_weights(model), {"0.weight": torch.eye(5, dtype=torch.bool)})
    model.double()
    ms.apply_()
    w = model[0].weight
    assert w.dtype == torch.float64 and int((w != 0).sum()) == 5


def test_set_mask_zeroes_newly_masked():
    params = _params((4, 4))
    ms = MaskSet.dense(params)
    new = torch.zeros(4, 4, dtype=torch.bool)
    new[0] = True
    ms.set_mask("l0", new)
    assert ms.nnz() == {"l0": 4}
    assert bool((params["l0"][1:] == 0).all())
    with pytest.raises(KeyError):
        ms.set_mask("nope", new)


def test_update_drop_grow():
    params = _params((4, 5))
    mask = torch.zeros(20, dtype=torch.bool)
    mask[:10] = True
    ms = MaskSet(params, {"l0": mask.view(4, 5)})
    ms.apply_()
    ms.update("l0", torch.tensor([0, 1, 2]), torch.tensor([2, 15, 19]))  # 2 dropped and regrown
    m = ms["l0"].reshape(-1)
    assert ms.nnz() == {"l0": 10}
    assert m[[2, 3, 15, 19]].all() and not m[[0, 1]].any()
    w = params["l0"].detach().reshape(-1)
    assert bool((w[[0, 1, 2, 15, 19]] == 0).all())
    with pytest.raises(ValueError, match="include inactive"):
        ms.update("l0", [0], [1])
    with pytest.raises(ValueError, match="include active"):
        ms.update("l0", [3], [4])
    with pytest.raises(ValueError, match="duplicates"):
        ms.update("l0", [3, 3], [0, 1])
    with pytest.raises(ValueError, match="flat indices"):
        ms.update("l0", [3], [20])


def test_reporting_and_global_sparsity():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 10), nn.Linear(10, 5))
    params = select_weights(model, dense_first=True)
    assert list(params) == ["2.weight", "3.weight"]
    counts = {"2.weight": 20, "3.weight": 5}
    ms = MaskSet.random(params, counts, torch.Generator().manual_seed(0))
    assert ms.nnz() == counts
    assert ms.densities() == {"2.weight": 0.1, "3.weight": 0.1}
    assert ms.sparsity() == pytest.approx(0.9)
    # global: 200 dense + 25 active of 200 + 50 -> 225 / 450 active
    assert ms.global_sparsity(model) == pytest.approx(0.5)
    assert "sparsity=0.9000" in repr(ms)
    assert len(ms) == 2 and "2.weight" in ms and list(ms) == ["2.weight", "3.weight"]


def test_name_mismatch_errors():
    params = _params((2, 2))
    with pytest.raises(ValueError, match="missing"):
        MaskSet(params, {})
    with pytest.raises(ValueError, match="outside"):
        MaskSet.random(params, {"l0": 5})


def test_check_masks_one_line_errors_and_bool_result():
    params = {"a": torch.zeros(3, 4), "b": torch.zeros(2)}
    good = {"a": torch.ones(3, 4), "b": torch.tensor([0.0, 2.0])}
    out = check_masks(good, params, "demo")
    assert list(out) == ["a", "b"] and all(m.dtype == torch.bool for m in out.values())
    assert out["b"].tolist() == [False, True]  # non-bool: mask != 0
    cases = [
        ({"a": torch.ones(4, 3), "b": torch.ones(2)}, {},
         "demo: mask for 'a' has shape (4, 3) but the parameter has shape (3, 4)"),
        ({"a": torch.ones(3, 4)}, {},
         "demo: mask names do not match the parameter names: missing ['b'], extra []"),
        ({"zz": torch.ones(2)}, {"subset": True}, "demo: mask 'zz' names no parameter"),
        ({"b": [1, 0]}, {"subset": True}, "demo: mask for 'b' is not a tensor but list"),
        ({"b": torch.ones(3)}, {"subset": True, "against": "weight"},
         "demo: mask for 'b' has shape (3,) but the weight has shape (2,)"),
    ]
    for masks, kw, msg in cases:
        with pytest.raises(ValueError) as e:
            check_masks(masks, params, "demo", **kw)
        assert str(e.value) == msg
    assert check_masks({"b": torch.ones(2)}, params, "demo", subset=True).keys() == {"b"}
    ms = MaskSet({"a": nn.Parameter(torch.zeros(3, 4))}, {"a": torch.ones(3, 4)})
    assert torch.equal(check_masks(ms, {"a": torch.zeros(3, 4)}, "demo")["a"], ms["a"])
