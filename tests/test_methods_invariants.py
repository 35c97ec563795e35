"""Property tests of the sparse-training methods (docs/science.md section 3 invariants).

Random small models (MLPs of 1-3 Linear layers, a Conv2d -> Linear net), sparsities in
[0, 0.98], distributions uniform / er / erk, many torch optimisers, frequent topology updates:

1. exact per-layer non-zero counts at init and after every update (static, SET, RigL keep the
   distribution's counts; gradual pruning follows its schedule);
2. no masked weight is ever non-zero after ``optimizer.step()`` + ``sparsifier.step()``;
3. grown weights are exactly zero right after their update, with their optimiser state reset;
4. just-dropped weights may be regrown (default) or not (``exclude_dropped=True``);
5. RigL grows the largest |dense grad| (RigL inverted the smallest, SET uniformly at random),
   every method drops the smallest |w| (brute force);
6. determinism: same seed, same masks; ties go to the lower flat index;
7. ER/ERK counts sum to the budget exactly;
8. resume through ``torch.save`` / ``torch.load(weights_only=True)`` is exact.

Every setup is drawn in both executions (``masked`` and ``sparse``, where the Linear weights,
their gradients and optimiser state are held as the active values in row-major order: the
helpers below lay those out densely by hand, absent positions at the state's initial value).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.methods import (
    SET,
    GradualPruning,
    RigL,
    RigLInverted,
    Sparsifier,
    sparsify,
)
from sparseflow.sparsity import floor_count, kept_count, layer_counts, select_weights
from sparseflow.sparsity.optim_state import positions_mask

MASKING = ("auto", "grads", "weights", "both")
EXECUTIONS = ("masked", "sparse")

PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPATIAL = 5  # conv nets see SPATIAL x SPATIAL inputs
BATCH = 6
DISTRIBUTIONS = ("uniform", "er", "erk")
DYNAMIC = ("set", "rigl", "rigl_inverted")

# name -> factory; coupled L2 (SGD/Adam weight_decay), decoupled (AdamW), momentum, Adam
# state, RMSprop (momentum + centered: three state tensors), Adagrad (non-zero initial sum)
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "sgd_l2": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_l2_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.25),
}


# --------------------------------------------------------------------------------------------
# models, data, training
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """``mlp``: widths = (in, h1, ..., out); ``conv``: widths = (c_in, c_out, kernel, n_out)."""

    kind: str
    widths: tuple[int, ...]

    def build(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.kind == "mlp":
                layers: list[nn.Module] = []
                for i in range(len(self.widths) - 1):
                    if i:
                        layers.append(nn.ReLU())
                    layers.append(nn.Linear(self.widths[i], self.widths[i + 1]))
                return nn.Sequential(*layers)
            c_in, c_out, k, n_out = self.widths
            side = SPATIAL - k + 1
            return nn.Sequential(nn.Conv2d(c_in, c_out, k), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(c_out * side * side, n_out))

    def shapes(self) -> list[tuple[int, ...]]:
        if self.kind == "mlp":
            return [(b, a) for a, b in zip(self.widths[:-1], self.widths[1:], strict=True)]
        c_in, c_out, k, n_out = self.widths
        side = SPATIAL - k + 1
        return [(c_out, c_in, k, k), (n_out, c_out * side * side)]

    @property
    def n_out(self) -> int:
        return self.widths[-1]

    def batches(self, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        shape = (BATCH, self.widths[0]) if self.kind == "mlp" else (
            BATCH, self.widths[0], SPATIAL, SPATIAL)
        return [(torch.randn(shape, generator=g),
                 torch.randint(0, self.n_out, (BATCH,), generator=g)) for _ in range(n)]


def model_specs() -> st.SearchStrategy[ModelSpec]:
    mlp = st.lists(st.integers(3, 40), min_size=2, max_size=4).map(
        lambda w: ModelSpec("mlp", tuple(w)))
    conv = st.tuples(st.integers(1, 3), st.integers(2, 6), st.integers(1, 3),
                     st.integers(2, 5)).map(lambda w: ModelSpec("conv", w))
    return st.one_of(mlp, conv)


def feasible(spec: ModelSpec, sparsity: float) -> float:
    """Clamp ``sparsity`` so that every layer can keep >= 1 weight (layer_counts' rule)."""
    shapes = spec.shapes()
    total = sum(math.prod(s) for s in shapes)
    return min(sparsity, max(0.0, 1.0 - (len(shapes) + 1) / total))


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
             ) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def initial_value(opt: torch.optim.Optimizer, key: str, p: torch.Tensor) -> float:
    """The value a per-weight state tensor starts from (written independently of the code)."""
    if isinstance(opt, torch.optim.Adagrad) and key == "sum":
        group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
        return float(group["initial_accumulator_value"])
    return 0.0


