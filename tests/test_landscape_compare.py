"""Tests of sparseflow.landscape.compare and .metrics (solution comparison: lottery-ticket
analyses)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.analysis.tables import comparison_table
from sparseflow.data import load_dataset
from sparseflow.landscape.compare import Comparison, compare_models
from sparseflow.landscape.metrics import (
    accuracy,
    cosine_distance,
    disagreement,
    ensemble_accuracy,
    flat_params,
    jaccard,
    kl_divergence,
    l2_distance,
    mds_2d,
    pairwise,
    predict_proba,
    symmetric_kl,
)
from sparseflow.plots import plot_mds
from sparseflow.sparsity import MaskSet


def mlp(width: int = 16, seed: int = 0, d_in: int = 20, classes: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, classes),
    )


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", heldout=(), n_train=512, n_test=256)


@pytest.fixture(scope="module")
def trained(data):
    net = mlp(32, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, len(data.x_train), (64,), generator=gen)
        loss = nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def permuted(net: nn.Sequential, seed: int = 0) -> nn.Sequential:
    """The same function with both hidden layers' units permuted."""
    gen = torch.Generator().manual_seed(seed)
    l1, l2, l3 = net[0], net[2], net[4]
    p1 = torch.randperm(l1.out_features, generator=gen)
    p2 = torch.randperm(l2.out_features, generator=gen)
    assert not torch.equal(p1, torch.arange(len(p1)))
    out = copy.deepcopy(net)
    with torch.no_grad():
        out[0].weight.copy_(l1.weight[p1])
        out[0].bias.copy_(l1.bias[p1])
        out[2].weight.copy_(l2.weight[p2][:, p1])
        out[2].bias.copy_(l2.bias[p2])
        out[4].weight.copy_(l3.weight[:, p2])
        out[4].bias.copy_(l3.bias)
    return out


def params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


# --- the key test: a permuted network is the same function at a different point ------------
def test_permutation_symmetry(trained, data):
    other = permuted(trained)
    x, y = data.x_test, data.y_test
    pa, pb = predict_proba(trained, x), predict_proba(other, x)
    acc = accuracy(pa, y)
    assert acc > 0.6  # it learnt something
    assert disagreement(pa, pb) == 0.0
    assert abs(kl_divergence(pa, pb)) < 1e-7
    assert abs(kl_divergence(pb, pa)) < 1e-7
    assert abs(symmetric_kl(pa, pb)) < 1e-7
    assert accuracy(pb, y) == acc
    assert ensemble_accuracy([pa, pb], y) == acc
    assert l2_distance(params(trained), params(other)) > 1.0
    assert cosine_distance(params(trained), params(other)) > 1e-2

    c = compare_models([trained, other], x, y, labels=["A", "A-perm"])
    assert c.disagreement[0, 1] == 0.0
    assert np.all(np.abs(c.kl) < 1e-7)
    assert c.ensembles == {(0, 1): acc}
    assert c.accuracy == [acc, acc]
    assert c.l2[0, 1] > 1.0 and c.cosine[0, 1] > 1e-2
    assert c.l2[0, 1] == pytest.approx(l2_distance(params(trained), params(other)), rel=1e-12)


# --- hand-computed values --------------------------------------------------------------------
def test_l2_and_cosine_by_hand():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert l2_distance(a, b) == pytest.approx(math.sqrt(2))
    assert cosine_distance(a, b) == pytest.approx(1.0)
    assert cosine_distance(a, -a) == pytest.approx(2.0)
    u, v = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([2.0, 4.0, 4.0])
    assert l2_distance(u, v) == pytest.approx(3.0)
    assert cosine_distance(u, v) == pytest.approx(0.0, abs=1e-15)
    # 60 degrees apart: 1 - cos = 1/2
    w = torch.tensor([0.5, math.sqrt(3) / 2])
    assert cosine_distance(a, w) == pytest.approx(0.5)
    # state dicts: flattened over all entries (order-independent keys)
    sa = {"w": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([2.0])}
    sb = {"b": torch.tensor([0.0]), "w": torch.tensor([[1.0, 2.0]])}
    assert l2_distance(sa, sb) == pytest.approx(math.sqrt(8))
    assert cosine_distance(sa, sb) == pytest.approx(1 - 1 / (math.sqrt(5) * math.sqrt(5)))
    with pytest.raises(ValueError, match="zero vector"):
        cosine_distance(a, torch.zeros(2))


