"""SRigL (Lasby et al. 2023): constant fan-in after every update, the growth by |dL/dW| per
unit, neuron ablation by the salient-weight rule (by hand), and the ITOP rate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparseflow.config import load_config
from sparseflow.methods import SRigL, sparsify
from sparseflow.methods.srigl import salient_per_unit
from sparseflow.training.run import execute


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 4))


def _train(model: nn.Module, opt: torch.optim.Optimizer, s: SRigL, steps: int):
    g = torch.Generator().manual_seed(5)
    outs = []
    for _ in range(steps):
        x = torch.randn(10, 12, generator=g)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        outs.append(s.step())
        for name, m in s.masks.masks.items():  # masked weights stay exactly zero
            assert torch.all(s.params[name][~m] == 0)
    return outs


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_every_unit_keeps_the_same_fan_in_without_ablation(opt_name: str) -> None:
    model = _mlp()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-2))
    s = SRigL(model, opt, sparsity=0.75, t_end=60, update_every=3, ablation=0.0,
              distribution="uniform")
    fans = {n: int(m.sum()) // m.shape[0] for n, m in s.masks.masks.items()}
    assert fans == {"0.weight": 3, "2.weight": 4, "4.weight": 2}  # 25% of 12, 16, 8
    outs = _train(model, opt, s, 30)
    assert sum(o is not None for o in outs) == 10
    assert any(o["churn"] > 0 for o in outs if o)
    for n, m in s.masks.masks.items():
        assert m.sum(dim=1).tolist() == [fans[n]] * m.shape[0]


def test_salient_weights_are_the_union_of_kept_and_grown() -> None:
    w = torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.05, 0.0], [0.5, 0.4, 0.0]])
    g = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    # kept: the 3 largest |w| (0.9, 0.5, 0.4); grown: the largest |g| (row 1, col 2)
    assert salient_per_unit(w, g, 3, 1).tolist() == [1, 1, 2]
    assert salient_per_unit(w, g, 3, 0).tolist() == [1, 0, 2]


def test_a_unit_without_salient_weights_is_ablated_and_its_budget_shared() -> None:
    """Unit 0 of the first layer has tiny weights and no gradient: fewer than
    ceil(0.3 * K) salient weights, so it loses every input and the other units' fan-in
    becomes floor(budget / (units - 1)); the classifier is never ablated."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay as set
    grads = {"0.weight": torch.ones(4, 8), "2.weight": torch.ones(2, 4)}
    grads["0.weight"][0] = 0.0
    s = SRigL(model, opt, sparsity=0.5, t_end=10, update_every=1, drop_fraction=0.25,
              drop_schedule="constant", ablation=0.3, distribution="uniform",
              grad_fn=lambda: grads)
    with torch.no_grad():
        w = model[0].weight
        w.copy_(torch.where(s.masks["0.weight"], 1.0 + torch.rand(4, 8), torch.zeros(4, 8)))
        w[0] *= 1e-3
    # K = 4 per unit, budget 16; salient: n_keep = 12 largest |w| (the 12 active weights of
    # units 1-3) and n_drop = 4 largest |g| (ties: the lowest indices, row 1, columns 0-3),
    # so unit 0 has none and unit 1 its 4 active plus those of columns 0-3 not among them
    row1 = 4 + int((~s.masks["0.weight"][1, :4]).sum())
    assert salient_per_unit(w, grads["0.weight"], 12, 4).tolist() == [0, row1, 4, 4]
    x = torch.randn(3, 8)
    model(x).sum().backward()
    opt.step()
    out = s.step()
    assert out is not None and out["ablated_units"] == 1.0
    fan = s.masks["0.weight"].sum(dim=1).tolist()
    assert fan == [0, 5, 5, 5]  # floor(16 / 3) = 5, so the layer holds 15 of its 16
    assert s.masks["2.weight"].sum(dim=1).tolist() == [2, 2]  # the classifier keeps its units
    # the grown inputs of units 1-3 are the top |g| among their inactive ones: all equal, so
    # the lowest column indices; grown weights start at zero
    assert torch.all(model[0].weight[0] == 0)


def test_srigl_refuses_other_patterns() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError,
                       match="sparsify\\('srigl'\\): pattern: SRigL keeps a constant fan-in"):
        sparsify("srigl", model, opt, sparsity=0.5, t_end=10, pattern="2:4")


def test_itop_rate_counts_every_weight_ever_active() -> None:
    """R_s = |ever active| / numel: 1 - sparsity before any update, then the union of the
    masks seen (checked against the union kept by hand)."""
    model = _mlp(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    s = SRigL(model, opt, sparsity=0.75, t_end=60, update_every=2, ablation=0.0,
              distribution="uniform")
    total = sum(m.numel() for m in s.masks.masks.values())
    assert s.summary()["itop_rate"] == pytest.approx(
        sum(int(m.sum()) for m in s.masks.masks.values()) / total, abs=1e-6)
    seen = {n: m.clone() for n, m in s.masks.masks.items()}
    g = torch.Generator().manual_seed(2)
    for _ in range(12):
        model(torch.randn(4, 12, generator=g)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        s.step()
        for n, m in s.masks.masks.items():
            seen[n] |= m
    want = sum(int(m.sum()) for m in seen.values()) / total
    assert want > 0.25 + 0.05  # the updates explored new weights
    assert s.summary()["itop_rate"] == pytest.approx(want, abs=1e-6)


def test_srigl_run_from_the_config(root) -> None:
    cfg = load_config(None, ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32",
                             "train.batch_size=32", "train.duration=2ep",
                             "sparse.update_every=4", "sparsity=0.9", "method=srigl",
                             "distribution=uniform"])
    s = execute(cfg, root=root, progress=False)
    assert s["status"] == "finished" and s["mask_updates"] > 0
    assert 0.1 < s["itop_rate"] <= 1.0
    from sparseflow.store.checkpoint import load_checkpoint

    masks = load_checkpoint(s["checkpoint"])["callbacks"]["sparsifier"]["masks"]
    for name, m in masks.items():
        per = m.reshape(m.shape[0], -1).sum(dim=1)
        live = per[per > 0]
        assert bool((live == live[0]).all()), name
        assert int(live[0]) == max(1, math.floor(0.1 * m[0].numel() + 0.5)) or len(live) < len(per)
