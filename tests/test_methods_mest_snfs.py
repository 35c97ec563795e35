"""MEST (Yuan et al. 2021) and sparse momentum / SNFS (Dettmers & Zettlemoyer 2019).

Every number is checked independently of the code under test: MEST's drop set by brute force
over subsets on a tiny layer with an analytic gradient, its mutation-ratio schedule by hand;
SNFS's momentum against an EMA of the recorded dense gradients, its redistribution against hand
computations (and water-filling bounds), its growth against the top |M| of the eligible
positions; both methods keep masked weights at zero under SGD, momentum, Adam and AdamW, start
grown weights at zero with reset optimiser state, resume bit-exactly through
``torch.save`` / ``torch.load(weights_only=True)`` and finish a run through the config path.
"""

from __future__ import annotations

import io
import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.methods import MEST, SET, SNFS, mest, snfs, sparsify
from sparseflow.methods.mest import MestOptions
from sparseflow.methods.options import BuildContext
from sparseflow.methods.snfs import SnfsOptions, redistribute
from sparseflow.sparsity import floor_count, parse_pattern, pattern_violations, step_at

EXECUTIONS = ("masked", "sparse")
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def mlp(*widths: int, seed: int = 0, bias: bool = True) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        return nn.Sequential(*layers)


def batches(n: int, n_in: int, n_out: int, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, n_in, generator=g), torch.randint(0, n_out, (8,), generator=g))
            for _ in range(n)]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def dense_weight(sp, name: str) -> torch.Tensor:
    """Weight ``name`` as a dense tensor in either execution (values laid out by hand)."""
    p, mask = sp.execution.parameter(name), sp.masks[name]
    if p.shape == mask.shape:
        return p.detach().clone()
    out = torch.zeros(mask.numel(), dtype=p.dtype)
    out[mask.reshape(-1).nonzero().squeeze(1)] = p.detach()
    return out.view(mask.shape)


