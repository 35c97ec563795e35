"""GraNet (gradual pruning + neuroregeneration) and AC/DC (alternating compressed / decompressed
training): schedules, masks and optimiser state checked against numbers computed here
independently (exact fractions, brute-force sorts), patterns, exact resume and full runs."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.methods import ACDC, GraNet, acdc, granet, options_of, sparsify
from sparseflow.methods.acdc import ACDCOptions
from sparseflow.methods.granet import GraNetOptions
from sparseflow.methods.options import BuildContext
from sparseflow.sparsity import layer_counts, parse_pattern, pattern_violations
from sparseflow.sparsity.patterns import matrix_view


# --- helpers ---------------------------------------------------------------------------------
def net(seed: int = 0, widths: tuple[int, ...] = (6, 10, 4)) -> nn.Sequential:
    """Tanh MLP: no exact zeros in the gradients (ReLU's dead units would tie them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if i:
                layers.append(nn.Tanh())
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        return nn.Sequential(*layers)


def batches(n: int, n_in: int = 6, n_out: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, n_in, generator=g), torch.randint(0, n_out, (8,), generator=g))
            for _ in range(n)]


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=1e-3),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
}


def loss_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    F.cross_entropy(model(x), y).backward()


def opt_step(model, opt, x, y) -> None:
    opt.zero_grad()
    loss_backward(model, x, y)
    opt.step()


def weights(sp) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in sp.params.items()}


def masks(sp) -> dict[str, torch.Tensor]:
    return {n: m.clone() for n, m in sp.masks.masks.items()}


def half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def cubic(t: int, s_i: Fraction, s_f: Fraction, t0: int, t1: int) -> Fraction:
    p = min(Fraction(1), max(Fraction(0), Fraction(t - t0, t1 - t0)))
    return s_f + (s_i - s_f) * (1 - p) ** 3


def global_top(scores: dict[str, torch.Tensor], eligible: dict[str, torch.Tensor], k: int
               ) -> dict[str, torch.Tensor]:
    """Brute force: the k largest scores over all layers among ``eligible`` (a full sort)."""
    entries = [(float(s), name, i) for name, t in scores.items()
               for i, s in enumerate(t.reshape(-1).tolist()) if eligible[name].reshape(-1)[i]]
    entries.sort(key=lambda e: -e[0])
    out = {n: torch.zeros(t.numel(), dtype=torch.bool) for n, t in scores.items()}
    for _, name, i in entries[:k]:
        out[name][i] = True
    return {n: m.view(scores[n].shape) for n, m in out.items()}