def shaped_state(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v for k, v in opt.state.get(p, {}).items()
            if isinstance(v, torch.Tensor) and k != "step" and v.shape == p.shape}


def laid_out(values: torch.Tensor, mask: torch.Tensor, fill: float) -> torch.Tensor:
    """A tensor of the mask's shape: ``values`` (a dense tensor, or the active entries in
    row-major order, as sparse execution holds them) with ``fill`` at inactive positions."""
    if values.shape == mask.shape:
        return values.detach()
    out = torch.full(mask.shape, fill, dtype=values.dtype)
    out[mask] = values.detach()
    return out


def dense_weight(sp: Sparsifier, name: str) -> torch.Tensor:
    """The weight ``name`` as a dense tensor, whatever the execution."""
    return laid_out(sp.execution.parameter(name), sp.masks[name], 0.0)


def dense_state(opt: torch.optim.Optimizer, sp: Sparsifier, name: str
                ) -> dict[str, torch.Tensor]:
    """Per-weight optimiser state of ``name``, laid out densely (absent = initial value)."""
    p, mask = sp.execution.parameter(name), sp.masks[name]
    return {k: laid_out(v, mask, initial_value(opt, k, p))
            for k, v in opt.state.get(p, {}).items()
            if isinstance(v, torch.Tensor) and k != "step" and v.shape in (p.shape, mask.shape)}


def record_grow_sets(sp: Sparsifier) -> list[tuple[str, torch.Tensor | None]]:
    """Wrap ``sp.replace_mask`` / ``replace_positions`` to log the grow set of every change."""
    log: list[tuple[str, torch.Tensor | None]] = []
    orig, orig_positions = sp.replace_mask, sp.replace_positions

    def replace_mask(name: str, new: torch.Tensor, *, zero: torch.Tensor | None = None) -> None:
        log.append((name, None if zero is None else zero.clone()))
        orig(name, new, zero=zero)

    def replace_positions(name: str, drop: torch.Tensor, grow: torch.Tensor) -> None:
        log.append((name, positions_mask(grow, sp.params[name])))
        orig_positions(name, drop, grow)

    sp.replace_mask = replace_mask  # type: ignore[method-assign]
    sp.replace_positions = replace_positions  # type: ignore[method-assign]
    return log


@dataclass
class Setup:
    spec: ModelSpec
    method: str
    sparsity: float
    distribution: str
    optimizer: str
    steps: int
    update_every: int = 1
    drop_fraction: float = 0.3
    drop_schedule: str = "constant"
    masking: str = "auto"
    execution: str = "masked"
    exclude_dropped: bool = False
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"sparsity": self.sparsity, "distribution": self.distribution,
                              "seed": self.seed, "masking": self.masking,
                              "execution": self.execution}
        if self.method in DYNAMIC:
            kw.update(t_end=self.steps, update_every=self.update_every,
                      drop_fraction=self.drop_fraction, drop_schedule=self.drop_schedule,
                      exclude_dropped=self.exclude_dropped)
        kw.update(self.extra)
        return kw

    def build(self, model_seed: int | None = None
              ) -> tuple[nn.Module, torch.optim.Optimizer, Sparsifier]:
        model = self.spec.build(self.seed if model_seed is None else model_seed)
        opt = OPTIMIZERS[self.optimizer](model.parameters())
        return model, opt, sparsify(self.method, model, opt, **self.kwargs())

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.spec.batches(self.steps, self.seed + 1)


