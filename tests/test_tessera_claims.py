"""Tessera et al. 2021 claims 6 and 7 (docs/science.md section 7): the gradient-flow measures
over the same parameters, Kendall tau gaps with bootstrap intervals over runs, and the SC-SDC
effects (BatchNorm, Adam+L2 vs AdamW, activations) with bootstrap intervals over seeds, against
numbers computed independently here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from sparseflow.analysis import stats as stats_mod
from sparseflow.analysis.tables import FLOW_MEASURES, MEASURE_NAMES, PARAMETER_SETS, scsdc_table
from sparseflow.config import load_config, run_id
from sparseflow.flow.norms import gradient_flow
from sparseflow.studies import tessera2021 as t21
from sparseflow.studies.claims import FAILED, HELD, INCONCLUSIVE
from sparseflow.studies.setting import Setting
from sparseflow.training.flow_callback import evenly_spaced_steps
from sparseflow.training.run import execute


# -- the measures ---------------------------------------------------------------------------------
def _tiny(batchnorm: bool = False):
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4)] + ([nn.BatchNorm1d(4)] if batchnorm else []) + [
        nn.ReLU(), nn.Linear(4, 2)]
    model = nn.Sequential(*layers)
    last = f"{len(layers) - 1}.weight"
    masks = {"0.weight": torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]).bool(),
             last: torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]).bool()}
    with torch.no_grad():
        for n, m in masks.items():
            dict(model.named_parameters())[n].mul_(m)
    return model, masks, torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])


def _hand_grads(model, x, y):
    """Linear-ReLU-Linear, mean cross-entropy, backpropagated by hand in float64."""
    w1, b1 = (model[0].weight.detach().double().numpy(), model[0].bias.detach().double().numpy())
    w2, b2 = (model[2].weight.detach().double().numpy(), model[2].bias.detach().double().numpy())
    xn = x.double().numpy()
    pre = xn @ w1.T + b1
    h = np.maximum(pre, 0)
    z = h @ w2.T + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y.numpy()] -= 1
    dz = p / len(y)
    dh = dz @ w2 * (pre > 0)
    return {"0.weight": dh.T @ xn, "0.bias": dh.sum(0), "2.weight": dz.T @ h, "2.bias": dz.sum(0)}


def test_weight_norm_and_egf_over_all_tensors_match_hand_computation():
    model, masks, x, y = _tiny()
    g = _hand_grads(model, x, y)
    gm = {k: g[k] * masks[k].numpy() if k in masks else g[k] for k in g}
    out = gradient_flow(model, masks, x, y)
    weights = ["0.weight", "2.weight"]
    assert out["grad_w_l1"] == pytest.approx(sum(np.abs(gm[k]).sum() for k in weights), 1e-5)
    assert out["grad_w_l2"] == pytest.approx(
        np.sqrt(sum((gm[k] ** 2).sum() for k in weights)), rel=1e-5)
    assert out["egf_all_l1"] == pytest.approx(np.mean([np.abs(v).sum() for v in gm.values()]),
                                              rel=1e-5)
    assert out["egf_all_l2"] == pytest.approx(np.mean([np.linalg.norm(v) for v in gm.values()]),
                                              rel=1e-5)
    # the pairs over one set: ||g_w||_1 = L * EGF_1 over the L = 2 weights
    assert out["grad_w_l1"] == pytest.approx(2 * out["egf_l1"], rel=1e-6)
    # the historical ones are unchanged: ||g|| over everything, EGF over the weights
    assert out["grad_l1"] == pytest.approx(sum(np.abs(v).sum() for v in gm.values()), rel=1e-5)


def test_batchnorm_parameters_count_in_all_but_not_in_weights():
    model, masks, x, y = _tiny(batchnorm=True)
    names = [n for n, _ in model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(
        nn.functional.cross_entropy(model(x), y), list(model.parameters())), strict=True))
    gm = {k: (v * masks[k] if k in masks else v).double().numpy() for k, v in grads.items()}
    out = gradient_flow(model, masks, x, y)
    assert len(gm) == 6  # 2 weights, 2 biases, BN weight and bias
    assert out["egf_all_l1"] == pytest.approx(np.mean([np.abs(v).sum() for v in gm.values()]),
                                              rel=1e-5)
    assert out["grad_w_l2"] == pytest.approx(np.sqrt(sum(
        (gm[k] ** 2).sum() for k in masks)), rel=1e-5)


def test_the_summary_carries_every_measure_averaged_over_11_points(tmp_path):
    cfg = load_config(None, ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=16",
                             "train.batch_size=32", "train.duration=20it", "data.heldout=64",
                             "method=static", "sparsity=0.5", "flow.every=0"])
    s = execute(cfg, root=tmp_path, progress=False)
    assert all(s.get(m) is not None for m in FLOW_MEASURES)
    assert s["grad_w_l1_mean11"] == pytest.approx(3 * s["egf_l1_mean11"])  # L = 3 weights
    assert s["egf_all_l1_mean11"] < s["grad_l1_mean11"]


def test_measure_names_and_parameter_sets():
    assert set(MEASURE_NAMES) == set(FLOW_MEASURES)
    named = {n for g, e in PARAMETER_SETS.values() for n in (*g, *e)}
    assert named == set(MEASURE_NAMES.values())


# -- the preset -----------------------------------------------------------------------------------
def test_plan_holds_every_sweep_and_the_paper_points_are_epochs():
    for scale, runs in (("smoke", 20), ("cpu", 330)):
        cfgs = t21.plan(scale, Setting())
        assert len(cfgs) == len({run_id(c) for c in cfgs}) == runs
        assert all(c.flow.points == 11 for c in cfgs)
    cpu = t21.plan("cpu", Setting())
    adam_l2 = [c for c in cpu if c.optim.l2 > 0]
    adamw = [c for c in cpu if c.optim.name == "adamw"]
    assert adam_l2 and all(c.optim.name == "adam" and c.arch.batchnorm and c.arch.depth == 4
                           and c.optim.weight_decay == 0 for c in adam_l2)
    assert len(adamw) == len(adam_l2) and all(c.optim.weight_decay == t21.L2 and c.optim.l2 == 0
                                              for c in adamw)
    acts = {(c.arch.activation, c.optim.name, c.optim.lr) for c in cpu}
    assert {(a, o, t21.LR[o]) for a in ("relu", "prelu", "swish") for o in t21.LR} <= acts
    for key in ("optim.name", "optim.lr", "optim.l2", "optim.weight_decay", "arch.activation",
                "arch.batchnorm", "flow.points"):
        assert key in t21.VARIED
    # the paper's 500 epochs: the 11 points are the ends of epochs 0, 50, ..., 500
    assert t21.SCALES["paper"].duration == "500ep"
    per_epoch = 461
    assert evenly_spaced_steps(500 * per_epoch, 11) == [50 * i * per_epoch for i in range(11)]


# -- claim 6: Kendall tau gaps --------------------------------------------------------------------
def test_kendall_tau_b_is_scipys_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.integers(0, 3, 30)
    want = stats.kendalltau(x, y).statistic
    assert stats_mod.kendall_tau_b(x, y) == pytest.approx(want, abs=1e-12)


def _runs(n, strong, rng, strata=("depth=1", "depth=2")):
    acc = rng.uniform(0.5, 0.9, n)
    noise = (lambda: rng.normal(0, 0.02, n)) if strong else (lambda: rng.normal(0, 0.3, n))
    egf = acc + noise()
    g = acc + rng.normal(0, 0.3, n)
    return [{"group": "sparse", "stratum": strata[i % len(strata)], "test_accuracy": acc[i],
             "EGF_1": egf[i], "EGF_2": egf[i] * 2, "||g_w||_1": g[i], "||g_w||_2": g[i] * 3,
             "EGF_all_1": egf[i] + 1, "EGF_all_2": egf[i], "||g||_1": g[i], "||g||_2": g[i]}
            for i in range(n)]


def test_tau_gap_interval_excludes_zero_for_a_strong_effect_and_spans_it_for_none():
    rng = np.random.default_rng(0)
    runs = _runs(60, True, rng)
    acc = [r["test_accuracy"] for r in runs]
    a = [[r["EGF_1"] for r in runs]]
    b = [[r["||g_w||_1"] for r in runs], [r["||g_w||_2"] for r in runs]]
    gap, low, high = stats_mod.tau_gap(a, b, acc)
    want = abs(stats.kendalltau(a[0], acc).statistic) - max(
        abs(stats.kendalltau(m, acc).statistic) for m in b)
    assert gap == pytest.approx(want) and 0 < low < gap < high
    assert stats_mod.tau_gap(a, b, acc) == (gap, low, high)  # seeded: the same interval again
    none = _runs(60, False, np.random.default_rng(2))
    acc = [r["test_accuracy"] for r in none]
    _, low, high = stats_mod.tau_gap([[r["EGF_1"] for r in none]], [[r["||g_w||_1"] for r in none]],
                               acc)
    assert low < 0 < high


def test_correlation_claim_per_depth_pooled_and_both_parameter_sets():
    rng = np.random.default_rng(0)
    runs = _runs(60, True, rng)
    for r in runs:  # over all parameters: EGF unrelated to accuracy, the norm related
        r["EGF_all_1"] = r["EGF_all_2"] = rng.normal()
        r["||g||_1"] = r["test_accuracy"]
    runs.append({**runs[0], "group": "dense"})  # dense runs are left out
    claim, gaps = t21.correlation_claim(runs)
    assert claim.number == 6 and claim.verdict == HELD and claim.n == 60
    assert 0 < claim.ci_low < claim.effect < claim.ci_high
    by = {(g["parameters"], g["stratum"]): g for g in gaps}
    assert set(by) == {(p, s) for p in ("weights", "all") for s in ("pooled", "depth=1",
                                                                     "depth=2")}
    d1 = [r for r in runs[:60] if r["stratum"] == "depth=1"]
    assert by[("weights", "depth=1")]["n"] == 30
    assert by[("weights", "depth=1")]["EGF_1"] == pytest.approx(abs(stats.kendalltau(
        [r["EGF_1"] for r in d1], [r["test_accuracy"] for r in d1]).statistic))
    assert by[("all", "pooled")]["verdict"] == FAILED  # the gap is <= 0 there
    assert "depth=1 n=30" in claim.measured and "Over the weights (the paper's" in claim.measured
    assert "over all parameters it would be 'did not hold'" in claim.measured


# -- claim 7: SC-SDC effects ----------------------------------------------------------------------
def _results(cells):
    """``scsdc_results``-shaped output of ``{cell axes tuple: {"sparse": accs, "dense": accs}}``
    (a value of None: a diverged run)."""
    pairs = [{"cell": (*cell, ("depth", "4"), ("dense_width", "16")), "kind": kind, "seed": s,
              "status": "finished" if a is not None else "diverged", "accuracy": a}
             for cell, v in cells.items() for kind in ("sparse", "dense")
             for s, a in enumerate(v[kind])]
    rows = scsdc_table(pairs)
    return {"rows": [{**dict(r["cell"]), **{k: v for k, v in r.items() if k != "cell"}}
                     for r in rows],
            "runs": [{**dict(p["cell"]), **{k: p[k] for k in ("kind", "seed", "status",
                                                             "accuracy")}} for p in pairs]}


def test_linear_interval_reads_the_weights_of_a_linear_statistic():
    """A difference of two means is Welch's interval of that contrast; a mean over two cells
    of (S - D) has weights +-1/2; a statistic that is not linear is refused."""
    a, b = [0.9, 0.8, 0.85, 0.7], [0.6, 0.65, 0.7]
    value, low, high = stats_mod.linear_interval({"a": a, "b": b}, lambda m: m["a"] - m["b"])
    assert value == pytest.approx(np.mean(a) - np.mean(b))
    want = stats_mod.contrast_interval([a, b], [1.0, -1.0])
    assert (value, low, high) == pytest.approx(want)
    cells = {("c1", "s"): [0.9, 0.8, 0.85], ("c1", "d"): [0.7, 0.75, 0.72],
             ("c2", "s"): [0.6, 0.62, 0.59], ("c2", "d"): [0.61, 0.6, 0.66]}
    got = stats_mod.linear_interval(cells, lambda m: np.mean(
        [m[(c, "s")] - m[(c, "d")] for c in ("c1", "c2")], axis=0))
    want = stats_mod.contrast_interval(list(cells.values()), [0.5, -0.5, 0.5, -0.5])
    assert got == pytest.approx(want)
    with pytest.raises(ValueError, match="not linear"):
        stats_mod.linear_interval({"a": a, "b": b}, lambda m: m["a"] * m["b"])
    assert np.isnan(stats_mod.linear_interval({"a": [1.0], "b": b}, lambda m: m["a"])[1])


def _bn_cells(on_gap, off_gap, jitter=(0.0, 0.004, -0.004)):
    cells = {}
    for bn, gap in (("False", off_gap), ("True", on_gap)):
        for opt in ("momentum", "adam"):
            dense = [0.85 + j for j in jitter]
            cells[(("arch.batchnorm", bn), ("optim.name", opt))] = {
                "dense": dense, "sparse": [d + gap + j for d, j in zip(dense, jitter[::-1],
                                                                         strict=True)]}
    return cells


def test_bn_effect_is_the_difference_of_sparse_dense_gaps():
    claim = t21.bn_claim(_results(_bn_cells(0.02, -0.02)))
    assert claim.number == 7 and claim.effect == pytest.approx(0.04)
    assert claim.verdict == HELD and claim.ci_low > 0 and claim.n == 3
    assert "without BN" in claim.measured and "with BN" in claim.measured
    none = t21.bn_claim(_results(_bn_cells(0.0, 0.0, jitter=(0.0, 0.03, -0.03))))
    assert none.effect == pytest.approx(0.0, abs=1e-12) and none.verdict == INCONCLUSIVE


def _l2_cells(adam, adamw):
    return {(("optim.name", "adam"),): {"sparse": adam, "dense": adam},
            (("optim.name", "adamw"),): {"sparse": adamw, "dense": adamw}}


def test_adam_l2_collapse_against_adamw():
    collapse = t21.l2_claim(_results(_l2_cells([0.2, 0.25, 0.3], [0.85, 0.86, 0.87])), 0.1)
    assert collapse.effect == pytest.approx(0.61) and collapse.verdict == HELD
    same = t21.l2_claim(_results(_l2_cells([0.85, 0.86, 0.87], [0.85, 0.87, 0.86])), 0.1)
    assert same.verdict == FAILED and same.ci_high < t21.COLLAPSE  # no collapse
    # a diverged Adam+L2 run counts at chance accuracy
    lost = t21.l2_claim(_results(_l2_cells([0.85, 0.86, None], [0.85, 0.86, 0.87])), 0.1)
    assert lost.effect == pytest.approx(0.86 - (0.85 + 0.86 + 0.1) / 3)
    assert "diverged" in lost.measured


def test_activation_effect_against_relu():
    base = {"relu": -0.01, "prelu": 0.02, "swish": 0.01}
    cells = {}
    for act, gap in base.items():
        for opt in ("sgd", "momentum", "adam"):
            dense = [0.80, 0.81, 0.82]
            cells[(("arch.activation", act), ("optim.name", opt))] = {
                "dense": dense, "sparse": [d + gap for d in dense[::-1]]}
    claim = t21.activation_claim(_results(cells))
    assert claim.effect == pytest.approx((0.02 + 0.01) / 2 + 0.01)
    assert claim.verdict == HELD and claim.ci_low > 0
    assert "prelu" in claim.measured and "of 3" in claim.measured


def test_tables_show_both_parameter_sets_per_depth_and_the_sc_sdc_cells():
    from sparseflow.analysis.tables import correlation_table
    from sparseflow.studies.figures import tessera2021_tables

    rng = np.random.default_rng(3)
    runs = [{"status": "finished", "config": {"method": "static", "depth": 1 + i % 2},
             "summary": {**{m: float(rng.normal()) for m in FLOW_MEASURES},
                         "test_accuracy": float(rng.uniform()),
                         "test_loss": float(rng.uniform())}}
            for i in range(8)]
    corr = correlation_table(runs, lambda r: True, lambda r: f"depth={r['config']['depth']}")
    _, gaps = t21.correlation_claim([{"group": "sparse", "stratum": f"depth={1 + i % 2}",
                                      "test_accuracy": r["summary"]["test_accuracy"],
                                      **{MEASURE_NAMES[m]: r["summary"][m]
                                         for m in FLOW_MEASURES}}
                                     for i, r in enumerate(runs)])
    res = _results(_l2_cells([0.8, 0.81], [0.82, 0.83]))
    tables = {f.name: f.table for f in tessera2021_tables(corr, res["rows"], gaps=gaps,
                                                          optimisers=res["rows"],
                                                          activations=res["rows"])}
    assert set(tables) == {"correlations", "correlation_gap", "scsdc_pvalues",
                           "scsdc_adam_l2", "scsdc_activations"}
    header, rows = tables["correlations"]
    cells = {(r[0], r[2]) for r in rows}
    assert {(p, s) for p in ("weights", "all") for s in ("pooled", "depth=1", "depth=2")} <= cells
    header, rows = tables["correlation_gap"]
    assert len(rows) == 6 and all(len(r) == len(header) for r in rows)
    header, rows = tables["scsdc_adam_l2"]
    d = header.index("sparse - dense")
    assert rows[0][d] == pytest.approx(0.0)  # sparse and dense accuracies equal here