def test_state_dict_mismatch_errors():
    sa = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    with pytest.raises(ValueError, match="'b'") as e:
        l2_distance(sa, {"w": torch.zeros(2, 3)})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"'w'.*\(2, 3\) vs \(3, 2\)") as e:
        cosine_distance(sa, {"w": torch.zeros(3, 2), "b": torch.zeros(2)})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="'extra'"):
        l2_distance(sa, {**sa, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="shapes differ"):
        l2_distance(torch.zeros(3), torch.zeros(4))


def test_flat_params():
    state = {"a": torch.tensor([[1.0, 2.0]]), "n": torch.tensor(7), "b": torch.tensor([3.0])}
    v = flat_params(state)
    assert v.dtype == torch.float64
    assert v.tolist() == [1.0, 2.0, 3.0]  # the integer entry is skipped
    assert flat_params(state, ["b", "a"]).tolist() == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="'zz'"):
        flat_params(state, ["zz"])
    with pytest.raises(ValueError, match="not floating"):
        flat_params(state, ["n"])
    net = mlp(4)
    n_params = sum(p.numel() for p in net.parameters())
    assert flat_params(dict(net.named_parameters())).shape == (n_params,)


def test_kl_by_hand():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.75], [0.9, 0.1]], dtype=torch.float64)
    kl_pq = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 0.0) / 2
    kl_qp = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5) + 0.0) / 2
    assert kl_pq == pytest.approx(math.log(4 / 3) / 4)
    assert kl_divergence(p, q) == pytest.approx(kl_pq, rel=1e-12)
    assert kl_divergence(q, p) == pytest.approx(kl_qp, rel=1e-12)
    assert symmetric_kl(p, q) == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-12)
    assert kl_divergence(p, p) == 0.0
    # zeros: 0 log 0 = 0; a zero in p_b is clamped by eps
    one = torch.tensor([[1.0, 0.0]])
    half = torch.tensor([[0.5, 0.5]])
    assert kl_divergence(one, half) == pytest.approx(math.log(2))
    expected = 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-12)
    assert kl_divergence(half, one) == pytest.approx(expected, rel=1e-9)
    assert kl_divergence(half, one, eps=1e-6) == pytest.approx(
        0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-6), rel=1e-9
    )
    with pytest.raises(ValueError, match="shapes differ"):
        kl_divergence(p, q[:1])


def test_disagreement_and_accuracy_by_hand():
    pa = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.2, 0.3]])
    pb = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]])
    # argmax a = [0, 1, 2, 0], argmax b = [0, 0, 2, 2]: rows 1 and 3 differ
    assert disagreement(pa, pb) == 0.5
    assert disagreement(pa, pa) == 0.0
    assert disagreement(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 2, 2])) == 0.5
    y = torch.tensor([0, 1, 1, 0])
    assert accuracy(pa, y) == 0.75
    assert accuracy(pb, y) == 0.25
    with pytest.raises(ValueError):
        disagreement(pa, pb[:3])


def test_ensemble_mean_of_probabilities_flips_prediction():
    # two confident-ish members say class 0, one very confident member says class 1:
    # majority vote -> 0, mean of probabilities [0.3667, 0.6333] -> 1
    a = torch.tensor([[0.55, 0.45], [0.9, 0.1]])
    b = torch.tensor([[0.55, 0.45], [0.8, 0.2]])
    c = torch.tensor([[0.00, 1.00], [0.6, 0.4]])
    y = torch.tensor([1, 0])
    assert accuracy(a, y) == 0.5 and accuracy(b, y) == 0.5 and accuracy(c, y) == 1.0
    assert ensemble_accuracy([a, b, c], y) == 1.0
    assert ensemble_accuracy([a, b], y) == 0.5
    assert ensemble_accuracy([a], y) == accuracy(a, y)
    with pytest.raises(ValueError, match="probs\\[1\\]"):
        ensemble_accuracy([a, a[:1]], y)


def test_jaccard_pooled_and_per_layer_by_hand():
    a = {"l1": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "l2": torch.tensor([True, False]),
         "l3": torch.zeros(3, dtype=torch.bool)}
    b = {"l1": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "l2": torch.tensor([False, False]),
         "l3": torch.zeros(3, dtype=torch.bool)}
    pooled, per = jaccard(a, b)
    # l1: |A n B| = 1, |A u B| = 3; l2: 0 / 1; l3: empty union -> 1.0
    assert per == pytest.approx({"l1": 1 / 3, "l2": 0.0, "l3": 1.0})
    assert pooled == pytest.approx(1 / 4)  # (1 + 0 + 0) / (3 + 1 + 0), not the layer mean
    assert jaccard(a, a)[0] == 1.0
    empty = {"l": torch.zeros(2, dtype=torch.bool)}
    assert jaccard(empty, empty) == (1.0, {"l": 1.0})
    with pytest.raises(ValueError, match="'l2'"):
        jaccard(a, {"l1": b["l1"], "l3": b["l3"]})
    with pytest.raises(ValueError, match="'l1'"):
        jaccard(a, {**b, "l1": torch.ones(5, dtype=torch.bool)})