def layer_top(score: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    return global_top({"l": score}, {"l": eligible}, k)["l"]


def bottom(score: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    return layer_top(-score, eligible, k)


def assert_masked_zero(sp, where: str) -> None:
    for name, p in sp.params.items():
        assert bool((p.detach()[~sp.masks[name]] == 0).all()), f"{name}: {where}"


# --- GraNet ----------------------------------------------------------------------------------
def test_granet_global_counts_follow_the_cubic_schedule_at_every_pruning_step():
    model = net()
    opt = OPTIMIZERS["momentum"](model.parameters())
    sp = granet(model, opt, total_steps=24, t_begin=0, t_end=15, every=3, sparsity=0.8)
    n_total = sum(p.numel() for p in sp.params.values())
    assert sp.masks.sparsity() == 0.0  # dense-to-sparse
    pruned_at = []
    for t, (x, y) in enumerate(batches(24), start=1):
        opt_step(model, opt, x, y)
        w, before = weights(sp), masks(sp)
        stats = sp.step()
        assert (stats is not None) == (t % 3 == 0), t
        if stats is None:
            continue
        after = {n: int(m.sum()) for n, m in sp.masks.masks.items()}
        if t <= 15:
            s_t = cubic(t, Fraction(0), Fraction(4, 5), 0, 15)
            assert stats["target_sparsity"] == pytest.approx(float(s_t), abs=1e-12)
            k = half_up((1 - s_t) * n_total)
            kept = global_top({n: v.abs() for n, v in w.items()}, before, k)
            # regeneration moves weights within a layer: the pruning's counts stay
            assert after == {n: int(m.sum()) for n, m in kept.items()}, t
            pruned_at.append(t)
        else:  # regeneration only: counts unchanged
            assert after == {n: int(m.sum()) for n, m in before.items()}, t
            assert "target_sparsity" not in stats
    assert pruned_at == [3, 6, 9, 12, 15]
    assert sum(int(m.sum()) for m in sp.masks.masks.values()) == half_up(
        Fraction(1, 5) * n_total)


def test_granet_layer_scope_sparse_to_sparse_counts():
    model = net(widths=(6, 12, 10, 4))
    opt = OPTIMIZERS["sgd"](model.parameters())
    sp = GraNet(model, opt, total_steps=20, t_begin=4, t_end=16, every=4, sparsity=0.9,
                initial_sparsity=0.5, scope="layer", distribution="uniform", seed=3)
    numel = {n: p.numel() for n, p in sp.params.items()}
    # the initial random mask: the uniform distribution's exact counts at s_i = 0.5
    assert {n: int(m.sum()) for n, m in sp.masks.masks.items()} == layer_counts(
        {n: p.shape for n, p in sp.params.items()}, 0.5, "uniform")
    for t, (x, y) in enumerate(batches(20), start=1):
        opt_step(model, opt, x, y)
        before = {n: int(m.sum()) for n, m in sp.masks.masks.items()}
        stats = sp.step()
        assert (stats is not None) == (t in (4, 8, 12, 16, 20)), t
        if stats is not None and t <= 16:
            s_t = cubic(t, Fraction(1, 2), Fraction(9, 10), 4, 16)
            want = {n: min(before[n], max(1, half_up((1 - s_t) * numel[n]))) for n in numel}
            assert {n: int(m.sum()) for n, m in sp.masks.masks.items()} == want, t
    assert sp.masks.sparsity() == pytest.approx(0.9, abs=len(numel) / sum(numel.values()))


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_granet_regrows_the_top_dense_gradients_at_zero_with_reset_state(optimizer):
    """Brute force on tiny layers: prune globally to K_t, drop floor(r_t n) smallest |w| per
    layer, grow the same number of largest |dL/dW| among the inactive (just-dropped and
    just-pruned included)."""
    model = net(widths=(5, 6, 3), seed=2)
    opt = OPTIMIZERS[optimizer](model.parameters())
    T, r0, r_min = 10, 0.5, 0.05
    sp = GraNet(model, opt, total_steps=T, t_end=6, every=2, sparsity=0.7,
                regrow_fraction=r0, regrow_min=r_min)
    n_total = sum(p.numel() for p in sp.params.values())
    checked = 0
    for t, (x, y) in enumerate(batches(T, n_in=5, n_out=3, seed=5), start=1):
        names = list(sp.params)
        g = torch.autograd.grad(F.cross_entropy(model(x), y), [sp.params[n] for n in names])
        dense_grad = {n: gi.detach().abs() for n, gi in zip(names, g, strict=True)}
        opt_step(model, opt, x, y)
        w, m0 = weights(sp), masks(sp)
        stats = sp.step()
        if stats is None:
            continue
        r_t = r_min + (r0 - r_min) * (1 + math.cos(math.pi * t / T)) / 2
        assert stats["regrow_fraction"] == pytest.approx(r_t, abs=1e-12)
        m1 = m0
        if t <= 6:
            k = half_up((1 - cubic(t, Fraction(0), Fraction(7, 10), 0, 6)) * n_total)
            m1 = global_top({n: v.abs() for n, v in w.items()}, m0, k)
        for name in names:
            n_active = int(m1[name].sum())
            k = math.floor(r_t * n_active + 1e-9)
            dropped = bottom(w[name].abs(), m1[name], k)
            m2 = m1[name] & ~dropped
            grown = layer_top(dense_grad[name], ~m2, k)
            assert torch.equal(sp.masks[name], m2 | grown), (t, name)
            # every grown weight (a just-dropped one too) restarts at zero with reset state
            assert bool((sp.params[name].detach()[grown] == 0).all())
            for key, s in opt.state[sp.params[name]].items():
                if torch.is_tensor(s) and s.shape == sp.params[name].shape:
                    assert bool((s[grown] == 0).all()), (key, t, name)
            checked += int((grown & ~m0[name]).sum())  # newly active positions
    assert checked > 0


def test_granet_regrow_fraction_is_a_cosine_to_r_min_and_stops_at_regrow_end():
    model = net()
    opt = OPTIMIZERS["sgd"](model.parameters())
    sp = GraNet(model, opt, total_steps=40, t_end=10, every=5, sparsity=0.5, regrow_end=20)
    for t in (0, 1, 7, 20, 33, 40, 41, 100):
        want = 0.005 + (0.5 - 0.005) * (1 + math.cos(math.pi * min(t, 40) / 40)) / 2
        assert sp.regrow_fraction_at(t) == pytest.approx(want, abs=1e-15)
    assert sp.regrow_fraction_at(0) == pytest.approx(0.5)
    assert sp.regrow_fraction_at(40) == pytest.approx(0.005)
    seen = {}
    for t, (x, y) in enumerate(batches(40), start=1):
        opt_step(model, opt, x, y)
        before = masks(sp)
        stats = sp.step()
        if stats is not None:
            seen[t] = stats.get("regrow_fraction")
        if t > 20:  # no regeneration, no pruning: the topology is frozen
            assert stats is None and all(torch.equal(before[n], sp.masks[n]) for n in before)
    assert sorted(seen) == [5, 10, 15, 20]
    assert all(seen[t] == pytest.approx(sp.regrow_fraction_at(t)) for t in seen)
    assert not sp.needs_dense_grads(25) and sp.needs_dense_grads(15)


# --- AC/DC -----------------------------------------------------------------------------------
def acdc_on(total_steps: int, **kwargs) -> ACDC:
    model = net()
    return ACDC(model, OPTIMIZERS["sgd"](model.parameters()), total_steps=total_steps,
                sparsity=0.8, **kwargs)


def test_acdc_phase_boundaries_by_hand():
    # the paper's ImageNet schedule in epochs (100): warm-up 10, 5-epoch phases, the last
    # dense phase 75-85, final sparse 85-100 (IST-DASLab/ACDC configs)
    sp = acdc_on(100)
    assert (sp.warmup_steps, sp.phase_steps, sp.final_steps) == (10, 5, 15)
    assert [t for t in range(1, 101) if sp.due(t)] == [10, 15, 20, 25, 30, 35, 40, 45, 50, 55,
                                                      60, 65, 70, 75, 85]
    phases = "".join("S" if sp.phase_at(t) == "sparse" else "d" for t in range(0, 101))
    assert phases == "d" * 10 + ("S" * 5 + "d" * 5) * 6 + "S" * 5 + "d" * 10 + "S" * 16
    # CIFAR-100's (200 epochs): warm-up 10, 20-epoch phases, final 170-200
    sp = acdc_on(200, warmup_steps=10, phase_steps=20, final_steps=30)
    assert [t for t in range(1, 201) if sp.due(t)] == [10, 30, 50, 70, 90, 110, 130, 150, 170]
    # 48 steps with the default fractions: W = 5, P = 2, L = 7, F = 41
    sp = acdc_on(48)
    assert (sp.warmup_steps, sp.phase_steps, sp.final_steps) == (5, 2, 7)
    assert [t for t in range(1, 49) if sp.due(t)] == list(range(5, 42, 2))
    # warm-up then the final phase straight away when no phase fits
    sp = acdc_on(10, warmup_steps=4, phase_steps=3, final_steps=5)
    assert [t for t in range(1, 11) if sp.due(t)] == [5]


@pytest.mark.parametrize("scope, masking", [("global", "auto"), ("layer", "weights")])
def test_acdc_sparse_masks_are_top_magnitudes_dense_phases_train_everything(scope, masking):
    # masking=weights: masked gradients reach the momentum, which the decompression must reset
    model = net(widths=(6, 12, 10, 4))
    opt = OPTIMIZERS["momentum"](model.parameters())
    T = 30
    sp = acdc(model, opt, total_steps=T, warmup_steps=4, phase_steps=3, final_steps=8,
              scope=scope, sparsity=0.8, distribution="erk", masking=masking)
    shapes = {n: p.shape for n, p in sp.params.items()}
    n_total = sum(p.numel() for p in sp.params.values())
    counts = layer_counts(shapes, 0.8, "erk")
    dense_start: dict[str, torch.Tensor] | None = None
    compressions = decompressions = 0
    for t, (x, y) in enumerate(batches(T), start=1):
        opt_step(model, opt, x, y)
        w, before = weights(sp), masks(sp)
        stats = sp.step()
        phase = sp.phase_at(t)
        if stats is not None and phase == "sparse":
            compressions += 1
            if scope == "global":
                want = global_top({n: v.abs() for n, v in w.items()},
                                  {n: torch.ones_like(m) for n, m in before.items()},
                                  half_up(Fraction(1, 5) * n_total))
            else:
                want = {n: layer_top(v.abs(), torch.ones_like(before[n]), counts[n])
                        for n, v in w.items()}
            assert all(torch.equal(sp.masks[n], want[n]) for n in want), t
            assert stats["phase"] == 1.0 and stats["sparsity"] == pytest.approx(
                1 - sum(int(m.sum()) for m in want.values()) / n_total)
            if dense_start is not None:  # the dense phase before moved every weight
                assert all(bool((w[n] != dense_start[n]).all()) for n in w), t
        elif stats is not None:
            decompressions += 1
            assert stats["phase"] == 0.0 and stats["sparsity"] == 0.0
            assert all(bool(m.all()) for m in sp.masks.masks.values())
            for n, p in sp.params.items():  # pruned weights restart at 0, state reset
                off = ~before[n]
                assert bool((p.detach()[off] == 0).all())
                assert bool((opt.state[p]["momentum_buffer"][off] == 0).all())
            dense_start = weights(sp)
        elif phase == "sparse":
            assert all(torch.equal(before[n], sp.masks[n]) for n in before)  # fixed mask
    # W + 2cP + 2P <= F for c = 0, 1, 2: sparse at 4, 10, 16 and F = 22; dense at 7, 13, 19
    assert (compressions, decompressions) == (4, 3)
    final = {n: int(m.sum()) for n, m in sp.masks.masks.items()}
    if scope == "layer":
        assert final == counts
    assert sum(final.values()) == half_up(Fraction(1, 5) * n_total)
    assert sp.summary()["sparsity"] == pytest.approx(1 - sum(final.values()) / n_total, abs=1e-6)
    assert_masked_zero(sp, "end")


# --- both ------------------------------------------------------------------------------------
def build(method: str, model: nn.Module, opt, total: int, **kw):
    if method == "granet":
        kw = {"t_end": total - 4, "every": 2, "regrow_fraction": 0.4, **kw}
        return granet(model, opt, total_steps=total, **kw)
    kw = {"warmup_steps": 2, "phase_steps": 2, "final_steps": 4, **kw}
    return acdc(model, opt, total_steps=total, **kw)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("method", ["granet", "acdc"])
def test_masked_weights_stay_exactly_zero(method, optimizer):
    model = net(seed=4)
    opt = OPTIMIZERS[optimizer](model.parameters())
    sp = build(method, model, opt, 16, sparsity=0.75)
    for t, (x, y) in enumerate(batches(16, seed=7), start=1):
        sparse_before = method == "granet" or sp.phase_at(t - 1) == "sparse"
        opt_step(model, opt, x, y)
        if sparse_before:
            assert_masked_zero(sp, f"after optimizer step {t}")
        sp.step()
        assert_masked_zero(sp, f"after sparsifier step {t}")
    assert sp.masks.sparsity() == pytest.approx(0.75, abs=0.01)


@pytest.mark.parametrize("method", ["granet", "acdc"])
@pytest.mark.parametrize("pattern, sparsity", [("2:4", 0.5), ("fan_in", 0.75)])
def test_structured_patterns_hold(method, pattern, sparsity):
    model = net(widths=(8, 12, 4), seed=6)
    opt = OPTIMIZERS["adam"](model.parameters())
    pat = parse_pattern(pattern)
    sp = build(method, model, opt, 18, pattern=pattern, sparsity=sparsity)
    assert sp.scope == "layer"  # the default under a pattern
    for t, (x, y) in enumerate(batches(18, n_in=8, seed=8), start=1):
        opt_step(model, opt, x, y)
        sp.step()
        assert_masked_zero(sp, f"step {t}")
        for name, m in sp.masks.masks.items():
            if pat.kind == "fan_in" and (method == "granet" or sp.phase_at(t) == "sparse"):
                assert pattern_violations(m, pat) == [], (t, name)
            if pat.kind == "nm" and method == "granet":  # n_t:4 on the way to 2:4
                per_group = matrix_view(m).reshape(-1, 4).sum(1)
                assert bool((per_group == per_group[0]).all()), (t, name)
            if pat.kind == "nm" and method == "acdc" and sp.phase_at(t) == "sparse":
                assert pattern_violations(m, pat) == [], (t, name)
    for name, m in sp.masks.masks.items():  # the end: the pattern at the target sparsity
        assert pattern_violations(m, pat) == [], name
    if pat.kind == "nm":
        assert sp.masks.sparsity() == 0.5


@pytest.mark.parametrize("method, stop", [("granet", 5), ("granet", 8), ("acdc", 5),
                                          ("acdc", 7)])
def test_resume_mid_training_is_bit_exact(method, stop):
    total = 16
    data = batches(total, seed=9)

    def fresh(seed: int = 4):
        model = net(seed=seed)
        opt = OPTIMIZERS["adam"](model.parameters())
        return model, opt, build(method, model, opt, total, sparsity=0.8, seed=1)

    model_a, opt_a, sp_a = fresh()
    for x, y in data:
        opt_step(model_a, opt_a, x, y)
        sp_a.step()

    model_b, opt_b, sp_b = fresh()
    for x, y in data[:stop]:
        opt_step(model_b, opt_b, x, y)
        sp_b.step()
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "optimizer": opt_b.state_dict(),
                "sparsifier": sp_b.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    model_c, opt_c, sp_c = fresh(seed=99)  # another init: everything comes from the file
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["optimizer"])
    sp_c.load_state_dict(ckpt["sparsifier"])
    for x, y in data[stop:]:
        opt_step(model_c, opt_c, x, y)
        sp_c.step()

    assert sp_c.step_count == sp_a.step_count == total and sp_c.updates == sp_a.updates
    for name in sp_a.params:
        assert torch.equal(sp_a.masks[name], sp_c.masks[name]), name
    wa, wc = model_a.state_dict(), model_c.state_dict()
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_errors_name_the_argument_on_one_line():
    def make(fn, **kw):
        model = net()
        return fn(model, OPTIMIZERS["sgd"](model.parameters()), **kw)

    cases = [
        (granet, {"total_steps": 10, "t_begin": 6, "t_end": 5}, "granet(): t_end: "),
        (granet, {"total_steps": 10, "regrow_fraction": 0.1, "regrow_min": 0.2},
         "granet(): regrow_min: "),
        (granet, {"total_steps": 10, "initial_sparsity": 0.95}, "granet(): initial_sparsity: "),
        (granet, {"total_steps": 0}, "granet(): total_steps: "),
        (granet, {"total_steps": 10, "every": 0}, "granet(): every: "),
        (GraNet, {"total_steps": 10, "scope": "global", "pattern": "2:4", "sparsity": 0.5},
         "GraNet(): scope: pattern 2:4 needs scope='layer'"),
        (acdc, {"total_steps": 10, "warmup_steps": 6, "final_steps": 5}, "acdc(): final_steps: "),
        (acdc, {"total_steps": 10, "phase_steps": 1.5}, "acdc(): phase_steps: "),
        (ACDC, {"total_steps": 10, "scope": "lyaer"}, "ACDC(): scope: unknown 'lyaer'"),
    ]
    for fn, kw, start in cases:
        with pytest.raises(ValueError) as e:
            make(fn, **kw)
        assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)


