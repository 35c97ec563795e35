"""Unit tests of the sparse-training methods: drop-fraction schedules, the Zhu & Gupta schedule,
gradual / one-shot pruning steps, ``magnitude_masks`` and the one-line ValueErrors.

The bugs these tests found while being written are fixed; the tests keep them fixed.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.methods import (
    SET,
    GradualPruning,
    OneShotPruning,
    RigL,
    RigLInverted,
    Sparsifier,
    magnitude_masks,
    sparsify,
    zhu_gupta_sparsity,
)
from sparseflow.sparsity import floor_count, layer_counts
from sparseflow.sparsity.optim_state import positions_mask


def mlp(*widths: int, seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        return nn.Sequential(*layers)


def batches(n: int, n_in: int, n_out: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, n_in, generator=g), torch.randint(0, n_out, (8,), generator=g))
            for _ in range(n)]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def record(sp: Sparsifier) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """Log (name, old mask, grow set) of every ``replace_mask`` / ``replace_positions`` call."""
    log: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    orig, orig_positions = sp.replace_mask, sp.replace_positions

    def replace_mask(name, new, *, zero=None):
        log.append((name, sp.masks[name].clone(), None if zero is None else zero.clone()))
        orig(name, new, zero=zero)

    def replace_positions(name, drop, grow):
        log.append((name, sp.masks[name].clone(), positions_mask(grow, sp.params[name])))
        orig_positions(name, drop, grow)

    sp.replace_mask = replace_mask  # type: ignore[method-assign]
    sp.replace_positions = replace_positions  # type: ignore[method-assign]
    return log


def dropped_per_layer(sp: Sparsifier, log) -> dict[str, int]:
    """Number dropped by magnitude per layer: old active minus kept (new minus grown)."""
    out = {}
    for name, old, grow in log:
        kept = sp.masks[name] & ~grow
        out[name] = int((old & ~kept).sum())
    return out


def one_line_value_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


# --------------------------------------------------------------------------------------------
# 9. drop-fraction schedules
# --------------------------------------------------------------------------------------------
def test_cosine_drop_fraction_values() -> None:
    model = mlp(6, 5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = SET(model, opt, sparsity=0.5, t_end=100, drop_fraction=0.3)  # cosine by default
    assert sp.drop_schedule == "cosine"
    for t in (0, 1, 25, 50, 73, 99, 100):
        want = 0.3 * (1.0 + math.cos(math.pi * t / 100)) / 2.0
        assert sp.drop_fraction_at(t) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert sp.drop_fraction_at(0) == pytest.approx(0.3)
    assert sp.drop_fraction_at(50) == pytest.approx(0.15)
    assert sp.drop_fraction_at(100) == pytest.approx(0.0, abs=1e-15)
    assert sp.drop_fraction_at(150) == pytest.approx(0.0, abs=1e-15)  # no negative fractions


def test_constant_drop_fraction_values() -> None:
    model = mlp(6, 5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = SET(model, opt, sparsity=0.5, t_end=100, drop_fraction=0.25, drop_schedule="constant")
    assert all(sp.drop_fraction_at(t) == 0.25 for t in (0, 1, 50, 100, 1000))


@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_number_dropped_per_layer_is_floor_alpha_t_times_active(method: str, schedule: str
                                                                 ) -> None:
    model = mlp(12, 20, 10, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsify(method, model, opt, sparsity=0.7, distribution="erk", t_end=16,
                  update_every=2, drop_fraction=0.45, drop_schedule=schedule)
    seen = 0
    log = record(sp)
    for t, (x, y) in enumerate(batches(20, 12, 4), start=1):
        train_step(model, opt, x, y)
        active = sp.masks.nnz()
        log.clear()
        stats = sp.step()
        if stats is None:
            assert t % 2 or t > 16
            continue
        alpha = sp.drop_fraction_at(t)
        assert stats["drop_fraction"] == alpha
        got = dropped_per_layer(sp, log)
        for name, n_active in active.items():
            k = floor_count(alpha, n_active)  # floor(alpha_t * n_active), noise snapped
            assert got.get(name, 0) == k, (t, name)
            seen += k
            assert stats[f"dropped/{name}"] <= k  # telemetry leaves out the regrown ones
    assert seen > 0


@pytest.mark.parametrize("exclude_dropped", [False, True])
def test_set_drops_and_grows_29_of_100_at_drop_fraction_029(exclude_dropped: bool) -> None:
    """0.29 * 100 is 28.999999999999996 in floats; floor(alpha * n_active) means 29 here."""
    want = math.floor(Fraction("0.29") * 100)  # exact: 29
    model = mlp(20, 10)  # one Linear layer of 200 weights
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start = torch.zeros(200, dtype=torch.bool)
    start[torch.randperm(200, generator=torch.Generator().manual_seed(0))[:100]] = True
    sp = SET(model, opt, masks={"0.weight": start.view(10, 20)}, t_end=1, update_every=1,
             drop_fraction=0.29, drop_schedule="constant", exclude_dropped=exclude_dropped)
    assert sp.masks.nnz() == {"0.weight": 100}
    sizes = []
    orig = sp.replace_positions

    def replace_positions(name, drop, grow):
        sizes.append((drop.numel(), grow.numel()))
        orig(name, drop, grow)

    sp.replace_positions = replace_positions  # type: ignore[method-assign]
    old = sp.masks["0.weight"].clone()
    x, y = batches(1, 20, 10)[0]
    train_step(model, opt, x, y)
    stats = sp.step()
    assert stats is not None and stats["drop_fraction"] == 0.29
    assert sizes == [(want, want)]  # 29 dropped and 29 grown
    new = sp.masks["0.weight"]
    assert int(new.sum()) == 100
    if exclude_dropped:  # no regrowth: the mask itself moved 29 positions out and 29 in
        assert int((old & ~new).sum()) == want and int((new & ~old).sum()) == want
        assert stats["dropped/0.weight"] == stats["grown/0.weight"] == want


def test_lr_drop_fraction_follows_a_torch_scheduler() -> None:
    model = mlp(12, 20, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sp = RigL(model, opt, sparsity=0.6, t_end=30, update_every=1, drop_fraction=0.4,
              drop_schedule="lr")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    lrs = []
    log = record(sp)
    for t, (x, y) in enumerate(batches(12, 12, 4), start=1):
        train_step(model, opt, x, y)
        lr_t = opt.param_groups[0]["lr"]
        lrs.append(lr_t)
        active = sp.masks.nnz()
        log.clear()
        stats = sp.step()
        assert stats is not None
        assert sp.drop_fraction_at(t) == pytest.approx(0.4 * lr_t / 0.2, rel=1e-12)
        assert stats["drop_fraction"] == pytest.approx(0.4 * lr_t / 0.2, rel=1e-12)
        got = dropped_per_layer(sp, log)
        for name, n in active.items():
            assert got.get(name, 0) == floor_count(sp.drop_fraction_at(t), n)
        sched.step()
    assert lrs[0] == 0.2 and lrs[-1] == pytest.approx(0.2 / 8)


def test_lr_drop_fraction_with_the_lr_set_by_hand() -> None:
    model = mlp(12, 20, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sp = SET(model, opt, sparsity=0.6, t_end=30, update_every=1, drop_fraction=0.3,
             drop_schedule="lr")
    for t, lr in enumerate((0.01, 0.005, 0.0025, 0.0, 0.02), start=1):
        for group in opt.param_groups:
            group["lr"] = lr
        assert sp.drop_fraction_at(t) == pytest.approx(0.3 * lr / 0.01, rel=1e-12)
    for group in opt.param_groups:
        group["lr"] = 0.0
    opt.step()
    before = sp.masks.state_dict()
    assert sp.step() is not None
    assert all(torch.equal(before[n], m) for n, m in sp.masks.masks.items())  # alpha = 0


# --------------------------------------------------------------------------------------------
# 10. Zhu & Gupta schedule, gradual and one-shot pruning
# --------------------------------------------------------------------------------------------
def test_zhu_gupta_sparsity_by_hand() -> None:
    def s(t):
        return zhu_gupta_sparsity(t, 0.1, 0.9, 10, 30)

    assert s(0) == pytest.approx(0.1)  # before t_begin: s_i
    assert s(10) == pytest.approx(0.1)  # begin
    assert s(15) == pytest.approx(0.9 + (0.1 - 0.9) * 0.75**3)
    assert s(20) == pytest.approx(0.8)  # middle: 0.9 - 0.8 / 8
    assert s(30) == pytest.approx(0.9)  # end
    assert s(31) == pytest.approx(0.9) and s(10**6) == pytest.approx(0.9)  # after: s_f
    values = [s(t) for t in range(0, 40)]
    assert values == sorted(values)  # monotone
    # t_begin == t_end: a step function
    assert zhu_gupta_sparsity(4, 0.0, 0.8, 5, 5) == 0.0
    assert zhu_gupta_sparsity(5, 0.0, 0.8, 5, 5) == pytest.approx(0.8)
    assert zhu_gupta_sparsity(6, 0.0, 0.8, 5, 5) == pytest.approx(0.8)


def test_gradual_pruning_is_due_exactly_on_its_schedule() -> None:
    model = mlp(10, 8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = GradualPruning(model, opt, sparsity=0.8, t_begin=10, t_end=30, every=3)
    assert [t for t in range(0, 200) if sp.due(t)] == [10, 13, 16, 19, 22, 25, 28, 30]
    sp2 = GradualPruning(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.8,
                         t_begin=10, t_end=30, every=5)
    assert [t for t in range(0, 200) if sp2.due(t)] == [10, 15, 20, 25, 30]


def test_gradual_pruning_steps_and_counts_in_a_training_loop() -> None:
    model = mlp(10, 16, 12, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = GradualPruning(model, opt, sparsity=0.75, t_begin=3, t_end=11, every=4)
    shapes = {n: tuple(p.shape) for n, p in sp.params.items()}
    assert sp.masks.nnz() == {n: math.prod(s) for n, s in shapes.items()}  # starts dense
    pruned = []
    for t, (x, y) in enumerate(batches(20, 10, 4), start=1):
        train_step(model, opt, x, y)
        stats = sp.step()
        if stats is not None:
            pruned.append(t)
            assert sp.masks.nnz() == layer_counts(shapes, sp.target(t), "uniform")
    assert pruned == [3, 7, 11]
    assert sp.masks.nnz() == layer_counts(shapes, 0.75, "uniform")


def test_oneshot_prunes_once_by_magnitude() -> None:
    model = mlp(10, 16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = OneShotPruning(model, opt, sparsity=0.8, t_prune=5)
    shapes = {n: tuple(p.shape) for n, p in sp.params.items()}
    masks_over_time = []
    for t, (x, y) in enumerate(batches(12, 10, 4), start=1):
        train_step(model, opt, x, y)
        w_before = {n: p.detach().clone() for n, p in sp.params.items()}
        stats = sp.step()
        assert (stats is not None) == (t == 5)
        if t < 5:
            assert all(bool(m.all()) for m in sp.masks.masks.values())
        if t == 5:
            assert sp.masks.nnz() == layer_counts(shapes, 0.8, "uniform")
            for n, m in sp.masks.masks.items():  # the largest |w| survive (brute force)
                order = torch.sort(w_before[n].abs().reshape(-1), descending=True,
                                   stable=True).indices
                want = torch.zeros(m.numel(), dtype=torch.bool)
                want[order[: int(m.sum())]] = True
                assert torch.equal(m.reshape(-1), want)
        masks_over_time.append(sp.masks.state_dict())
    assert sp.updates == 1
    assert all(torch.equal(masks_over_time[4][n], masks_over_time[-1][n])
               for n in masks_over_time[-1])


def test_oneshot_at_step_zero_prunes() -> None:
    model = mlp(10, 16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = OneShotPruning(model, opt, sparsity=0.8, t_prune=0)
    for x, y in batches(3, 10, 4):
        train_step(model, opt, x, y)
        sp.step()
    assert sp.masks.sparsity() == pytest.approx(0.8, abs=0.01)


def test_gradual_per_layer_counts_follow_monotone_targets() -> None:
    """A case where the exact-total rounding of layer_counts would ask a layer to regrow."""
    model = nn.Sequential(nn.Linear(37, 18), nn.Linear(21, 3), nn.Linear(25, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sf = 0.43673007811735287
    sp = GradualPruning(model, opt, sparsity=sf, t_begin=0, t_end=7, every=1)
    shapes = {n: tuple(p.shape) for n, p in sp.params.items()}
    for t in range(1, 8):
        opt.step()
        sp.step()
        want = layer_counts(shapes, sp.target(t), "uniform", exact_total=False)
        assert sp.masks.nnz() == want, t
        total = sum(math.prod(v) for v in shapes.values())
        assert abs(sum(want.values()) - (1 - sp.target(t)) * total) <= len(shapes)


# --------------------------------------------------------------------------------------------
# 11. magnitude_masks
# --------------------------------------------------------------------------------------------
def brute_force_global(params: dict[str, torch.Tensor], k: int,
                       within: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    flat = torch.cat([p.detach().abs().reshape(-1) for p in params.values()])
    if within is not None:
        ok = torch.cat([within[n].reshape(-1) for n in params])
        flat = torch.where(ok, flat, torch.tensor(-1.0))
    order = torch.sort(flat, descending=True, stable=True).indices  # ties: lower index first
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    out, i = {}, 0
    for n, p in params.items():
        out[n] = keep[i: i + p.numel()].view(p.shape)
        i += p.numel()
    return out


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.55, 0.9, 0.97])
@pytest.mark.parametrize("ties", [False, True])
def test_global_magnitude_masks_match_brute_force(sparsity: float, ties: bool) -> None:
    g = torch.Generator().manual_seed(int(sparsity * 100) + ties)
    shapes = [(7, 5), (4, 3, 2, 2), (3, 9)]

    def draw(shape):
        return (torch.randint(-3, 4, shape, generator=g).float() if ties
                else torch.randn(shape, generator=g))

    params = {f"l{i}": draw(s) for i, s in enumerate(shapes)}
    total = sum(p.numel() for p in params.values())
    # round((1 - s) * total) in exact arithmetic (0.45 * 110 = 49.5 exactly: 50 by either tie
    # rule, though the float product is 49.4999...)
    k = math.floor((1 - Fraction(str(sparsity))) * total + Fraction(1, 2))
    got = magnitude_masks(params, sparsity, scope="global")
    assert sum(int(m.sum()) for m in got.values()) == k
    want = brute_force_global(params, k)
    assert all(torch.equal(got[n], want[n]) for n in params)
    # the kept |w| are the k largest
    kept = torch.cat([params[n].abs()[got[n]] for n in params])
    dropped = torch.cat([params[n].abs()[~got[n]] for n in params])
    if kept.numel() and dropped.numel():
        assert float(kept.min()) >= float(dropped.max())


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_masks_within_never_regrows(scope: str) -> None:
    g = torch.Generator().manual_seed(3)
    params = {"a": torch.randn(6, 8, generator=g), "b": torch.randn(5, 4, generator=g)}
    within = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in params.items()}
    # the inactive weights are the largest: a regrowing implementation would pick them
    big = {n: torch.where(within[n], p, 100.0 + p.abs()) for n, p in params.items()}
    for s in (0.1, 0.5, 0.8, 0.95):
        got = magnitude_masks(big, s, scope=scope, within=within)
        for n in params:
            assert not bool((got[n] & ~within[n]).any()), (s, n)
        if scope == "global":
            total = sum(p.numel() for p in params.values())
            k = min(math.floor((1 - s) * total + 0.5),
                    sum(int(w.sum()) for w in within.values()))
            assert sum(int(m.sum()) for m in got.values()) == k
            want = brute_force_global(big, k, within)
            assert all(torch.equal(got[n], want[n]) for n in params)
        else:
            counts = layer_counts({n: p.shape for n, p in params.items()}, s, "uniform",
                                  exact_total=False)
            for n in params:  # each layer's own target, capped at what it still has
                assert int(got[n].sum()) == min(counts[n], int(within[n].sum()))


def test_global_scope_rounds_the_budget_like_layer_counts() -> None:
    params = {"a": torch.randn(5, 1), "b": torch.randn(5, 1)}  # total 10, (1 - 0.35) * 10 = 6.5
    glob = magnitude_masks(params, 0.35, scope="global")
    budget = sum(layer_counts({n: p.shape for n, p in params.items()}, 0.35, "uniform").values())
    assert sum(int(m.sum()) for m in glob.values()) == budget == 7  # half up, not half to even


# --------------------------------------------------------------------------------------------
# 12. bad input: one-line ValueErrors
# --------------------------------------------------------------------------------------------
FACTORIES = {
    "static": lambda m, o, **kw: sparsify("static", m, o, **kw),
    "set": lambda m, o, **kw: sparsify("set", m, o, t_end=10, **kw),
    "rigl": lambda m, o, **kw: sparsify("rigl", m, o, t_end=10, **kw),
    "rigl_inverted": lambda m, o, **kw: sparsify("rigl_inverted", m, o, t_end=10, **kw),
    "gradual": lambda m, o, **kw: sparsify("gradual", m, o, t_begin=1, t_end=5, **kw),
    "oneshot": lambda m, o, **kw: sparsify("oneshot", m, o, t_prune=3, **kw),
}


def fresh():
    model = mlp(6, 5, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("method", list(FACTORIES))
@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_out_of_range(method: str, sparsity: float) -> None:
    with pytest.raises(ValueError, match="sparsity") as e:
        FACTORIES[method](*fresh(), sparsity=sparsity)
    one_line_value_error(e)


@pytest.mark.parametrize("method", ["static", "set", "rigl", "rigl_inverted"])
def test_unknown_distribution(method: str) -> None:
    with pytest.raises(ValueError, match="distribution") as e:
        FACTORIES[method](*fresh(), sparsity=0.5, distribution="gaussian")
    assert "erk" in one_line_value_error(e)


@pytest.mark.parametrize("method", ["gradual", "oneshot"])
def test_unknown_distribution_pruning_fails_at_construction(method: str) -> None:
    with pytest.raises(ValueError, match="distribution"):
        FACTORIES[method](*fresh(), sparsity=0.5, distribution="gaussian")


@pytest.mark.parametrize("method", ["set", "rigl", "rigl_inverted"])
def test_unknown_drop_schedule_and_bad_dynamic_options(method: str) -> None:
    for kwargs, field in (({"drop_schedule": "linear"}, "drop_schedule"),
                          ({"drop_fraction": 1.5}, "drop_fraction"),
                          ({"drop_fraction": -0.1}, "drop_fraction"),
                          ({"update_every": 0}, "update_every")):
        with pytest.raises(ValueError, match=field) as e:
            FACTORIES[method](*fresh(), sparsity=0.5, **kwargs)
        one_line_value_error(e)
    with pytest.raises(ValueError, match="t_end") as e:
        sparsify(method, *fresh(), sparsity=0.5, t_end=0)
    one_line_value_error(e)


def test_bad_pruning_options() -> None:
    for kwargs, field in (({"scope": "block"}, "scope"), ({"every": 0}, "every"),
                          ({"t_begin": 5, "t_end": 2}, "pruning steps"),
                          ({"t_begin": -1, "t_end": 2}, "pruning steps"),
                          ({"initial_sparsity": 0.9}, "initial_sparsity")):
        args = {"sparsity": 0.5, "t_begin": 1, "t_end": 5, **kwargs}
        with pytest.raises(ValueError, match=field) as e:
            GradualPruning(*fresh(), **args)
        one_line_value_error(e)
    with pytest.raises(ValueError, match="scope") as e:
        magnitude_masks({"a": torch.randn(3, 3)}, 0.5, scope="block")
    one_line_value_error(e)


def test_unknown_method_and_init() -> None:
    with pytest.raises(ValueError, match="method") as e:
        sparsify("rigl2", *fresh(), sparsity=0.5)
    assert "rigl" in one_line_value_error(e)
    with pytest.raises(ValueError, match="init") as e:
        sparsify("static", *fresh(), sparsity=0.5, init="xavier")
    one_line_value_error(e)


@pytest.mark.parametrize("cls", [RigL, RigLInverted])
def test_rigl_without_gradient_at_an_update_step_raises_one_line(cls) -> None:
    model, opt = fresh()
    sp = cls(model, opt, sparsity=0.5, t_end=10, update_every=2)
    x, y = batches(1, 6, 3)[0]
    train_step(model, opt, x, y)  # step 1: not an update, fine
    assert sp.step() is None
    opt.zero_grad(set_to_none=True)
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises((ValueError, RuntimeError), match="grad") as e:
        opt.step()  # step 2 is an update step and there is no gradient
    one_line_value_error(e)
    assert "0.weight" in str(e.value)
    assert all(torch.equal(w[n], p) for n, p in model.named_parameters())
    # calling sparsifier.step() at an update step without optimizer.step() also refuses
    sp2 = cls(*fresh(), sparsity=0.5, t_end=10, update_every=1)
    with pytest.raises((ValueError, RuntimeError), match="grad") as e:
        sp2.step()
    one_line_value_error(e)


def test_rigl_without_gradient_raises_value_error() -> None:
    model, opt = fresh()
    RigL(model, opt, sparsity=0.5, t_end=10, update_every=1)
    with pytest.raises(ValueError):
        opt.step()


def test_rigl_with_grad_fn_needs_no_gradient() -> None:
    model, opt = fresh()
    params = dict(model.named_parameters())
    sp = RigL(model, opt, sparsity=0.5, t_end=10, update_every=1,
              grad_fn=lambda: {n: torch.randn(params[n].shape)
                               for n in ("0.weight", "2.weight")})
    opt.step()
    assert sp.step() is not None


def test_mask_shapes_not_matching() -> None:
    model, opt = fresh()
    bad = {"0.weight": torch.ones(5, 5, dtype=torch.bool),
           "2.weight": torch.ones(3, 5, dtype=torch.bool)}
    with pytest.raises(ValueError, match="shape") as e:
        Sparsifier(model, opt, sparsity=0.5, masks=bad)
    assert "0.weight" in one_line_value_error(e)
    with pytest.raises(ValueError, match="missing") as e:
        Sparsifier(*fresh(), sparsity=0.5, masks={"0.weight": torch.ones(5, 6, dtype=bool)})
    one_line_value_error(e)
    # a saved state with the wrong shapes is refused before anything changes
    sp = SET(*fresh(), sparsity=0.5, t_end=10)
    state = sp.state_dict()
    before = sp.masks.state_dict()
    state["masks"] = dict(state["masks"], **{"2.weight": torch.ones(4, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape") as e:
        sp.load_state_dict(state)
    one_line_value_error(e)
    assert all(torch.equal(before[n], m) for n, m in sp.masks.masks.items())


def test_rigl_sees_the_dense_gradient_only_at_update_steps() -> None:
    """Gradients are masked in backward except before an update step, where RigL scores the
    dense gradient of the batch; a resumed sparsifier defers at the same steps."""
    model, opt = fresh()
    sp = RigL(model, opt, sparsity=0.6, t_end=100, update_every=3, drop_schedule="constant")
    params = dict(model.named_parameters())
    captured = []
    orig = sp.prepare_scores

    def spy() -> None:
        orig()
        assert sp._dense_grads is not None
        captured.append({n: g.clone() for n, g in sp._dense_grads.items()})

    sp.prepare_scores = spy  # type: ignore[method-assign]
    for step, (x, y) in enumerate(batches(7, 6, 3), start=1):
        masks = {n: sp.masks[n].clone() for n in sp.masks}
        dense = dict(zip(masks, torch.autograd.grad(
            F.cross_entropy(model(x), y), [params[n] for n in masks]), strict=True))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, m in masks.items():  # after backward, before the step
            want = dense[n] if step % 3 == 0 else dense[n] * m
            assert torch.allclose(params[n].grad, want, atol=1e-7), (step, n)
        opt.step()
        for n, m in masks.items():  # the step itself always saw masked gradients
            assert bool((params[n][~m] == 0).all())
        sp.step()
        if step % 3 == 0:  # the update scored the dense gradient of this step's batch
            assert all(torch.allclose(captured[-1][n], dense[n], atol=1e-7) for n in masks)
    assert len(captured) == 2
    resumed = RigL(*fresh(), sparsity=0.6, t_end=100, update_every=3)
    assert resumed.masks.defer_grad_masking is False  # step 1 is not an update step
    resumed.load_state_dict(sp.state_dict())  # step 7 done: step 8 is not one either
    assert resumed.masks.defer_grad_masking is False
    state = sp.state_dict()
    state["step"] = 8
    resumed.load_state_dict(state)
    assert resumed.masks.defer_grad_masking is True