def test_jaccard_accepts_maskset():
    net = mlp(4)
    weights = {"0.weight": net[0].weight, "2.weight": net[2].weight}
    gen = torch.Generator().manual_seed(0)
    ms = MaskSet.random(weights, {"0.weight": 30, "2.weight": 5}, generator=gen)
    pooled, per = jaccard(ms, ms.masks)
    assert pooled == 1.0 and set(per) == {"0.weight", "2.weight"}


def test_pairwise_symmetric_zero_diagonal():
    calls = []

    def fn(a, b):
        calls.append((a, b))
        return abs(a - b)

    m = pairwise([1.0, 4.0, 6.0], fn)
    assert m.tolist() == [[0, 3, 5], [3, 0, 2], [5, 2, 0]]
    assert len(calls) == 3
    assert pairwise([], fn).shape == (0, 0)


# --- MDS --------------------------------------------------------------------------------------
def _dist(points: np.ndarray) -> np.ndarray:
    return np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))


def test_mds_recovers_planar_distances():
    pts = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [1.0, 1.0], [-2.0, 5.0]])
    d = _dist(pts)
    xy = mds_2d(d)
    assert xy.shape == (5, 2)
    np.testing.assert_allclose(_dist(xy), d, atol=1e-8, rtol=0)
    np.testing.assert_allclose(xy.mean(axis=0), 0.0, atol=1e-10)
    # deterministic, and the sign convention holds on each axis
    np.testing.assert_array_equal(mds_2d(d), xy)
    np.testing.assert_array_equal(mds_2d(d, seed=5), xy)
    for k in range(2):
        assert xy[np.argmax(np.abs(xy[:, k])), k] > 0
    # a rigid motion of the input points gives the same output
    rot = np.array([[0.6, -0.8], [0.8, 0.6]])
    np.testing.assert_allclose(mds_2d(_dist(pts @ rot.T + 7.0)), xy, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=1, max_size=8
    )
)
def test_mds_property_planar(points):
    pts = np.array(points, dtype=np.float64)
    d = _dist(pts)
    xy = mds_2d(d)
    assert xy.shape == (len(points), 2)
    np.testing.assert_allclose(_dist(xy), d, atol=1e-6, rtol=0)


