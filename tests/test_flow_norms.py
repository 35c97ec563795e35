"""Gradient norms and EGF against hand computations; measurement never changes training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparseflow.config import load_config
from sparseflow.flow.norms import gradient_flow, norms_from_gradients
from sparseflow.store.database import Store
from sparseflow.training.run import execute


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    masks = {"0.weight": torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]).bool(),
             "2.weight": torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]).bool()}
    with torch.no_grad():
        for n, m in masks.items():
            dict(model.named_parameters())[n].mul_(m)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 1, 0, 1])
    return model, masks, x, y


def _hand_grads(model, x, y):
    """Backprop by hand in numpy for Linear-ReLU-Linear with mean cross-entropy."""
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    xn = x.numpy().astype(np.float64)
    h_pre = xn @ w1.T + b1
    h = np.maximum(h_pre, 0)
    z = h @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = p.copy()
    dz[np.arange(len(y)), y.numpy()] -= 1
    dz /= len(y)
    gw2, gb2 = dz.T @ h, dz.sum(0)
    dh = dz @ w2 * (h_pre > 0)
    gw1, gb1 = dh.T @ xn, dh.sum(0)
    return {"0.weight": gw1, "0.bias": gb1, "2.weight": gw2, "2.bias": gb2}


def test_norms_and_egf_match_hand_computation():
    model, masks, x, y = _tiny()
    g = _hand_grads(model, x, y)
    m = {k: v.numpy() for k, v in masks.items()}
    gm = {k: g[k] * m[k] if k in m else g[k] for k in g}
    out = gradient_flow(model, masks, x, y)
    l1 = sum(np.abs(v).sum() for v in gm.values())
    l2 = np.sqrt(sum((v ** 2).sum() for v in gm.values()))
    assert out["grad_l1"] == pytest.approx(l1, rel=1e-5)
    assert out["grad_l2"] == pytest.approx(l2, rel=1e-5)
    assert out["grad_unmasked_l2"] == pytest.approx(
        np.sqrt(sum((v ** 2).sum() for v in g.values())), rel=1e-5)
    layers = ["0.weight", "2.weight"]
    assert out["egf_l1"] == pytest.approx(np.mean([np.abs(gm[k]).sum() for k in layers]),
                                          rel=1e-5)
    assert out["egf_l2"] == pytest.approx(np.mean([np.linalg.norm(gm[k]) for k in layers]),
                                          rel=1e-5)
    assert out["grad_l2/2.weight"] == pytest.approx(np.linalg.norm(gm["2.weight"]), rel=1e-5)
    pa = gradient_flow(model, masks, x, y, per_active=True)
    assert pa["egf_l1_per_active"] == pytest.approx(
        np.mean([np.abs(gm[k]).sum() / m[k].sum() for k in layers]), rel=1e-5)


def test_masked_coordinates_never_contribute():
    model, masks, x, y = _tiny()
    grads = {n: p.detach().clone().normal_() for n, p in model.named_parameters()}
    base = norms_from_gradients(grads, masks, ["0.weight", "2.weight"])
    for n, mk in masks.items():
        grads[n][~mk] += 100.0  # change only the masked coordinates' gradients
    again = norms_from_gradients(grads, masks, ["0.weight", "2.weight"])
    for k in ("grad_l1", "grad_l2", "egf_l1", "egf_l2", "grad_l2/0.weight"):
        assert again[k] == base[k], k
    assert again["grad_unmasked_l2"] > base["grad_unmasked_l2"]


def test_dense_egf1_is_weight_norm_over_layers():
    model, _, x, y = _tiny()
    out = gradient_flow(model, None, x, y)
    w1 = out["grad_l1/0.weight"] + out["grad_l1/2.weight"]
    assert out["egf_l1"] == pytest.approx(w1 / 2)
    assert out["grad_l1"] == out["grad_unmasked_l1"]


def test_measurement_leaves_bn_stats_and_grads_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_flow(model, None, torch.randn(8, 3), torch.randint(0, 2, (8,)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


SMALL = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32", "arch.batchnorm=true",
         "train.batch_size=32", "train.duration=3ep", "data.heldout=64", "method=rigl",
         "sparse.update_every=5", "flow.every=7", "flow.around_updates=1"]


def test_measuring_does_not_change_training(tmp_path):
    on = execute(load_config(None, SMALL), root=tmp_path / "on", progress=False)
    off = execute(load_config(None, SMALL + ["flow.enabled=false"]), root=tmp_path / "off",
                  progress=False)
    assert on["test_loss"] == off["test_loss"] and on["train_loss"] == off["train_loss"]
    assert "egf_l1_mean11" in on and "egf_l1_mean11" not in off
    with Store(tmp_path / "on" / "sparseflow.db") as st:
        steps = [s for s, _ in st.series(on["run_id"], "flow/grad_l2")]
        before = st.series(on["run_id"], "flow_update/before/grad_l2")
        delta = st.series(on["run_id"], "flow_update/delta/grad_l2")
        after = st.series(on["run_id"], "flow_update/after/grad_l2")
    assert steps[0] == 0 and 7 in steps and 14 in steps and steps[-1] == on["steps"]
    early = [s for s in (1, 2, 5, 10, 20, 50, 100) if s <= on["steps"]]  # flow.early=2000
    assert set(early) <= set(steps) and 3 not in steps and 4 not in steps
    assert len(before) == len(after) == len(delta) == on["mask_updates"] > 0
    third = execute(load_config(None, SMALL[:-1] + ["flow.around_updates=3"]),
                    root=tmp_path / "third", progress=False)
    with Store(tmp_path / "third" / "sparseflow.db") as st:
        measured = [s for s, _ in st.series(third["run_id"], "flow_update/delta/grad_l2")]
    update_steps = [5 * (i + 1) for i in range(on["mask_updates"])]
    assert measured == update_steps[::3]  # the 1st, 4th, 7th ... update
    for (_, b), (_, a), (_, d) in zip(before, after, delta, strict=True):
        assert d == pytest.approx(a - b)


def test_log_spaced_early_steps():
    from sparseflow.training.flow_callback import log_spaced_steps

    assert log_spaced_steps(0) == []
    assert log_spaced_steps(2000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    assert log_spaced_steps(60) == [1, 2, 5, 10, 20, 50]


def test_sparse_init_gradient_norm_far_above_dense_init_lenet5():
    """Evci et al. 2022: at init, LeNet5 at 95% sparsity has a vanishing gradient with the dense
    init and a healthy one with the sparsity-aware init (papers: about 25x)."""
    from sparseflow.data import load_dataset
    from sparseflow.models import build_model
    from sparseflow.sparsity import MaskSet, initialize_, layer_counts, select_weights

    x, y = load_dataset("fashion_mnist").heldout[0]
    ratios = []
    for seed in range(3):
        norms = {}
        for init in ("dense", "sparse"):
            torch.manual_seed(seed)
            model = build_model("lenet5", (1, 28, 28), 10)
            params = select_weights(model)
            counts = layer_counts({n: tuple(p.shape) for n, p in params.items()}, 0.95, "uniform")
            masks = MaskSet.random(params, counts, torch.Generator().manual_seed(seed))
            opts = {"generator": torch.Generator().manual_seed(seed)} if init == "sparse" else {}
            initialize_(masks, init, **opts)
            norms[init] = gradient_flow(model, masks.masks, x, y)["grad_l2"]
        ratios.append(norms["sparse"] / norms["dense"])
    assert float(np.median(ratios)) > 10, ratios
