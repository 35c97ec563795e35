"""The straight-through methods (STE, SR-STE, Top-KAST; methods/shadow.py): dense weights behind
a magnitude mask, checked against hand computations of one step, under every optimiser, under
patterns, through checkpoints and through the config path."""

from __future__ import annotations

import inspect
import io
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.config import load_config
from sparseflow.methods import SRSTE, STE, TopKAST, sparsify, sr_ste, ste, topkast
from sparseflow.sparsity import parse_pattern, pattern_violations
from sparseflow.store.checkpoint import load_checkpoint
from sparseflow.store.database import Store
from sparseflow.training.optim import decoupled_decay_
from sparseflow.training.run import execute

CLASSES = {"ste": STE, "sr_ste": SRSTE, "topkast": TopKAST}


def linear(seed: int = 0, fan_in: int = 8, out: int = 4) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(fan_in, out, bias=False)


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                         nn.Linear(12, 4))


def data(seed: int = 1, n: int = 16, fan_in: int = 8, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, fan_in, generator=g), torch.randint(0, classes, (n,), generator=g)


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest by a full sort (independent of sparsity.topk; scores here have no ties)."""
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[scores.reshape(-1).argsort(descending=True)[:k]] = True
    return flat.view(scores.shape)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, sp, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return sp.step()


def masked_grad(w_masked: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dL/d(W * M) of the mean squared error of x @ (W * M)^T against t, by autograd."""
    wm = w_masked.clone().requires_grad_(True)
    F.mse_loss(x @ wm.T, t).backward()
    return wm.grad


def mse_step(model: nn.Linear, opt, sp, x, t):
    opt.zero_grad()
    F.mse_loss(model(x), t).backward()
    opt.step()
    return sp.step()


# --- (a) STE: one SGD step by hand -----------------------------------------------------------
def test_ste_one_sgd_step_is_the_straight_through_update_then_top_k():
    model, lr = linear(), 0.3
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sp = ste(model, opt, sparsity=0.5, distribution="uniform")
    m0 = top(w0.abs(), 16)
    assert torch.equal(sp.masks["weight"], m0)
    assert torch.equal(model.weight.detach(), w0 * m0)  # the model holds the masked weights
    assert torch.equal(sp.dense_weights()["weight"], w0)  # the dense ones are kept

    x, t = torch.randn(10, 8), torch.randn(10, 4)
    g = masked_grad(w0 * m0, x, t)
    assert bool((g[~m0] != 0).any())  # straight through: masked weights get gradients
    stats = mse_step(model, opt, sp, x, t)
    w1 = w0.add(g, alpha=-lr)  # W <- W - lr dL/d(W * M), at every position
    torch.testing.assert_close(sp.dense_weights()["weight"], w1)
    m1 = top(w1.abs(), 16)
    assert torch.equal(sp.masks["weight"], m1)
    torch.testing.assert_close(model.weight.detach(), w1 * m1)
    assert torch.all(model.weight.detach()[~m1] == 0)
    assert stats is not None and stats["sparsity"] == 0.5
    changed = int((m0 ^ m1).sum())
    assert stats["grown/weight"] + stats["dropped/weight"] == changed


@pytest.mark.parametrize("init", ["dense", "keep", "liu", "sparse"])
def test_the_init_sets_the_dense_weights_too(init):
    model = linear(14)
    w0 = model.weight.detach().clone()
    sp = ste(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.75,
             distribution="uniform", init=init)
    m = sp.masks["weight"]
    assert torch.equal(m, top(w0.abs(), 8))  # the first mask: top-k of the initial weights
    dense = sp.dense_weights()["weight"]
    assert torch.equal(dense[m], model.weight.detach()[m])
    expected = {"dense": w0, "keep": w0, "liu": w0 * 2.0, "sparse": torch.zeros_like(w0)}[init]
    torch.testing.assert_close(dense[~m], expected[~m])  # liu: 1 / sqrt(0.25) on every weight