@st.composite
def setups(draw: st.DrawFn, methods: tuple[str, ...] = ("static", *DYNAMIC),
           optimizers: tuple[str, ...] = tuple(OPTIMIZERS), min_steps: int = 6,
           max_steps: int = 14) -> Setup:
    spec = draw(model_specs())
    return Setup(
        spec=spec,
        method=draw(st.sampled_from(methods)),
        sparsity=feasible(spec, draw(st.floats(0.0, 0.98))),
        distribution=draw(st.sampled_from(DISTRIBUTIONS)),
        optimizer=draw(st.sampled_from(optimizers)),
        steps=draw(st.integers(min_steps, max_steps)),
        update_every=draw(st.integers(1, 5)),
        drop_fraction=draw(st.floats(0.05, 0.6)),
        drop_schedule=draw(st.sampled_from(("constant", "cosine"))),
        masking=draw(st.sampled_from(MASKING)),
        execution=draw(st.sampled_from(EXECUTIONS)),
        exclude_dropped=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def assert_masked_zero(sp: Sparsifier, where: str) -> None:
    for name in sp.params:
        off = dense_weight(sp, name)[~sp.masks[name]]
        assert bool((off == 0).all()), (
            f"{where}: {int((off != 0).sum())} masked weights of {name} are non-zero")


# --------------------------------------------------------------------------------------------
# 1. exact counts
# --------------------------------------------------------------------------------------------
@PROPERTY
@given(cfg=setups())
def test_counts_exact_at_init_and_after_every_update(cfg: Setup) -> None:
    model, opt, sp = cfg.build()
    want = layer_counts(sp.shapes, cfg.sparsity,
                        cfg.distribution)
    assert sp.masks.nnz() == want
    updates = 0
    for x, y in cfg.batches():
        sgd_step(model, opt, x, y)
        stats = sp.step()
        updates += stats is not None
        assert sp.masks.nnz() == want
        assert all(m.dtype == torch.bool for m in sp.masks.masks.values())
    expected = 0 if cfg.method == "static" else cfg.steps // cfg.update_every
    assert updates == sp.updates == expected


@st.composite
def gradual_setups(draw: st.DrawFn) -> tuple[Setup, dict[str, Any]]:
    spec = draw(model_specs())
    final = feasible(spec, draw(st.floats(0.05, 0.98)))
    initial = draw(st.sampled_from((0.0, 0.5))) * final
    t_begin = draw(st.integers(0, 4))
    t_end = max(1, t_begin + draw(st.integers(0, 8)))  # t_end = 0: see the units file
    every = draw(st.integers(1, 3))
    extra = {"initial_sparsity": initial, "t_begin": t_begin, "t_end": t_end, "every": every,
             "scope": draw(st.sampled_from(("layer", "global")))}
    cfg = Setup(spec=spec, method="gradual", sparsity=final,
                distribution=draw(st.sampled_from(DISTRIBUTIONS)),
                optimizer=draw(st.sampled_from(tuple(OPTIMIZERS))), steps=t_end + 3,
                masking=draw(st.sampled_from(MASKING)), seed=draw(st.integers(0, 2**16)),
                execution=draw(st.sampled_from(EXECUTIONS)),
                extra=extra)
    return cfg, extra


def schedule_counts(sp: GradualPruning, s: float) -> dict[str, int] | int:
    """Per-layer counts (layer scope) or the total (global scope) of sparsity ``s``."""
    shapes = sp.shapes
    if sp.scope == "layer":  # each layer rounded on its own: monotone in s
        return layer_counts(shapes, s, sp.distribution, exact_total=False)
    return kept_count(1.0 - s, sum(math.prod(v) for v in shapes.values()))  # round half up


@PROPERTY
@given(args=gradual_setups())
def test_gradual_pruning_counts_follow_the_schedule(args: tuple[Setup, dict[str, Any]]) -> None:
    cfg, extra = args
    model, opt, sp = cfg.build()
    assert isinstance(sp, GradualPruning)
    s0 = sp.target(0) if extra["t_begin"] == 0 else extra["initial_sparsity"]
    want0 = schedule_counts(sp, s0)
    nnz = sp.masks.nnz()
    assert (nnz == want0) if sp.scope == "layer" else (sum(nnz.values()) == want0)
    pruned_at = []
    for t, (x, y) in enumerate(cfg.batches(), start=1):
        sgd_step(model, opt, x, y)
        before = sp.masks.masks
        stats = sp.step()
        after = sp.masks.masks
        for n in after:  # pruning never regrows
            assert not bool((after[n] & ~before[n]).any())
        if stats is None:
            assert all(torch.equal(before[n], after[n]) for n in after)
            continue
        pruned_at.append(t)
        s_t = sp.target(t)
        assert stats["target_sparsity"] == s_t
        prev = {n: int(m.sum()) for n, m in before.items()}
        want = schedule_counts(sp, s_t)
        nnz = sp.masks.nnz()
        if sp.scope == "global":
            assert sum(nnz.values()) == min(want, sum(prev.values()))
        else:
            assert all(want[n] <= prev[n] for n in want)  # the targets never rise
            assert nnz == want  # exactly the schedule's per-layer target
        assert_masked_zero(sp, f"gradual step {t}")
    t_b, t_e, every = extra["t_begin"], extra["t_end"], extra["every"]
    due = sorted({t for t in range(max(1, t_b), t_e + 1) if (t - t_b) % every == 0} | (
        {t_e} if t_e >= 1 else set()))
    assert pruned_at == due


# --------------------------------------------------------------------------------------------
# 2. masked weights stay zero
# --------------------------------------------------------------------------------------------
@PROPERTY
@given(cfg=setups(methods=("static", *DYNAMIC, "gradual")))
def test_masked_weights_are_exactly_zero_after_every_step(cfg: Setup) -> None:
    if cfg.method == "gradual":
        cfg.extra = {"t_begin": 1, "t_end": max(1, cfg.steps - 3), "every": cfg.update_every}
    model, opt, sp = cfg.build()
    assert_masked_zero(sp, "init")
    for t, (x, y) in enumerate(cfg.batches(), start=1):
        sgd_step(model, opt, x, y)
        assert_masked_zero(sp, f"after optimizer.step() {t}")
        sp.step()
        assert_masked_zero(sp, f"after sparsifier.step() {t}")
        if sp.masking in ("grads", "both"):  # no optimiser state accumulates at masked positions
            for name in sp.params:
                p = sp.execution.parameter(name)
                for key, s in dense_state(opt, sp, name).items():
                    off = s[~sp.masks[name]]
                    assert bool((off == initial_value(opt, key, p)).all()), key


# --------------------------------------------------------------------------------------------
# 3. grown weights start at zero with reset optimiser state
# --------------------------------------------------------------------------------------------
@PROPERTY
@given(cfg=setups(methods=DYNAMIC))
def test_grown_weights_are_zero_with_reset_optimizer_state(cfg: Setup) -> None:
    model, opt, sp = cfg.build()
    log = record_grow_sets(sp)
    for x, y in cfg.batches():
        sgd_step(model, opt, x, y)
        before = sp.masks.masks
        log.clear()
        stats = sp.step()
        if stats is None:
            continue
        grow_sets = {n: z for n, z in log if z is not None}
        for name in sp.params:
            p = sp.execution.parameter(name)
            old, new = before[name], sp.masks[name]
            activated = new & ~old
            grow = grow_sets.get(name, torch.zeros_like(new))
            assert not bool((grow & ~new).any()), "a grown position is not active"
            assert not bool((activated & ~grow).any()), "activated outside the grow set"
            dropped = old & ~new
            assert int(grow.sum()) == int(dropped.sum()) + int((grow & old).sum())
            w = dense_weight(sp, name)
            assert bool((w[grow] == 0).all()), f"grown weights of {name} are not zero"
            for key, s in dense_state(opt, sp, name).items():
                v0 = initial_value(opt, key, p)
                assert bool((s[grow] == v0).all()), f"{key} of grown {name} not reset"
                assert bool((s[dropped] == v0).all()), f"{key} of dropped {name} not reset"
            assert stats[f"grown/{name}"] == int(activated.sum())
            assert stats[f"dropped/{name}"] == int(dropped.sum())


# --------------------------------------------------------------------------------------------
# 4. just-dropped weights: regrown by default, excluded on request
# --------------------------------------------------------------------------------------------
def one_layer(n_out: int, n_in: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(n_in, n_out, bias=False))


@SMALL
@given(n_out=st.integers(2, 8), n_in=st.integers(2, 8), data=st.data(),
       optimizer=st.sampled_from(("momentum", "adam", "adagrad", "rmsprop")),
       exclude_dropped=st.booleans(), inverted=st.booleans())
def test_just_dropped_weight_with_the_best_score_is_regrown_at_zero(
        n_out: int, n_in: int, data: st.DataObject, optimizer: str, exclude_dropped: bool,
        inverted: bool) -> None:
    numel = n_out * n_in
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    n_active = data.draw(st.integers(2, numel - 1))
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[torch.randperm(numel, generator=g)[:n_active]] = True
    mask = mask.view(n_out, n_in)
    j = int(mask.reshape(-1).nonzero()[data.draw(st.integers(0, n_active - 1))])

    model = one_layer(n_out, n_in)
    opt = OPTIMIZERS[optimizer](model.parameters())
    grads = torch.rand(n_out, n_in, generator=g)  # in [0, 1)
    grads.view(-1)[j] = 10.0 if not inverted else -1e-9  # the best score of the layer
    cls = RigLInverted if inverted else RigL
    sp = cls(model, opt, masks={"0.weight": mask}, init="keep", t_end=100, update_every=3,
             drop_fraction=1.5 / n_active, drop_schedule="constant",
             exclude_dropped=exclude_dropped, grad_fn=lambda: {"0.weight": grads})
    w = model[0].weight
    x = torch.randn(4, n_in, generator=g)
    for _ in range(2):  # build optimiser state at the active positions
        opt.zero_grad()
        (model(x) ** 2).sum().backward()
        opt.step()
        assert sp.step() is None
    values = (1.0 + torch.rand(n_out, n_in, generator=g)) * torch.sign(torch.randn(
        n_out, n_in, generator=g))
    values.view(-1)[j] = 0.01  # the unique smallest |w|: dropped (k = 1)
    with torch.no_grad():
        w.copy_(values * mask)
    state_j = {k: float(s.view(-1)[j]) for k, s in shaped_state(opt, w).items()}
    assert any(v != initial_value(opt, k, w) for k, v in state_j.items())
    opt.zero_grad(set_to_none=True)
    opt.step()  # no gradient: the weights do not move
    stats = sp.step()
    assert stats is not None
    new = sp.masks["0.weight"]
    assert int(new.sum()) == n_active
    flat_new, flat_w = new.reshape(-1), w.detach().reshape(-1)
    if not exclude_dropped:
        assert torch.equal(new, mask)  # j dropped and regrown
        assert float(flat_w[j]) == 0.0  # ... at zero
        assert torch.equal(w.detach(), values * mask * (torch.arange(numel) != j).view_as(mask))
        for k, s in shaped_state(opt, w).items():
            assert float(s.view(-1)[j]) == initial_value(opt, k, w), k
    else:
        assert not bool(flat_new[j])
        score = grads.abs() if not inverted else -grads.abs()
        expected = int(torch.where(mask, float("-inf"), score).reshape(-1).argmax())
        assert bool(flat_new[expected]) and not bool(mask.reshape(-1)[expected])
        assert int((new & ~mask).sum()) == 1
        assert float(flat_w[expected]) == 0.0 and float(flat_w[j]) == 0.0


# --------------------------------------------------------------------------------------------
# 5. drop smallest |w|, grow by score (brute force)
# --------------------------------------------------------------------------------------------
def brute_force(w: torch.Tensor, mask: torch.Tensor, score: torch.Tensor | None, alpha: float,
                exclude_dropped: bool) -> tuple[set[int], set[int] | int]:
    """(kept, grown) of one layer by sorting Python lists; ties -> lower flat index.

    ``score=None`` (SET): grown is returned as its size only.
    """
    wf = [abs(float(v)) for v in w.reshape(-1)]
    mf = [bool(v) for v in mask.reshape(-1)]
    active = [i for i, a in enumerate(mf) if a]
    n_active = len(active)
    k = floor_count(alpha, n_active)  # floor(alpha * n_active), float noise snapped
    if k == 0:
        return set(active), (set() if score is not None else 0)
    by_mag = sorted(active, key=lambda i: (-wf[i], i))

    def eligible(k: int) -> list[int]:
        keep = set(by_mag[: n_active - k])
        return [i for i in range(len(mf)) if (not mf[i] if exclude_dropped else i not in keep)]

    if len(eligible(k)) < k:
        k = len(eligible(k))
    keep = set(by_mag[: n_active - k])
    if score is None:
        return keep, k
    sf = [float(v) for v in score.reshape(-1)]
    grow = sorted(eligible(k), key=lambda i: (-sf[i], i))[:k]
    return keep, set(grow)


@PROPERTY
@given(spec=model_specs(), sparsity=st.floats(0.0, 0.98),
       method=st.sampled_from(DYNAMIC), alpha=st.floats(0.0, 1.0),
       exclude_dropped=st.booleans(), ties=st.booleans(), from_batch=st.booleans(),
       seed=st.integers(0, 2**16))
def test_drop_smallest_magnitude_grow_by_score_matches_brute_force(
        spec: ModelSpec, sparsity: float, method: str, alpha: float, exclude_dropped: bool,
        ties: bool, from_batch: bool, seed: int) -> None:
    """``from_batch``: RigL scores the training batch's dense gradient (captured before the
    optimiser masks it); otherwise a ``grad_fn`` gives the scores."""
    model = spec.build(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    names = [n for n, _ in model.named_parameters() if n.endswith("weight")]

    def draw(shape: torch.Size) -> torch.Tensor:
        if ties:  # few distinct values: exercises the tie rule
            return torch.randint(-2, 3, shape, generator=g).float()
        return torch.randn(shape, generator=g)

    params = dict(model.named_parameters())
    grads = {n: draw(params[n].shape) for n in names}
    kw: dict[str, Any] = {"grad_fn": lambda: grads} if method != "set" and not from_batch else {}
    sp = sparsify(method, model, opt, sparsity=feasible(spec, sparsity), distribution="erk",
                  t_end=10, update_every=1, drop_fraction=alpha, drop_schedule="constant",
                  exclude_dropped=exclude_dropped, seed=seed, **kw)
    with torch.no_grad():
        for n in names:
            params[n].copy_(draw(params[n].shape) * sp.masks[n])
    if from_batch:
        x, y = spec.batches(1, seed)[0]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads = {n: params[n].grad.detach().clone() for n in names}  # dense: not yet masked
    masks = sp.masks.masks
    log = record_grow_sets(sp)
    opt.step()  # without gradients nothing moves; with them the weights do
    before = {n: params[n].detach().clone() for n in names}
    assert sp.step() is not None
    grow_sets = {n: z for n, z in log if z is not None}
    for n in names:
        score = None if method == "set" else (
            grads[n].abs() if method == "rigl" else -grads[n].abs())
        keep, grow = brute_force(before[n], masks[n], score, alpha, exclude_dropped)
        new = sp.masks[n]
        got_grow = grow_sets.get(n, torch.zeros_like(new))
        got_keep = new & ~got_grow
        assert set(got_keep.reshape(-1).nonzero().squeeze(1).tolist()) == keep
        got = set(got_grow.reshape(-1).nonzero().squeeze(1).tolist())
        if method == "set":
            assert len(got) == grow
            assert not (got & keep)
            if exclude_dropped:
                assert not bool((got_grow & masks[n]).any())
        else:
            assert got == grow
        w = params[n].detach()
        assert torch.equal(w[got_keep], before[n][got_keep])  # kept weights untouched
        assert bool((w[~got_keep] == 0).all())


@pytest.mark.parametrize("exclude_dropped", [False, True])
def test_set_grows_uniformly_at_random_among_eligible(exclude_dropped: bool) -> None:
    """Mask of 10 active out of 20, k = floor(0.3 * 10) = 3 dropped (the 3 smallest |w|):
    each eligible position grows with probability 3/13 (dropped ones eligible) or 3/10."""
    mask = torch.zeros(20, dtype=torch.bool)
    mask[::2] = True
    mask = mask.view(2, 10)
    values = torch.arange(1, 21, dtype=torch.float32).view(2, 10) * mask
    dropped = {0, 2, 4}  # flat indices of |w| = 1, 3, 5
    eligible = set(range(1, 20, 2)) | (set() if exclude_dropped else dropped)
    trials = 600
    counts = torch.zeros(20)
    model = one_layer(2, 10)
    for seed in range(trials):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with torch.no_grad():
            model[0].weight.copy_(values)
        sp = SET(model, opt, masks={"0.weight": mask}, init="keep", t_end=10, update_every=1,
                 drop_fraction=0.3, drop_schedule="constant", exclude_dropped=exclude_dropped,
                 seed=seed)
        log = record_grow_sets(sp)
        opt.step()
        sp.step()
        sp.remove()
        (grow,) = [z for _, z in log]
        assert int(grow.sum()) == 3
        assert set(grow.reshape(-1).nonzero().squeeze(1).tolist()) <= eligible
        kept = sp.masks["0.weight"] & ~grow
        assert set(kept.reshape(-1).nonzero().squeeze(1).tolist()) == set(range(6, 20, 2))
        counts += grow.reshape(-1).float()
    p = 3 / len(eligible)
    sd = math.sqrt(trials * p * (1 - p))
    for i in range(20):
        if i in eligible:
            assert abs(float(counts[i]) - trials * p) < 5 * sd, (i, float(counts[i]))
        else:
            assert counts[i] == 0


# --------------------------------------------------------------------------------------------
# 6. determinism and ties
# --------------------------------------------------------------------------------------------
@PROPERTY
@given(cfg=setups(methods=("static", *DYNAMIC), max_steps=10))
def test_same_seed_gives_identical_masks_and_weights(cfg: Setup) -> None:
    runs = []
    for _ in range(2):
        model, opt, sp = cfg.build()
        for x, y in cfg.batches():
            sgd_step(model, opt, x, y)
            sp.step()
        runs.append((sp.masks.state_dict(), {k: v.clone() for k, v in
                                             model.state_dict().items()}))
    (m1, w1), (m2, w2) = runs
    assert m1.keys() == m2.keys()
    assert all(torch.equal(m1[n], m2[n]) for n in m1)
    assert all(torch.equal(w1[n], w2[n]) for n in w1)


@pytest.mark.parametrize("exclude_dropped", [False, True])
def test_all_equal_scores_keep_and_grow_the_lowest_indices(exclude_dropped: bool) -> None:
    n_out, n_in = 4, 5
    mask = torch.zeros(n_out * n_in, dtype=torch.bool)
    active = [0, 1, 2, 3, 5, 6, 7, 9]
    mask[active] = True
    mask = mask.view(n_out, n_in)
    model = one_layer(n_out, n_in)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[0].weight.copy_(mask.float())  # all active |w| equal
    sp = RigL(model, opt, masks={"0.weight": mask}, init="keep", t_end=10, update_every=1,
              drop_fraction=0.5, drop_schedule="constant", exclude_dropped=exclude_dropped,
              grad_fn=lambda: {"0.weight": torch.ones(n_out, n_in)})
    log = record_grow_sets(sp)
    opt.step()
    sp.step()
    (grow,) = [z for _, z in log]
    keep = sp.masks["0.weight"] & ~grow
    # k = 4 dropped: the active positions of higher index (5, 6, 7, 9) go
    assert keep.reshape(-1).nonzero().squeeze(1).tolist() == [0, 1, 2, 3]
    grown = grow.reshape(-1).nonzero().squeeze(1).tolist()
    if exclude_dropped:  # eligible: the positions inactive before the update
        assert grown == [4, 8, 10, 11]
    else:  # eligible: everything but the kept; the lowest are 4 and the just-dropped 5, 6, 7
        assert grown == [4, 5, 6, 7]
    assert not bool((grow & keep).any())
    assert bool((model[0].weight.detach()[grow] == 0).all())


# --------------------------------------------------------------------------------------------
# 7. ER / ERK budgets
# --------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(st.one_of(
           st.tuples(st.integers(1, 60), st.integers(1, 60)),
           st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(1, 5),
                     st.integers(1, 5))), min_size=1, max_size=6),
       sparsity=st.floats(0.0, 0.98), distribution=st.sampled_from(DISTRIBUTIONS))
