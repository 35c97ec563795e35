"""Signal propagation at init (docs/science.md section 7, claim 1, and section 12)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.analysis.tables import signal_table as format_table
from sparseflow.flow.signal import (
    heterogeneous_masks,
    output_std,
    signal_propagation,
)
from sparseflow.models import build_model
from sparseflow.plots import plot_signal
from sparseflow.sparsity import kept_count, select_weights, unit_fans


def _lenet5_params():
    torch.manual_seed(0)
    return select_weights(build_model("lenet5", (1, 28, 28), 10))


def _keep(numel: int, s: float) -> int:
    """round((1 - s) * numel), halves up (``kept_count``; exact rational check in
    test_sparsity_counts)."""
    return kept_count(1 - s, numel)


def _table(rows):
    return {(r["init"], r["sparsity"]): r["std_mean"] for r in rows}


# --- heterogeneous_masks ----------------------------------------------------------------


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.8, 0.9, 0.97, 1.0])
def test_heterogeneous_exact_per_layer_counts(s):
    params = _lenet5_params()
    masks = heterogeneous_masks(params, s, torch.Generator().manual_seed(1))
    assert list(masks) == list(params)
    for name, p in params.items():
        assert masks[name].dtype == torch.bool and masks[name].shape == p.shape
        assert int(masks[name].sum()) == _keep(p.numel(), s), name


@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 12),
    inp=st.integers(1, 12),
    k=st.sampled_from([(), (1,), (3, 3)]),
    s=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_heterogeneous_counts_any_shape(out, inp, k, s, seed):
    params = {"w": torch.empty(out, inp, *k)}
    mask = heterogeneous_masks(params, s, torch.Generator().manual_seed(seed))["w"]
    assert int(mask.sum()) == _keep(mask.numel(), s)


def test_heterogeneous_fan_in_grows_with_unit_index():
    params = {"big": torch.empty(300, 200), "conv": torch.empty(64, 16, 3, 3)}
    masks = heterogeneous_masks(params, 0.5, torch.Generator().manual_seed(2))
    for name, m in masks.items():
        f_in, _ = unit_fans(m)
        j = torch.arange(m.shape[0], dtype=torch.float64)
        corr = torch.corrcoef(torch.stack([j, f_in]))[0, 1].item()
        assert corr > 0.5, (name, corr)
        # and strongly so: the top tenth of units has several times the fan-in of the bottom
        tenth = m.shape[0] // 10
        assert f_in[-tenth:].mean() > 3 * f_in[:tenth].mean()


@pytest.mark.parametrize("s", [0.5, 0.8, 0.9])
def test_heterogeneous_dead_unit_fraction_matches_theory(s):
    # units with no input: fraction r with 1 - r + r ln r = 1 - s (docstring)
    lo, hi = 1e-12, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - mid + mid * math.log(mid) > 1 - s else (lo, mid)
    mask = heterogeneous_masks({"w": torch.empty(2000, 300)}, s, torch.Generator())["w"]
    dead = (unit_fans(mask)[0] == 0).double().mean().item()
    assert dead == pytest.approx(lo, abs=0.01)


def test_heterogeneous_deterministic_and_seed_dependent():
    params = _lenet5_params()
    a = heterogeneous_masks(params, 0.8, torch.Generator().manual_seed(3))
    b = heterogeneous_masks(params, 0.8, torch.Generator().manual_seed(3))
    c = heterogeneous_masks(params, 0.8, torch.Generator().manual_seed(4))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_heterogeneous_global_scope():
    params = {"small": torch.empty(4, 50), "large": torch.empty(100, 50)}
    total = sum(p.numel() for p in params.values())
    masks = heterogeneous_masks(params, 0.5, torch.Generator().manual_seed(5), scope="global")
    assert sum(int(m.sum()) for m in masks.values()) == _keep(total, 0.5)
    # one threshold for all: scores of the 4-unit layer are at most 4, far below the
    # threshold set by the 100-unit layer, so it is pruned much harder
    dens = {n: m.double().mean().item() for n, m in masks.items()}
    assert dens["small"] < 0.1 < 0.4 < dens["large"]


def test_heterogeneous_bad_arguments():
    params = {"w": torch.empty(3, 3)}
    with pytest.raises(ValueError, match="scope"):
        heterogeneous_masks(params, 0.5, None, scope="net")
    with pytest.raises(ValueError, match="sparsity"):
        heterogeneous_masks(params, 1.5, None)
    with pytest.raises(ValueError, match="out, in"):
        heterogeneous_masks({"b": torch.empty(3)}, 0.5, None)


# --- output_std ---------------------------------------------------------------------------


def test_output_std_of_linear_map_is_weight_norm():
    # y = w^T x, x ~ N(0, I): Var(y) = ||w||^2; SE of the sample std ~ sigma / sqrt(2 n)
    w = torch.linspace(-1.0, 2.0, 40)
    lin = nn.Linear(40, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w.view(1, -1))
    n = 100_000
    got = output_std(lin, (40,), batch=n, generator=torch.Generator().manual_seed(0))
    assert got == pytest.approx(w.norm().item(), rel=5 / math.sqrt(2 * n))


def test_output_std_several_outputs_and_relu_last():
    # rows w_k, zero bias: every entry has mean 0, so sigma^2 = mean_k ||w_k||^2
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 2.0]])
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    g = torch.Generator().manual_seed(1)
    got = output_std(lin, (3,), batch=200_000, generator=g)
    assert got == pytest.approx(math.sqrt((1 + 8) / 2), rel=0.01)
    # relu of z ~ N(0, s^2): mean s / sqrt(2 pi), second moment s^2 / 2
    one = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        one.weight.copy_(w[1:])
    sigma = math.sqrt(8.0)
    want = sigma * math.sqrt(0.5 - 1 / (2 * math.pi))
    g = torch.Generator().manual_seed(2)
    got = output_std(one, (3,), batch=200_000, generator=g, relu_last=True)
    assert got == pytest.approx(want, rel=0.01)


def test_output_std_eval_mode_no_grad_and_restores_mode():
    lin = nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    model = nn.Sequential(nn.Dropout(0.5), lin)  # dropout would inflate the std in train mode
    model.train()
    got = output_std(model, (10,), batch=50_000, generator=torch.Generator().manual_seed(3))
    assert got == pytest.approx(math.sqrt(10), rel=0.03)
    assert model.training and lin.weight.grad is None
    model.eval()
    output_std(model, (10,), batch=10)
    assert not model.training
    with pytest.raises(ValueError, match="batch"):
        output_std(model, (10,), batch=0)


def test_output_std_same_generator_same_value():
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 28, 28), 10)
    a = output_std(model, (1, 28, 28), batch=32, generator=torch.Generator().manual_seed(9))
    b = output_std(model, (1, 28, 28), batch=32, generator=torch.Generator().manual_seed(9))
    assert a == b > 0


# --- claim 1 at small scale -------------------------------------------------------------

LEVELS = [0.0, 0.8, 0.9]


@pytest.fixture(scope="module")
def lenet5_heterogeneous():
    rows = signal_propagation(
        "lenet5", LEVELS, ("dense", "sparse"), masks="heterogeneous", repeats=6, batch=200, seed=0
    )
    return _table(rows)


def test_claim1_dense_init_signal_vanishes(lenet5_heterogeneous):
    t = lenet5_heterogeneous
    # measured (seed 0): ratio ~3e-3; seeds 0..45 all < 5e-3
    assert t["dense", 0.9] / t["dense", 0.0] < 0.1
    assert t["dense", 0.0] > t["dense", 0.8] > t["dense", 0.9]


def test_claim1_sparse_init_keeps_signal_far_above_dense(lenet5_heterogeneous):
    t = lenet5_heterogeneous
    keep_sparse = t["sparse", 0.8] / t["sparse", 0.0]
    keep_dense = t["dense", 0.8] / t["dense", 0.0]
    # measured (seed 0): sparse keeps ~0.23 of its signal at 0.8, dense ~0.02, and
    # sparse(0.8) / dense(0.9) ~ 1e4 (over seeds 0..45: keep_sparse 0.12-0.37,
    # keep_sparse / keep_dense >= 4.5, sparse(0.8) / dense(0.9) >= 5e3)
    assert t["sparse", 0.8] > 1000 * t["dense", 0.9]
    assert keep_sparse > 3 * keep_dense
    assert keep_sparse > 0.05


@pytest.mark.xfail(
    reason="paper's literal reading (sparse init ~flat to s~0.8) does not hold on these "
    "heterogeneous masks: 44% of units per layer have no input at s=0.8 and the fan-in "
    "init cannot see dead inputs; measured keep ratio ~0.23, not >= 1/3",
    strict=False,
)
def test_claim1_sparse_init_within_factor_3_on_heterogeneous_masks(lenet5_heterogeneous):
    t = lenet5_heterogeneous
    assert t["sparse", 0.8] > t["sparse", 0.0] / 3


def test_claim1_sparse_init_within_factor_3_when_no_unit_dies():
    # uniformly random masks (per layer, uniform distribution): every unit keeps inputs,
    # so Var = 2 / f_j preserves the second moment layer by layer (measured ~0.7 at 0.8)
    rows = signal_propagation(
        "lenet5", LEVELS, ("dense", "sparse"), masks="uniform", repeats=6, batch=200, seed=0
    )
    t = _table(rows)
    for s in (0.8, 0.9):
        assert t["sparse", 0.0] / 3 < t["sparse", s] < 3 * t["sparse", 0.0]
        assert t["dense", s] < t["dense", 0.0] / 10


# --- signal_propagation mechanics -------------------------------------------------------


def test_signal_propagation_rows_and_determinism():
    kw = dict(input_shape=(20,), masks="uniform", repeats=2, batch=64, seed=7)
    rows = signal_propagation("mlp", [0.0, 0.5], ("dense", "liu", "sparse"), **kw)
    assert [(r["init"], r["sparsity"]) for r in rows] == [
        (i, s) for i in ("dense", "liu", "sparse") for s in (0.0, 0.5)
    ]
    for r in rows:
        assert set(r) == {"init", "sparsity", "std_mean", "std_min", "std_max", "repeats",
                          "stds"}
        assert r["std_min"] <= r["std_mean"] <= r["std_max"] and r["repeats"] == 2
        assert len(r["stds"]) == 2 and min(r["stds"]) == r["std_min"]
        assert sum(r["stds"]) / 2 == pytest.approx(r["std_mean"])
    t = _table(rows)
    # same seed: dense and liu share weights, and liu is the identity at density 1
    assert t["dense", 0.0] == t["liu", 0.0]
    assert t["liu", 0.5] > t["dense", 0.5]
    again = signal_propagation("mlp", [0.0, 0.5], ("dense", "liu", "sparse"), **kw)
    assert again == rows


def test_signal_propagation_options():
    kw = dict(input_shape=(1, 28, 28), repeats=1, batch=16)
    he = _table(signal_propagation("lenet5", [0.0], ("dense", "sparse"), base_init="he", **kw))
    assert he["dense", 0.0] > 0.1  # He base keeps an O(1) signal
    # biases: PyTorch's default biases put a floor under the dense init's output std
    with_bias = signal_propagation("lenet5", [0.9], ("dense",), zero_bias=False, **kw)
    without = signal_propagation("lenet5", [0.9], ("dense",), **kw)
    assert with_bias[0]["std_mean"] > 10 * without[0]["std_mean"]
    no_relu = signal_propagation("lenet5", [0.0], ("sparse",), relu_last=False, **kw)
    relu = signal_propagation("lenet5", [0.0], ("sparse",), **kw)
    assert no_relu[0]["std_mean"] > relu[0]["std_mean"]
    erk = signal_propagation(
        "lenet5", [0.5], ("sparse",), masks="uniform", distribution="erk", **kw
    )
    assert erk[0]["std_mean"] > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(inits=("he",)), "inits"),
        (dict(masks="magnitude"), "masks"),
        (dict(scope="net"), "scope"),
        (dict(repeats=0), "repeats"),
        (dict(base_init="xavier"), "base_init"),
        (dict(sparsities=[1.0]), "sparsity"),
    ],
)
def test_signal_propagation_bad_arguments(kwargs, match):
    args = dict(sparsities=[0.5], input_shape=(8,), repeats=1, batch=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        signal_propagation("mlp", **args)


# --- table, plot -------------------------------------------------------------------------


def _rows():
    return [
        {"init": i, "sparsity": s, "std_mean": m, "std_min": m / 2, "std_max": m * 2, "repeats": 3}
        for i, base in (("dense", 0.1), ("sparse", 1.0))
        for s, m in ((0.0, base), (0.5, base / 10), (0.9, base / 100))
    ]


def test_format_table():
    text = format_table(_rows())
    lines = text.splitlines()
    assert lines[0].split() == ["sparsity", "dense", "sparse"]
    assert len(lines) == 4
    assert lines[3].split() == ["0.9000", "1.000e-03", "1.000e-02"]
    partial = format_table(_rows()[:4])
    assert partial.splitlines()[2].split()[-1] == "-"


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_signal_writes_file(tmp_path, suffix):
    pytest.importorskip("matplotlib")
    rows = _rows()
    rows[0] = {**rows[0], "std_min": 0.0}  # a zero on the log axis must not break it
    path = tmp_path / "sub" / f"signal{suffix}"
    plot_signal(rows, path)
    data = path.read_bytes()
    assert len(data) > 1000
    if suffix == ".png":
        assert data.startswith(b"\x89PNG")
    else:
        assert b"<svg" in data[:2000]


def test_plot_signal_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match="png"):
        plot_signal(_rows(), tmp_path / "signal.jpg")