# --- (b) SR-STE: the sparse-refined term ---------------------------------------------------------
def test_sr_ste_adds_lambda_times_masked_weights_to_the_gradient():
    model, lr, lam = linear(2), 0.2, 0.5
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sp = sr_ste(model, opt, decay=lam, pattern="2:4", sparsity=0.5)
    m0 = sp.masks["weight"]
    by_group = w0.abs().view(4, 2, 4)  # 2:4: the two largest of every group of 4 inputs
    expected = torch.zeros_like(by_group, dtype=torch.bool)
    expected.scatter_(-1, by_group.argsort(-1, descending=True)[..., :2], True)
    assert torch.equal(m0, expected.view(4, 8))

    x, t = torch.randn(10, 8), torch.randn(10, 4)
    g = masked_grad(w0 * m0, x, t)
    mse_step(model, opt, sp, x, t)
    refined = g + lam * (~m0) * w0  # g + lambda_W (1 - M) W
    w1 = w0.add(refined, alpha=-lr)
    torch.testing.assert_close(sp.dense_weights()["weight"], w1)
    assert torch.all(model.weight.detach()[~sp.masks["weight"]] == 0)
    # the same step without the term: only masked positions differ, by lr * lam * W
    model2 = linear(2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=lr)
    sp2 = ste(model2, opt2, pattern="2:4", sparsity=0.5)
    mse_step(model2, opt2, sp2, x, t)
    diff = sp2.dense_weights()["weight"] - sp.dense_weights()["weight"]
    torch.testing.assert_close(diff, lr * lam * (~m0) * w0)


# --- (c) the pattern and the counts hold after every step -------------------------------------
@pytest.mark.parametrize("method", ["ste", "sr_ste", "topkast"])
@pytest.mark.parametrize("pattern", ["2:4", "unstructured", "fan_in", "block:4x4"])
def test_pattern_and_counts_hold_after_every_step(method, pattern):
    model = mlp(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sparsity = 0.5 if pattern == "2:4" else 0.75
    sp = sparsify(method, model, opt, sparsity=sparsity, pattern=pattern, distribution="uniform")
    counts = sp.masks.nnz()
    pat = parse_pattern(pattern)
    x, y = data(4)
    for _ in range(12):
        train_step(model, opt, sp, x, y)
        assert sp.masks.nnz() == counts
        for name, m in sp.masks.masks.items():
            assert pattern_violations(m, pat) == [], name
            assert torch.all(sp.params[name].detach()[~m] == 0), name
    assert sp.updates == 12


def test_topkast_backward_set_keeps_its_own_n_m_pattern():
    model = mlp(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sp = topkast(model, opt, pattern="2:4", sparsity=0.5, backward_sparsity=0.25)
    three_of_four = parse_pattern("3:4")  # n_B = round(0.75 * 4)
    x, y = data(6)
    for _ in range(5):
        train_step(model, opt, sp, x, y)
        for name, b in sp.backward_masks.items():
            assert pattern_violations(b, three_of_four) == [], name
            assert torch.all(b[sp.masks[name]]), name


# --- (d) masked weights are zero after every step, under every optimiser ----------------------
OPTIMISERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.2),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("method", ["ste", "sr_ste", "topkast"])
@pytest.mark.parametrize("optimiser", list(OPTIMISERS))
def test_masked_weights_are_exactly_zero_after_every_step(method, optimiser):
    model = mlp(7)
    opt = OPTIMISERS[optimiser](model.parameters())
    sp = sparsify(method, model, opt, sparsity=0.8)
    x, y = data(8)
    dense_before = sp.dense_weights()
    for _ in range(8):
        train_step(model, opt, sp, x, y)
        for name, m in sp.masks.masks.items():
            p = sp.params[name].detach()
            assert torch.all(p[~m] == 0), name
            assert torch.equal(p[m], sp.dense_weights()[name][m]), name
    moved = [bool((sp.dense_weights()[n] != w)[~sp.masks[n]].any())
             for n, w in dense_before.items()]
    assert any(moved)  # the masked dense weights train too


# --- (e) a masked weight that outgrows the threshold re-enters the mask -----------------------
def test_a_masked_weight_growing_past_the_threshold_re_enters():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.9, 0.1, 0.05]]))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sp = ste(model, opt, sparsity=0.5, distribution="uniform")
    assert sp.masks["weight"].tolist() == [[True, True, False, False]]
    x = torch.tensor([[0.0, 0.0, 1.0, 0.0]])

    def step():
        opt.zero_grad()
        (-model(x).sum()).backward()  # dL/d(W * M) = -x: the masked w_2 grows by lr per step
        opt.step()
        return sp.step()

    stats = step()
    torch.testing.assert_close(sp.dense_weights()["weight"], torch.tensor([[1.0, 0.9, 0.6, 0.05]]))
    assert sp.masks["weight"].tolist() == [[True, True, False, False]]
    assert stats["grown/weight"] == 0 and stats["churn"] == 0
    stats = step()  # w_2 = 1.1 > 0.9: it enters, w_1 leaves (and keeps its dense value)
    assert sp.masks["weight"].tolist() == [[True, False, True, False]]
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, 0.0, 1.1, 0.0]]))
    torch.testing.assert_close(sp.dense_weights()["weight"], torch.tensor([[1.0, 0.9, 1.1, 0.05]]))
    assert stats["grown/weight"] == 1 and stats["dropped/weight"] == 1
    assert stats["churn"] == 0.5 and stats["ever_active"] == 0.75