def test_distribution_counts_sum_to_the_budget_exactly(
        shapes: list[tuple[int, ...]], sparsity: float, distribution: str) -> None:
    named = {f"l{i}": s for i, s in enumerate(shapes)}
    numel = {n: math.prod(s) for n, s in named.items()}
    total = sum(numel.values())
    budget = kept_count(1.0 - sparsity, total)  # documented: round half up (noise snapped)
    if budget < len(named):
        with pytest.raises(ValueError):
            layer_counts(named, sparsity, distribution)
        return
    counts = layer_counts(named, sparsity, distribution)
    assert sum(counts.values()) == budget
    assert abs(budget - round((1.0 - sparsity) * total)) <= 1  # Python's round: ties to even
    assert all(1 <= counts[n] <= numel[n] for n in named)


@SMALL
@given(cfg=setups(methods=("static", "set", "rigl"), min_steps=1, max_steps=1))
def test_sparsifier_total_equals_budget(cfg: Setup) -> None:
    model, opt, sp = cfg.build()
    total = sum(math.prod(shape) for shape in sp.shapes.values())
    assert sum(sp.masks.nnz().values()) == kept_count(1.0 - cfg.sparsity, total)
    held = {n: sp.execution.parameter(n).numel() for n in sp.params}  # sparse: the active
    assert all(held[n] in (math.prod(sp.shapes[n]), c) for n, c in sp.masks.nnz().items())
    assert abs(sp.masks.sparsity() - cfg.sparsity) <= len(sp.params) / total