def test_registry_options_and_sparsify():
    ctx = BuildContext(model=net(), total_steps=1600, input_shape=(6,))
    g = GraNetOptions.arguments(GraNetOptions(), ctx)
    assert g == {"total_steps": 1600, "t_begin": 0, "t_end": 1100, "every": 1000,
                 "initial_sparsity": 0.0, "regrow_fraction": 0.5, "regrow_min": 0.005,
                 "regrow_end": 1600, "scope": None}
    a = ACDCOptions.arguments(ACDCOptions(), BuildContext(model=net(), total_steps=100,
                                                          input_shape=(6,)))
    assert a == {"total_steps": 100, "warmup_steps": 10, "phase_steps": 5, "final_steps": 15,
                 "scope": None}
    assert {"total_steps", "t_begin", "t_end", "every", "regrow_fraction",
            "scope"} <= set(options_of("granet"))
    model = net()
    sp = sparsify("acdc", model, OPTIMIZERS["sgd"](model.parameters()), total_steps=20)
    assert isinstance(sp, ACDC) and sp.scope == "global"


# --- full runs through the config ------------------------------------------------------------
RUN = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32", "train.batch_size=32",
       "train.duration=2ep", "data.heldout=64", "sparsity=0.9", "flow.enabled=false"]


@pytest.mark.parametrize("method, extra", [
    ("granet", ["sparse.granet_every=4", "sparse.granet_initial_sparsity=0.5"]),
    ("acdc", ["sparse.acdc_scope=layer"]),
])
def test_config_runs_finish_at_the_target_sparsity(method, extra, root):
    from sparseflow.config import load_config
    from sparseflow.store.checkpoint import load_checkpoint
    from sparseflow.store.database import Store
    from sparseflow.training.run import execute

    s = execute(load_config(None, RUN + [f"method={method}", *extra]), root=root,
                progress=False)
    assert s["status"] == "finished" and s["mask_updates"] > 0
    masks = load_checkpoint(s["checkpoint"])["callbacks"]["sparsifier"]["masks"]
    total = sum(m.numel() for m in masks.values())
    nnz = sum(int(m.sum()) for m in masks.values())
    assert nnz == half_up(Fraction(1, 10) * total)
    assert s["sparsity"] == pytest.approx(1 - nnz / total, abs=1e-6)
    with Store(root / "sparseflow.db") as st:
        rows = st.metrics(s["run_id"], prefix="topology/")
    series: dict[str, list[float]] = {}
    for r in rows:
        series.setdefault(r["name"], []).append(r["value"])
    assert series["topology/sparsity"][-1] == pytest.approx(s["sparsity"], abs=1e-6)
    if method == "acdc":  # each phase reports its sparsity: 0 dense, the target sparse
        assert set(series["topology/phase"]) == {0.0, 1.0}
        assert 0.0 in series["topology/sparsity"]
    else:
        assert "topology/regrow_fraction" in series and "topology/target_sparsity" in series