# --- (f) Top-KAST: B contains A, nothing outside B moves, the penalty ------------------------
def test_topkast_one_step_by_hand_with_the_exploration_penalty():
    model, lr, alpha = linear(4), 0.3, 0.2
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sp = topkast(model, opt, sparsity=0.75, backward_sparsity=0.5, penalty=alpha,
                 distribution="uniform")
    a, b = top(w0.abs(), 8), top(w0.abs(), 16)
    assert torch.equal(sp.masks["weight"], a) and torch.equal(sp.backward_masks["weight"], b)

    x, t = torch.randn(10, 8), torch.randn(10, 4)
    g = masked_grad(w0 * a, x, t)
    theta = w0.clone().requires_grad_(True)  # the penalty as a loss, differentiated by autograd
    d = 0.25
    (alpha / 2 * ((theta**2)[a].sum() + (theta**2)[b & ~a].sum() / d)).backward()
    expected_grad = (g + theta.grad) * b
    mse_step(model, opt, sp, x, t)
    torch.testing.assert_close(model.weight.grad, expected_grad)
    assert torch.all(model.weight.grad[~b] == 0)
    w1 = w0.add(expected_grad, alpha=-lr)
    dense = sp.dense_weights()["weight"]
    torch.testing.assert_close(dense, w1)
    assert torch.equal(dense[~b], w0[~b])  # outside B: exactly the old values
    assert torch.equal(sp.masks["weight"], top(w1.abs(), 8))
    assert torch.equal(sp.backward_masks["weight"], top(w1.abs(), 16))


@pytest.mark.parametrize("optimiser", ["momentum", "adamw"])
def test_topkast_weights_outside_b_never_change(optimiser):
    model = mlp(9)
    opt = OPTIMISERS[optimiser](model.parameters())
    sp = topkast(model, opt, sparsity=0.9, backward_sparsity=0.8, update_every=3)
    x, y = data(10)
    for _ in range(9):
        before = sp.dense_weights()
        outside = {n: ~b.clone() for n, b in sp.backward_masks.items()}
        train_step(model, opt, sp, x, y)
        for name, w in sp.dense_weights().items():
            assert torch.equal(w[outside[name]], before[name][outside[name]]), name
            assert torch.all(sp.backward_masks[name][sp.masks[name]]), name  # B contains A
            assert torch.all(sp.params[name].grad[outside[name]] == 0), name
        counts = {n: int(b.sum()) for n, b in sp.backward_masks.items()}
        assert all(counts[n] >= c for n, c in sp.masks.nnz().items())
    assert sp.updates == 3