def test_mds_edge_cases_and_errors():
    assert mds_2d(np.zeros((1, 1))).tolist() == [[0.0, 0.0]]
    two = mds_2d(np.array([[0.0, 2.0], [2.0, 0.0]]))
    # a tie in |coordinate|: the first index is made positive
    np.testing.assert_allclose(two, [[1.0, 0.0], [-1.0, 0.0]], atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        mds_2d(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        mds_2d(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        mds_2d(np.array([[0.0, -1.0], [-1.0, 0.0]]))


# --- predict_proba --------------------------------------------------------------------------
def test_predict_proba_batches_and_restores_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3))
    net.train()
    net[2].eval()  # a mixed state must come back as it was
    x = torch.randn(23, 5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    p = predict_proba(net, x, batch_size=7)
    assert p.shape == (23, 3) and p.dtype == torch.float64
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, atol=1e-12)
    assert torch.allclose(p, predict_proba(net, x, batch_size=1000), atol=1e-6)
    assert net.training and net[1].training and not net[2].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # no BatchNorm statistic moved
    net.eval()
    expected = torch.softmax(net(x).double(), dim=1)
    assert torch.allclose(p, expected, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        predict_proba(net, x, batch_size=0)


# --- compare_models ---------------------------------------------------------------------------
def _three(data):
    models = [mlp(8, seed=s) for s in range(3)]
    inits = [params(m) for m in models]
    gen = torch.Generator().manual_seed(3)
    for m in models:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return models, inits


def test_compare_models_three(data):
    models, inits = _three(data)
    x, y = data.x_test, data.y_test
    c = compare_models(models, x, y, inits=[inits[0], None, inits[2]], batch_size=100)
    assert isinstance(c, Comparison)
    assert c.labels == ["model0", "model1", "model2"]
    for m in (c.l2, c.cosine, c.disagreement, c.sym_kl):
        assert m.shape == (3, 3)
        np.testing.assert_array_equal(m, m.T)
        np.testing.assert_array_equal(np.diag(m), 0.0)
        assert np.all(m[~np.eye(3, dtype=bool)] > 0)
    assert np.all(np.diag(c.kl) == 0) and not np.allclose(c.kl, c.kl.T)
    np.testing.assert_allclose(c.sym_kl, (c.kl + c.kl.T) / 2)
    probs = [predict_proba(m, x) for m in models]
    assert c.kl[0, 2] == pytest.approx(kl_divergence(probs[0], probs[2]), rel=1e-12)
    assert c.accuracy == [accuracy(p, y) for p in probs]
    assert c.jaccard is None  # dense
    assert set(c.ensembles) == {(0, 1), (0, 2), (1, 2), (0, 1, 2)}
    assert c.ensembles[(0, 2)] == ensemble_accuracy([probs[0], probs[2]], y)
    assert c.l2_to_init[1] is None and c.cosine_to_init[1] is None
    assert c.l2_to_init[0] == pytest.approx(l2_distance(params(models[0]), inits[0]), rel=1e-12)
    assert c.cosine_to_init[2] == pytest.approx(
        cosine_distance(params(models[2]), inits[2]), rel=1e-12
    )
    assert c.mds.shape == (3, 2)
    np.testing.assert_allclose(_dist(c.mds), c.l2, atol=1e-8 * c.l2.max())  # 3 points: planar

    text = comparison_table(c)
    for word in ("disagreement", "L2 distance", "KL", "accuracy", "ensembles", "model2"):
        assert word in text
    assert "Jaccard" not in text


def test_compare_models_labels_masks_and_full_state_init(data):
    models, inits = _three(data)
    gen = torch.Generator().manual_seed(0)
    masks = []
    for m in models:
        w = {"0.weight": m[0].weight, "2.weight": m[2].weight}
        masks.append(MaskSet.random(w, {"0.weight": 40, "2.weight": 20}, generator=gen).masks)
    # a full state_dict (extra keys ignored) and a module are accepted as inits
    c = compare_models(
        models, data.x_test, data.y_test, labels=["a", "b", "c"], masks=masks,
        inits=[models[0].state_dict(), models[1], None],
    )
    assert c.labels == ["a", "b", "c"]
    assert c.jaccard is not None
    np.testing.assert_array_equal(c.jaccard, c.jaccard.T)
    np.testing.assert_array_equal(np.diag(c.jaccard), 1.0)
    assert c.jaccard[0, 1] == pytest.approx(jaccard(masks[0], masks[1])[0])
    assert c.l2_to_init[:2] == [0.0, 0.0]
    assert "Jaccard" in comparison_table(c)
    c2 = compare_models(models, data.x_test, data.y_test, masks=[masks[0], None, masks[2]])
    assert c2.jaccard is None


def test_compare_models_many_models_only_full_ensemble(data):
    models = [mlp(4, seed=s) for s in range(9)]
    c = compare_models(models, data.x_test[:50], data.y_test[:50])
    assert list(c.ensembles) == [tuple(range(9))]
    assert c.l2.shape == (9, 9) and c.mds.shape == (9, 2)


def test_compare_models_errors(data):
    x, y = data.x_test[:20], data.y_test[:20]
    with pytest.raises(ValueError, match="different architectures") as e:
        compare_models([mlp(8), mlp(8), mlp(9)], x, y)
    assert "\n" not in str(e.value) and "model 2" in str(e.value) and "'0.weight'" in str(e.value)
    renamed = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                            nn.Linear(8, 4, bias=False))
    with pytest.raises(ValueError, match="different architectures.*'4.bias'") as e:
        compare_models([mlp(8), renamed], x, y)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="labels"):
        compare_models([mlp(8), mlp(8)], x, y, labels=["only one"])
    with pytest.raises(ValueError, match="masks"):
        compare_models([mlp(8), mlp(8)], x, y, masks=[None])
    with pytest.raises(ValueError, match=r"inits\[0\].*'0.weight'"):
        compare_models([mlp(8)], x, y, inits=[{"4.bias": torch.zeros(4)}])


# --- plot ---------------------------------------------------------------------------------------
def test_plot_mds_writes_png_and_svg(tmp_path, data):
    pytest.importorskip("matplotlib")
    models, _ = _three(data)
    c = compare_models(models, data.x_test[:50], data.y_test[:50], labels=["x", "y", "z"])
    png = tmp_path / "sub" / "mds.png"
    plot_mds(c, png)
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "mds.svg"
    plot_mds(c, svg)
    assert b"<svg" in svg.read_bytes()
    with pytest.raises(ValueError, match="png or .svg"):
        plot_mds(c, tmp_path / "mds.jpg")