# --------------------------------------------------------------------------------------------
# 8. exact resume
# --------------------------------------------------------------------------------------------
@PROPERTY
@given(cfg=setups(methods=("set", "rigl"), min_steps=4, max_steps=12), data=st.data())
def test_resume_from_saved_state_is_exact(cfg: Setup, data: st.DataObject) -> None:
    cfg.drop_schedule = data.draw(st.sampled_from(("constant", "cosine", "lr")))
    n = data.draw(st.integers(1, cfg.steps - 1))
    batches = cfg.batches()

    model_a, opt_a, sp_a = cfg.build()
    for x, y in batches:
        sgd_step(model_a, opt_a, x, y)
        sp_a.step()

    model_b, opt_b, sp_b = cfg.build()
    for x, y in batches[:n]:
        sgd_step(model_b, opt_b, x, y)
        sp_b.step()
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "optimizer": opt_b.state_dict(),
                "sparsifier": sp_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    model_c, opt_c, sp_c = cfg.build(model_seed=cfg.seed + 12345)  # a different init
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["optimizer"])
    sp_c.load_state_dict(ckpt["sparsifier"])
    for x, y in batches[n:]:
        sgd_step(model_c, opt_c, x, y)
        sp_c.step()

    assert sp_c.step_count == sp_a.step_count and sp_c.updates == sp_a.updates
    for name in sp_a.params:
        assert torch.equal(sp_a.masks[name], sp_c.masks[name]), name
        assert torch.equal(sp_a.ever_active[name], sp_c.ever_active[name]), name
    wa, wc = model_a.state_dict(), model_c.state_dict()
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert_masked_zero(sp_c, "resumed")


def test_select_weights_names_match_the_model_specs() -> None:
    """The helpers' shape bookkeeping agrees with the models they build."""
    for spec in (ModelSpec("mlp", (3, 7, 4)), ModelSpec("conv", (2, 3, 2, 4))):
        model = spec.build(0)
        got = [tuple(p.shape) for p in select_weights(model).values()]
        assert got == spec.shapes()