def test_default_backward_set_has_twice_the_forward_density():
    model = mlp(11)
    sp = topkast(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.9,
                 distribution="uniform")
    assert sp.backward_sparsity == pytest.approx(0.8)
    for name, m in sp.masks.masks.items():
        assert int(sp.backward_masks[name].sum()) == pytest.approx(2 * int(m.sum()), abs=1)
    model = mlp(11)
    full = topkast(model, torch.optim.SGD(model.parameters(), lr=0.1), pattern="2:4",
                   sparsity=0.5)  # 2:4: 1 - 2 * 0.5 = 0, every weight is explored
    assert all(bool(b.all()) for b in full.backward_masks.values())


# --- (g) resume from a checkpoint mid-training is bit-exact -----------------------------------
@pytest.mark.parametrize(("method", "kwargs", "optimiser"), [
    ("ste", {"sparsity": 0.8, "update_every": 2}, "momentum"),
    ("sr_ste", {"pattern": "2:4", "sparsity": 0.5, "decay": 0.01}, "adam"),
    ("topkast", {"sparsity": 0.8, "backward_sparsity": 0.6, "penalty": 0.01}, "momentum"),
])
def test_resume_mid_training_continues_bit_exactly(method, kwargs, optimiser):
    x, y = data(12)

    def build(seed):
        model = mlp(seed)
        opt = OPTIMISERS[optimiser](model.parameters())
        return model, opt, sparsify(method, model, opt, **kwargs)

    model, opt, sp = build(0)
    for _ in range(5):
        train_step(model, opt, sp, x, y)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sp": sp.state_dict()},
               buf)
    for _ in range(6):
        train_step(model, opt, sp, x, y)

    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    model2, opt2, sp2 = build(1)  # another init: everything must come from the checkpoint
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    sp2.load_state_dict(state["sp"])
    for _ in range(6):
        train_step(model2, opt2, sp2, x, y)
    for (n, p), p2 in zip(model.named_parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, p2), n
    for n, w in sp.dense_weights().items():
        assert torch.equal(w, sp2.dense_weights()[n]), n
        assert torch.equal(sp.masks[n], sp2.masks[n]), n
    assert sp2.step_count == sp.step_count == 11 and sp2.updates == sp.updates


def test_state_of_another_method_is_refused_in_one_line():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = mlp()
    plain = sparsify("static", other, torch.optim.SGD(other.parameters(), lr=0.1), sparsity=0.8)
    with pytest.raises(ValueError, match="no shadow") as e:
        ste(model, opt, sparsity=0.8).load_state_dict(plain.state_dict())
    assert "\n" not in str(e.value)


# --- decoupled weight decay of the training loop reaches the masked dense weights ------------
def test_loop_decoupled_decay_reaches_the_masked_dense_weights():
    model, lr, wd = linear(13), 0.1, 0.5
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD([{"params": list(model.parameters()), "decoupled_wd": wd}], lr=lr)
    sp = ste(model, opt, sparsity=0.5, distribution="uniform", update_every=100)
    m0 = sp.masks["weight"]
    x, t = torch.randn(10, 8), torch.randn(10, 4)
    g = masked_grad(w0 * m0, x, t)
    opt.zero_grad()
    F.mse_loss(model(x), t).backward()
    decoupled_decay_(opt)  # what the training loop does before opt.step() (SGDW)
    opt.step()
    sp.step()
    expected = (w0 * (1 - lr * wd)).add(g, alpha=-lr)
    torch.testing.assert_close(sp.dense_weights()["weight"], expected)