def record(sp) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Log (name, old mask, drop mask, grow mask) of every topology change."""
    log: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    orig_mask, orig_positions = sp.replace_mask, sp.replace_positions

    def as_mask(idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(like.numel(), dtype=torch.bool)
        out[idx] = True
        return out.view(like.shape)

    def replace_mask(name, new, *, zero=None):
        old = sp.masks[name].clone()
        log.append((name, old, old & ~new, new & ~old if zero is None else zero.clone()))
        orig_mask(name, new, zero=zero)

    def replace_positions(name, drop, grow):
        old = sp.masks[name].clone()
        log.append((name, old, as_mask(drop, old), as_mask(grow, old)))
        orig_positions(name, drop, grow)

    sp.replace_mask = replace_mask
    sp.replace_positions = replace_positions
    return log


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def counts(sp) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in sp.masks.masks.items()}


# --------------------------------------------------------------------------------------------
# MEST: drop score, growth, schedule, patterns
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("exclude_dropped", [False, True])
def test_mest_drops_exactly_the_lowest_magnitude_plus_lambda_gradient(
        execution: str, exclude_dropped: bool) -> None:
    """One 4x6 layer, 13 active, lr = 0 (weights stay put); loss = sum(v * (W x)) so that
    dL/dW = v x^T exactly. Brute force: the dropped 3 minimise the summed score over every
    3-subset of the active ones, and magnitude alone would drop another set."""
    lam = 2.0
    model = mlp(6, 4, bias=False)
    w = torch.tensor([[0.50, -0.05, 0.00, 0.40, 0.00, -0.30],
                      [0.00, 0.20, -0.60, 0.00, 0.10, 0.00],
                      [-0.07, 0.00, 0.00, 0.90, 0.00, 0.03],
                      [0.00, -0.45, 0.08, 0.00, 0.25, 0.00]])
    mask = w != 0
    x = torch.tensor([[1.0, 2.0, -0.5, 0.3, -1.5, 0.8]])
    v = torch.tensor([[0.6, -0.2, 0.05, 0.4]])
    grad = v.T @ x  # dL/dW of loss sum(v * (W x))
    with torch.no_grad():
        model[0].weight.copy_(w)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sp = MEST(model, opt, t_end=5, update_every=1, drop_fraction=0.25,
              drop_schedule="constant", lam=lam, exclude_dropped=exclude_dropped,
              masks={"0.weight": mask}, init="keep", execution=execution, seed=3)
    log = record(sp)
    opt.zero_grad()
    (model(x) * v).sum().backward()
    opt.step()
    sp.step()
    (name, old, drop, grow), = log
    assert name == "0.weight" and torch.equal(old, mask)

    active = mask.reshape(-1).nonzero().squeeze(1).tolist()
    score = {i: abs(float(w.reshape(-1)[i])) + lam * abs(float(grad.reshape(-1)[i]))
             for i in active}
    k = math.floor(0.25 * len(active))
    best = min(itertools.combinations(active, k), key=lambda s: sum(score[i] for i in s))
    assert set(drop.reshape(-1).nonzero().squeeze(1).tolist()) == set(best)
    by_magnitude = sorted(active, key=lambda i: abs(float(w.reshape(-1)[i])))[:k]
    assert set(by_magnitude) != set(best), "the gradient should change the drop set here"

    kept = mask & ~drop
    eligible = ~mask if exclude_dropped else ~kept
    new = sp.masks[name]
    assert int(grow.sum()) == k and not bool((grow & ~eligible).any())
    assert torch.equal(new, kept | grow) and int(new.sum()) == len(active)
    cur = dense_weight(sp, name)
    assert bool((cur[grow] == 0).all()) and bool((cur[~new] == 0).all())
    assert torch.equal(cur[kept], w[kept])


def test_mest_with_lambda_zero_is_set() -> None:
    """lambda = 0: the drop score is |w| and growth is SET's, so the runs are identical."""
    data = batches(12, 10, 5)
    runs = []
    for cls, extra in ((MEST, {"lam": 0.0}), (SET, {})):
        model = mlp(10, 16, 5)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sp = cls(model, opt, sparsity=0.7, t_end=10, update_every=2, drop_fraction=0.3,
                 drop_schedule="constant", seed=5, **extra)
        if cls is MEST:
            assert not any(sp.needs_dense_grads(t) for t in range(1, 13))
        for x, y in data:
            train_step(model, opt, x, y)
            sp.step()
        runs.append((sp.masks.masks, model.state_dict()))
    (ma, wa), (mb, wb) = runs
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mest_needs_the_gradient_only_at_update_steps() -> None:
    model = mlp(10, 16, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = mest(model, opt, sparsity=0.7, t_end=9, update_every=3)
    assert [t for t in range(1, 13) if sp.needs_dense_grads(t)] == [3, 6, 9]


def test_mest_mutation_ratio_follows_its_step_schedule() -> None:
    """alpha until decay_at, alpha / 2 from it to t_end, no update after t_end; with
    exclude_dropped every layer drops exactly floor(alpha_t * n_active)."""
    model = mlp(10, 20, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = MEST(model, opt, sparsity=0.6, t_end=20, update_every=2, drop_fraction=0.3,
              decay_at=11, exclude_dropped=True)
    expected = {t: (0.3 if t < 11 else 0.15) for t in range(2, 21, 2)}
    assert [sp.drop_fraction_at(t) for t in (1, 10, 11, 12, 20)] == [0.3, 0.3, 0.15, 0.15, 0.15]
    log = record(sp)
    seen = {}
    for t, (x, y) in enumerate(batches(26, 10, 5), start=1):
        train_step(model, opt, x, y)
        before = counts(sp)
        log.clear()
        stats = sp.step()
        if stats is None:
            continue
        seen[t] = stats["drop_fraction"]
        dropped = {n: int(d.sum()) for n, _, d, _ in log}
        for n, c in before.items():
            assert dropped.get(n, 0) == math.floor(expected[t] * c + 1e-9), (t, n)
            assert stats[f"dropped/{n}"] == dropped.get(n, 0)
        assert counts(sp) == before
    assert seen == expected

    other = mlp(10, 20, 5)
    default = MEST(other, torch.optim.SGD(other.parameters(), lr=0.1), sparsity=0.6,
                   total_steps=160)
    assert default.t_end == 120 and default.decay_at == 90  # the authors' epochs 120 and 90
    assert default.drop_fraction_at(89) == 0.2 and default.drop_fraction_at(90) == 0.1
    other = mlp(10, 20, 5)
    cosine = MEST(other, torch.optim.SGD(other.parameters(), lr=0.1), sparsity=0.6, t_end=40,
                  drop_schedule="cosine")
    assert cosine.drop_fraction_at(20) == pytest.approx(0.1)


def test_mest_options_map_to_the_constructor() -> None:
    opts = MestOptions(update_end=0.5, mest_decay_at=0.5, mest_mutation=0.25,
                       mest_lambda=1.5, update_every=7)
    ctx = BuildContext(model=mlp(3, 2), total_steps=1000, input_shape=(3,))
    args = MestOptions.arguments(opts, ctx)
    assert args == {"t_end": 500, "update_every": 7, "drop_fraction": 0.25,
                    "drop_schedule": "step", "decay_at": 250, "lam": 1.5,
                    "exclude_dropped": False}
    defaults = MestOptions.arguments(MestOptions(), ctx)
    assert defaults["t_end"] == 750 and defaults["decay_at"] == step_at(0.75, 750) == 562
    assert defaults["drop_fraction"] == 0.2 and defaults["lam"] == 0.5


def test_snfs_options_map_to_the_constructor() -> None:
    ctx = BuildContext(model=mlp(3, 2), total_steps=1000, input_shape=(3,))
    assert SnfsOptions.arguments(SnfsOptions(), ctx) == {
        "t_end": 750, "update_every": 100, "drop_fraction": 0.5, "drop_schedule": "cosine",
        "momentum": 0.9}
    opts = SnfsOptions(update_end=1.0, snfs_prune_rate=0.3, snfs_momentum=0.0,
                       drop_schedule="constant")
    args = SnfsOptions.arguments(opts, ctx)
    assert args["t_end"] == 1000 and args["drop_fraction"] == 0.3 and args["momentum"] == 0.0
    model = mlp(8, 8, 4)
    sp = snfs(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.5, **args)
    assert sp.drop_fraction_at(999) == 0.3 and sp.due(1000) and not sp.due(1100)


@pytest.mark.parametrize("pattern,sparsity", [("2:4", 0.5), ("fan_in", 0.75)])
def test_mest_keeps_the_pattern(pattern: str, sparsity: float) -> None:
    model = mlp(16, 8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = MEST(model, opt, sparsity=sparsity, pattern=pattern, t_end=12, update_every=3,
              drop_fraction=0.5, drop_schedule="constant", distribution="uniform")
    pat = parse_pattern(pattern)
    start = {n: m.clone() for n, m in sp.masks.masks.items()}
    total = sum(counts(sp).values())
    updates = 0
    for x, y in batches(12, 16, 4):
        train_step(model, opt, x, y)
        updates += sp.step() is not None
        for name, m in sp.masks.masks.items():
            assert pattern_violations(m, pat) == [], (name, pattern_violations(m, pat))
            assert bool((dense_weight(sp, name)[~m] == 0).all())
    assert updates == 4 and sum(counts(sp).values()) == total
    assert any(not torch.equal(start[n], m) for n, m in sp.masks.masks.items())


def test_bad_arguments_raise_one_line_value_errors() -> None:
    def fresh():
        model = mlp(8, 8, 4)
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    for kwargs, field in (({"lam": -1.0}, "lam"), ({"lam": float("nan")}, "lam"),
                          ({"drop_schedule": "linear"}, "drop_schedule"),
                          ({"decay_at": 0}, "decay_at"), ({"drop_fraction": 1.5}, "drop_fraction"),
                          ({"update_every": 0}, "update_every")):
        with pytest.raises(ValueError, match=field) as e:
            mest(*fresh(), sparsity=0.5, t_end=10, **kwargs)
        assert one_line(e).startswith("mest():")
    for kwargs, field in (({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
                          ({"drop_schedule": "step"}, "drop_schedule"),
                          ({"drop_fraction": -0.5}, "drop_fraction")):
        with pytest.raises(ValueError, match=field) as e:
            snfs(*fresh(), sparsity=0.5, t_end=10, **kwargs)
        one_line(e)
    for pattern in ("2:4", "fan_in", "block:2", "unit"):
        with pytest.raises(ValueError, match="redistributes") as e:
            sparsify("snfs", *fresh(), sparsity=0.5, t_end=10, pattern=pattern)
        assert one_line(e).startswith("sparsify('snfs'): pattern:")
    model, opt = fresh()
    sp = snfs(model, opt, sparsity=0.5, t_end=10)
    with pytest.raises(ValueError, match="momentum") as e:
        sp.load_state_dict({k: v for k, v in sp.state_dict().items() if k != "momentum"})
    one_line(e)


# --------------------------------------------------------------------------------------------
# SNFS: momentum, redistribution, growth
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.9, 0.5])
def test_snfs_momentum_is_the_ema_of_the_dense_gradients(beta: float) -> None:
    model = mlp(10, 16, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = SNFS(model, opt, sparsity=0.8, t_end=100, update_every=50, momentum=beta)
    ema = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in sp.params.items()}
    for x, y in batches(7, 10, 5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in sp.params.items():  # the unmasked gradient, inactive positions included
            g = p.grad.detach().double()
            assert bool((g[~sp.masks[n]] != 0).any()), "the gradient should be dense"
            ema[n] = beta * ema[n] + (1 - beta) * g
        opt.step()
        sp.step()
        for n in sp.params:
            torch.testing.assert_close(sp.momentum_of(n).double(), ema[n], rtol=1e-5,
                                       atol=1e-7)
            assert sp.momentum_of(n).dtype == torch.float32


def test_snfs_reads_the_dense_gradient_at_every_step_up_to_t_end() -> None:
    model = mlp(10, 16, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = SNFS(model, opt, sparsity=0.8, t_end=6, update_every=3)
    assert [t for t in range(1, 10) if sp.needs_dense_grads(t)] == [1, 2, 3, 4, 5, 6]
    frozen = {}
    for t, (x, y) in enumerate(batches(9, 10, 5), start=1):
        train_step(model, opt, x, y)
        sp.step()
        assert sp.masks.defer_grad_masking == (t < 6)  # the next step's gradient unmasked?
        if t == 6:
            frozen = {n: sp.momentum_of(n).clone() for n in sp.params}
    assert all(torch.equal(frozen[n], sp.momentum_of(n)) for n in sp.params)


def test_snfs_momentum_of_sparse_execution_matches_the_masked_one() -> None:
    data = batches(6, 10, 5)
    out = []
    for execution in EXECUTIONS:
        model = mlp(10, 16, 5)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sp = SNFS(model, opt, sparsity=0.8, t_end=100, update_every=50, execution=execution)
        for x, y in data:
            train_step(model, opt, x, y)
            sp.step()
        out.append({n: sp.momentum_of(n).clone() for n in sp.params})
    assert set(sp.execution.executions().values()) == {"sparse"}
    for n in out[0]:
        torch.testing.assert_close(out[0][n], out[1][n], rtol=1e-4, atol=1e-6)


def test_redistribute_by_hand() -> None:
    assert redistribute(8, [0.75, 0.25], [28, 28]) == [6, 2]
    assert redistribute(7, [2.0, 1.0], [100, 100]) == [5, 2]  # 4.67, 2.33: the .67 rounds up
    assert redistribute(8, [0.9, 0.1], [5, 59]) == [5, 3]  # 7.2 > cap 5: the rest to the other
    assert redistribute(10, [3.0, 1.0, 0.0], [4, 50, 50]) == [4, 6, 0]
    assert redistribute(4, [0.0, 0.0], [1, 3]) == [1, 3]  # no share: by room
    assert redistribute(6, [1.0, 1.0, 1.0], [2, 2, 2]) == [2, 2, 2]
    assert redistribute(2, [1.0, 1.0, 1.0], [5, 5, 5]) == [1, 1, 0]  # ties: the lower index
    with pytest.raises(ValueError, match="total"):
        redistribute(7, [1.0, 1.0], [3, 3])


def test_redistribute_bounds_on_random_draws() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 6)
        caps = [rng.randint(0, 40) for _ in range(n)]
        shares = [rng.choice([0.0, rng.random(), rng.random() * 10]) for _ in range(n)]
        total = rng.randint(0, sum(caps))
        g = redistribute(total, shares, caps)
        assert sum(g) == total and all(0 <= a <= c for a, c in zip(g, caps, strict=True))
        # water-filling: an uncapped layer never gets less (beyond rounding) than a capped one
        # would get in proportion, and two uncapped layers split in proportion to their shares
        free = [i for i in range(n) if g[i] < caps[i] and shares[i] > 0]
        for i, j in itertools.combinations(free, 2):
            assert abs(g[i] * shares[j] - g[j] * shares[i]) <= shares[i] + shares[j] + 1e-9


def _snfs_with(widths: tuple[int, ...], masks: dict[str, torch.Tensor],
               weights: dict[str, torch.Tensor]):
    model = mlp(*widths, bias=False)
    with torch.no_grad():
        for i, (n, w) in enumerate(weights.items()):
            model[2 * i].weight.copy_(w)
            assert n == f"{2 * i}.weight"
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay put
    sp = SNFS(model, opt, masks=masks, init="keep", t_end=10, update_every=1,
              drop_fraction=0.5, drop_schedule="constant", momentum=0.0)
    return model, opt, sp


def _flat_positions(shape: tuple[int, int], idx: list[int]) -> torch.Tensor:
    m = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    m[idx] = True
    return m.view(shape)


def test_snfs_redistributes_the_pruned_count_by_mean_momentum_by_hand() -> None:
    """Two 32-weight layers, 8 active each, p = 0.5: 4 + 4 pruned (smallest |w|); mean |M| over
    the active weights 3 and 1 -> shares 3/4, 1/4 -> 6 and 2 regrown at the largest inactive
    |M|; counts 10 and 6, total 16."""
    shapes = {"0.weight": (4, 8), "2.weight": (8, 4)}
    act = {"0.weight": [0, 3, 5, 9, 14, 20, 27, 31], "2.weight": [1, 2, 7, 11, 16, 22, 25, 30]}
    masks = {n: _flat_positions(shapes[n], act[n]) for n in shapes}
    weights = {}
    for n, s in shapes.items():  # active magnitudes 1..8 (sign alternating), the rest zero
        w = torch.zeros(s[0] * s[1])
        for r, i in enumerate(act[n], start=1):
            w[i] = r * 0.1 * (-1) ** r
        weights[n] = w.view(s)
    model, opt, sp = _snfs_with((8, 4, 8), masks, weights)
    big = {"0.weight": [2, 6, 10, 17, 21, 29], "2.weight": [4, 28]}
    momentum = {}
    for n, s in shapes.items():
        m = torch.full((s[0] * s[1],), 0.001)
        mean = 3.0 if n == "0.weight" else 1.0
        for r, i in enumerate(act[n]):
            m[i] = mean + (0.5 if r % 2 else -0.5)  # mean |M| over the active ones: `mean`
        for r, i in enumerate(big[n]):
            m[i] = -(10.0 + r)  # the largest |M| among the inactive
        momentum[n] = m.view(s)
    log = record(sp)
    x = torch.randn(2, 8)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    for n in shapes:  # the momentum the update reads (the step's gradient is in, beta = 0)
        sp.momentum_of(n).copy_(momentum[n])
    stats = sp.step()
    assert stats is not None and stats["redistributed"] == 2.0
    assert counts(sp) == {"0.weight": 10, "2.weight": 6}
    for name, old, drop, grow in log:
        kept_idx = act[name][4:]  # the 4 largest |w| of the 8 active
        assert torch.equal(old & ~drop, _flat_positions(shapes[name], kept_idx)), name
        assert torch.equal(grow, _flat_positions(shapes[name], big[name])), name
        assert torch.equal(sp.masks[name], _flat_positions(shapes[name], kept_idx + big[name]))
        assert bool((dense_weight(sp, name)[grow] == 0).all())


def test_snfs_caps_a_layer_at_full_density_and_moves_the_excess_by_hand() -> None:
    """Layer A (4x2 = 8) with 6 active and mean |M| 9, layer B (16x4 = 64) with 10 active and
    mean |M| 1; p = 0.5 prunes 3 + 5 = 8; A's share 0.9 * 8 = 7.2 exceeds its 5 free positions:
    A regrows 5 (dense), B 3; counts 8 and 8."""
    shapes = {"0.weight": (4, 2), "2.weight": (16, 4)}
    act = {"0.weight": [0, 1, 2, 4, 5, 7], "2.weight": [0, 5, 9, 13, 20, 33, 40, 47, 58, 63]}
    masks = {n: _flat_positions(shapes[n], act[n]) for n in shapes}
    weights = {}
    for n, s in shapes.items():
        w = torch.zeros(s[0] * s[1])
        for r, i in enumerate(act[n], start=1):
            w[i] = 0.05 * r
        weights[n] = w.view(s)
    model, opt, sp = _snfs_with((2, 4, 16), masks, weights)
    opt.zero_grad()
    model(torch.randn(3, 2)).sum().backward()
    opt.step()
    for n, s in shapes.items():
        m = torch.linspace(0.01, 0.5, s[0] * s[1])  # inactive ones: increasing |M|
        m[act[n]] = 9.0 if n == "0.weight" else 1.0
        sp.momentum_of(n).copy_(m.view(s))
    sp.step()
    assert counts(sp) == {"0.weight": 8, "2.weight": 8}
    assert bool(sp.masks["0.weight"].all())
    kept_b = act["2.weight"][5:]
    inactive_b = [i for i in range(64) if i not in kept_b]  # just-pruned ones eligible too
    top3 = sorted(inactive_b, key=lambda i: -float(sp.momentum_of("2.weight").reshape(-1)[i]))[:3]
    assert top3 == [0, 5, 9]  # |M| 1.0 of the just-pruned beats the largest inactive 0.5
    assert torch.equal(sp.masks["2.weight"], _flat_positions((16, 4), kept_b + top3))


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_snfs_counts_move_but_sum_to_the_target_and_grow_the_top_momentum(
        execution: str) -> None:
    model = mlp(12, 24, 16, 6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = SNFS(model, opt, sparsity=0.85, t_end=40, update_every=4, execution=execution)
    target = sum(counts(sp).values())
    start = counts(sp)
    log = record(sp)
    updates = 0
    for x, y in batches(44, 12, 6):
        train_step(model, opt, x, y)
        momentum = {n: sp.momentum_of(n).abs().clone() for n in sp.params}
        weights = {n: dense_weight(sp, n).abs() for n in sp.params}
        before = counts(sp)
        log.clear()
        stats = sp.step()
        assert sum(counts(sp).values()) == target
        if stats is None:
            continue
        updates += 1
        rate = stats["drop_fraction"]
        for name, old, drop, grow in log:
            kept = old & ~drop
            assert int(drop.sum()) == min(floor_count(rate, before[name]), before[name] - 1), name
            w = weights[name]
            if bool(drop.any()):
                assert float(w[drop].max()) <= float(w[kept].min()), "not the smallest |w|"
            eligible = ~kept
            m = momentum[name]
            rest = eligible & ~grow
            if bool(grow.any()) and bool(rest.any()):
                assert float(m[grow].min()) >= float(m[rest].max()), "not the top |M|"
            assert torch.equal(sp.masks[name], kept | grow)
    assert updates == 10 and counts(sp) != start  # counts moved between layers


# --------------------------------------------------------------------------------------------
# both: grown weights and optimiser state, masked weights, resume, config runs
# --------------------------------------------------------------------------------------------
def build(method: str, optimizer: str, execution: str = "masked", seed: int = 0):
    model = mlp(10, 20, 12, 5, seed=seed)
    opt = OPTIMIZERS[optimizer](model.parameters())
    sp = sparsify(method, model, opt, sparsity=0.8, t_end=14, update_every=3,
                  execution=execution, seed=7)
    return model, opt, sp


@pytest.mark.parametrize("method", ["mest", "snfs"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_grown_weights_start_at_zero_with_reset_optimizer_state(method: str,
                                                                optimizer: str) -> None:
    model, opt, sp = build(method, optimizer)
    log = record(sp)
    updates = 0
    for x, y in batches(15, 10, 5):
        train_step(model, opt, x, y)
        log.clear()
        if sp.step() is None:
            continue
        updates += 1
        keys = ("momentum_buffer",) if optimizer == "momentum" else ("exp_avg", "exp_avg_sq")
        for name, _old, drop, grow in log:
            p = sp.params[name]
            assert bool((p.detach()[grow] == 0).all()), name
            for key in keys:
                s = opt.state[p][key]
                assert bool((s[grow] == 0).all()), (name, key)
                assert bool((s[drop] == 0).all()), (name, key)
    assert updates == 4


@pytest.mark.parametrize("method", ["mest", "snfs"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_masked_weights_are_exactly_zero_after_every_step(method: str, optimizer: str) -> None:
    for execution in EXECUTIONS if optimizer in ("momentum", "adamw") else ("masked",):
        model, opt, sp = build(method, optimizer, execution)
        for t, (x, y) in enumerate(batches(15, 10, 5), start=1):
            train_step(model, opt, x, y)
            for name in sp.params:
                assert bool((dense_weight(sp, name)[~sp.masks[name]] == 0).all()), (t, name)
            sp.step()
            for name in sp.params:
                assert bool((dense_weight(sp, name)[~sp.masks[name]] == 0).all()), (t, name)
        assert sp.updates == 4


@pytest.mark.parametrize("method", ["mest", "snfs"])
@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("stop", [5, 6])
def test_resume_mid_training_is_bit_exact(method: str, execution: str, stop: int) -> None:
    data = batches(16, 10, 5)
    model_a, opt_a, sp_a = build(method, "adam", execution)
    for x, y in data:
        train_step(model_a, opt_a, x, y)
        sp_a.step()

    model_b, opt_b, sp_b = build(method, "adam", execution)
    for x, y in data[:stop]:
        train_step(model_b, opt_b, x, y)
        sp_b.step()
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "optimizer": opt_b.state_dict(),
                "sparsifier": sp_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    model_c, opt_c, sp_c = build(method, "adam", execution, seed=99)  # another init
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["optimizer"])
    sp_c.load_state_dict(ckpt["sparsifier"])
    for x, y in data[stop:]:
        train_step(model_c, opt_c, x, y)
        sp_c.step()

    assert sp_c.step_count == sp_a.step_count and sp_c.updates == sp_a.updates == 4
    for name in sp_a.params:
        assert torch.equal(sp_a.masks[name], sp_c.masks[name]), name
        assert torch.equal(dense_weight(sp_a, name), dense_weight(sp_c, name)), name
        if method == "snfs":
            assert torch.equal(sp_a.momentum_of(name), sp_c.momentum_of(name)), name
    wa, wc = model_a.state_dict(), model_c.state_dict()
    assert wa.keys() == wc.keys() and all(torch.equal(wa[k], wc[k]) for k in wa)


BASE = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32",
        "train.batch_size=32", "train.duration=2ep", "data.heldout=32", "sparse.update_every=8",
        "sparsity=0.9"]


@pytest.mark.parametrize("method,extra", [("mest", []),
                                          ("mest", ["sparse.mest_lambda=0",
                                                    "sparse.mest_schedule=cosine"]),
                                          ("snfs", ["sparse.snfs_momentum=0.5"])])
def test_a_tiny_run_through_the_config_path_finishes(method: str, extra: list[str],
                                                     root) -> None:
    from sparseflow.config import load_config
    from sparseflow.store.checkpoint import load_checkpoint
    from sparseflow.training.run import execute

    s = execute(load_config(None, [*BASE, f"method={method}", *extra]), root=root,
                progress=False)
    assert s["status"] == "finished" and s["mask_updates"] > 0
    masks = load_checkpoint(s["checkpoint"])["callbacks"]["sparsifier"]["masks"]
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    model = load_checkpoint(s["checkpoint"])["model"]
    for name, m in masks.items():
        assert torch.all(model[name][~m] == 0), name


@pytest.mark.parametrize("method", ["mest", "snfs"])
def test_an_interrupted_run_resumes_exactly_through_its_checkpoints(method: str, root, tmp_path,
                                                                    stop_after) -> None:
    """Stopped after step 20 (between mask updates), resumed from the run's own checkpoint:
    the same masks and weights as an uninterrupted run (SNFS: momentum restored)."""
    from sparseflow.config import load_config
    from sparseflow.store.checkpoint import load_checkpoint
    from sparseflow.training.run import execute

    cfg = load_config(None, [*BASE, f"method={method}", "train.checkpoint_every=10it",
                             "optim.name=adam", "optim.lr=0.003"])
    full = execute(cfg, root=tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(20)])
    said: list[str] = []
    resumed = execute(cfg, root=root, progress=False, echo=said.append)
    assert any("from step 20" in line for line in said), said
    assert resumed["steps"] == full["steps"] and resumed["mask_updates"] == full["mask_updates"]
    a, b = load_checkpoint(resumed["checkpoint"]), load_checkpoint(full["checkpoint"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    sa, sb = a["callbacks"]["sparsifier"], b["callbacks"]["sparsifier"]
    assert all(torch.equal(sa["masks"][n], sb["masks"][n]) for n in sb["masks"])
    if method == "snfs":
        assert all(torch.equal(sa["momentum"][n], sb["momentum"][n]) for n in sb["momentum"])