# --- (h) the config path -------------------------------------------------------------------------
BASE = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=64", "train.batch_size=32",
        "train.duration=3ep", "data.heldout=64"]


def test_sr_ste_2_4_runs_through_the_config_and_resumes_exactly(root, tmp_path, stop_after):
    cfg = load_config(None, BASE + ["method=sr_ste", "sparse.pattern=2:4", "sparsity=0.5",
                                    "train.checkpoint_every=10it"])
    full = execute(cfg, root=tmp_path / "full", progress=False)
    assert full["status"] == "finished" and full["steps"] == 48
    assert full["sparsity"] == 0.5 and full["mask_updates"] == 48
    state = load_checkpoint(full["checkpoint"])
    pat = parse_pattern("2:4")
    sparsifier = state["callbacks"]["sparsifier"]
    for name, m in sparsifier["masks"].items():
        assert pattern_violations(m, pat) == [], name
        assert torch.all(state["model"][name][~m] == 0), name
        assert bool((sparsifier["shadow"][name] != 0).any()), name  # dense values kept
    with Store(tmp_path / "full" / "sparseflow.db") as st:
        names = {r["name"] for r in st.metrics(full["run_id"], prefix="topology/")}
    assert {"topology/churn", "topology/ever_active"} <= names

    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(20)])
    resumed = execute(cfg, root=root, progress=False)
    for k in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "steps"):
        assert resumed[k] == full[k], k


@pytest.mark.parametrize(("method", "options", "updates"), [
    ("ste", ["sparse.ste_update_every=4"], 12),
    ("topkast", ["sparse.topkast_backward_sparsity=0.6", "sparse.topkast_penalty=0.001",
                 "sparse.topkast_update_every=8"], 6),
])
def test_options_reach_the_method_through_the_config(root, method, options, updates):
    cfg = load_config(None, BASE + [f"method={method}", "sparsity=0.8", *options])
    s = execute(cfg, root=root, progress=False)
    assert s["status"] == "finished" and s["mask_updates"] == updates
    assert s["sparsity"] == pytest.approx(0.8, abs=1e-3)


# --- signatures, documentation, errors ----------------------------------------------------------
@pytest.mark.parametrize("obj", [ste, sr_ste, topkast, STE, SRSTE, TopKAST])
def test_every_option_is_keyword_only_typed_and_documented(obj):
    params = inspect.signature(obj).parameters
    assert list(params)[:2] == ["model", "optimizer"]
    doc = inspect.getdoc(obj)
    assert "Parameters\n----------" in doc and "%(" not in doc
    for p in list(params.values())[2:]:
        assert p.kind is p.KEYWORD_ONLY and p.annotation is not p.empty, p.name
        assert re.search(rf"^(\w+, )*{p.name}(, \w+)* :", doc, re.M), p.name
    assert {"sparsity", "distribution", "include", "pattern", "seed", "update_every"} <= set(
        params)


@pytest.mark.parametrize(("call", "kwargs", "start"), [
    (ste, {"execution": "sparse"}, "ste(): execution: ste keeps dense weights"),
    (ste, {"update_every": 0}, "ste(): update_every: expected an int >= 1"),
    (sr_ste, {"decay": -1.0}, "sr_ste(): decay: expected a finite float >= 0"),
    (topkast, {"backward_sparsity": 0.95}, "topkast(): backward_sparsity: 0.95 is out of range"),
    (topkast, {"penalty": float("nan")}, "topkast(): penalty: expected a finite float >= 0"),
    (STE, {"sparsity": 1.5}, "STE(): sparsity: 1.5 is out of range"),
])
def test_bad_arguments_are_one_line_errors_naming_the_argument(call, kwargs, start):
    model = mlp()
    with pytest.raises(ValueError) as e:
        call(model, torch.optim.SGD(model.parameters(), lr=0.1), **{"sparsity": 0.9, **kwargs})
    assert str(e.value).startswith(start) and "\n" not in str(e.value)
