"""flow.hessian, flow.hvp, flow.lanczos: restricted Hessian spectra, g^T H g and traces
against a dense Hessian."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparseflow.flow.hessian import hessian_eigenvalues, hessian_report
from sparseflow.flow.hvp import hvp_fn
from sparseflow.flow.lanczos import hutchinson, lanczos
from sparseflow.models import MLP

N_EX = 30


def tiny_model(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return MLP((4,), [5], 3, batchnorm=batchnorm).double()


def batch(seed: int = 1, n: int = N_EX) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=g
    )


def random_masks(model: nn.Module, density: float = 0.7, seed: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for n, p in model.named_parameters():
        if n.endswith("weight") and p.dim() == 2:
            m = torch.rand(p.shape, generator=g) < density
            m.view(-1)[:3] = True  # at least 3 active entries per layer
            masks[n] = m
    return masks


def apply_masks(model: nn.Module, masks: dict) -> nn.Module:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return model


def layer_names(model: nn.Module, include_biases: bool) -> dict[str, list[str]]:
    groups = {}
    for n, p in model.named_parameters():
        if n.endswith("weight") and p.dim() == 2:
            groups[n] = [n]
            if include_biases:
                groups[n].append(n[: -len("weight")] + "bias")
    return groups


def dense_reference(model, masks, x, y, include_biases=False):
    """(H_active, g_active, {layer: index tensor into the active coordinates})."""
    groups = layer_names(model, include_biases)
    names = [n for n, _ in model.named_parameters() if any(n in g for g in groups.values())]
    params = dict(model.named_parameters())
    fixed = {n: p.detach() for n, p in params.items() if n not in names}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def f(flat):
        d = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return F.cross_entropy(functional_call(model, (d, fixed, buffers), (x,)), y)

    hess = torch.autograd.functional.hessian(f, flat0)
    grad = torch.autograd.functional.jacobian(f, flat0)
    active = torch.cat(
        [
            masks[n].reshape(-1) if masks and n in masks else torch.ones(s, dtype=torch.bool)
            for n, s in zip(names, sizes, strict=True)
        ]
    )
    owner = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    idx = active.nonzero().squeeze(1)
    h, g, owner = hess[idx][:, idx], grad[idx], owner[idx]
    blocks = {
        layer: torch.cat([(owner == names.index(n)).nonzero().squeeze(1) for n in members])
        for layer, members in groups.items()
    }
    return h, g, blocks


def check_block(rep, h, g, k, *, trace_exact=True):
    ev = torch.linalg.eigvalsh(h)
    scale = float(ev.abs().max())
    k = min(k, len(ev))
    torch.testing.assert_close(
        torch.tensor(rep.top, dtype=torch.float64), ev.flip(0)[:k], rtol=1e-4, atol=1e-8 * scale
    )
    torch.testing.assert_close(
        torch.tensor(rep.bottom, dtype=torch.float64), ev[:k], rtol=1e-4, atol=1e-8 * scale
    )
    ghg = float(g @ h @ g)
    assert rep.gHg == pytest.approx(ghg, rel=1e-8, abs=1e-14)
    assert rep.gHg_over_gg == pytest.approx(ghg / float(g @ g), rel=1e-8)
    assert rep.n_active == len(ev)
    if trace_exact:
        assert rep.trace == pytest.approx(float(h.trace()), rel=1e-10, abs=1e-14)
        assert rep.trace_std == 0.0


@pytest.mark.parametrize("include_biases", [False, True])
def test_matches_dense_restricted_hessian(include_biases):
    model = tiny_model()
    masks = random_masks(model)
    apply_masks(model, masks)
    x, y = batch()
    h, g, blocks = dense_reference(model, masks, x, y, include_biases)
    rep = hessian_report(
        model,
        masks,
        x,
        y,
        top_k=3,
        include_biases=include_biases,
        lanczos_steps=10_000,
        hutchinson_samples=10_000,
    )
    check_block(rep, h, g, 3)
    assert set(rep.per_layer) == set(blocks)
    for layer, idx in blocks.items():
        sub = rep.per_layer[layer]
        assert sub.per_layer == {}
        check_block(sub, h[idx][:, idx], g[idx], 3)
    # per-layer traces add up to the whole trace (block diagonal of the same matrix)
    assert sum(s.trace for s in rep.per_layer.values()) == pytest.approx(rep.trace, rel=1e-10)


def test_default_adaptive_lanczos_top_and_bottom():
    model = apply_masks(tiny_model(3), random_masks(tiny_model(3), seed=5))
    masks = random_masks(tiny_model(3), seed=5)
    x, y = batch(4)
    h, _, _ = dense_reference(model, masks, x, y)
    ev = torch.linalg.eigvalsh(h)
    rep = hessian_report(model, masks, x, y, top_k=2, per_layer=False, hutchinson_samples=0)
    assert rep.converged
    torch.testing.assert_close(
        torch.tensor(rep.top, dtype=torch.float64), ev.flip(0)[:2], rtol=1e-6, atol=1e-10
    )
    # reported residual bounds hold
    for val, err, true in zip(rep.top, rep.top_err, ev.flip(0)[:2].tolist(), strict=True):
        assert abs(val - true) <= err + 1e-12
    assert rep.bottom[0] == pytest.approx(float(ev[0]), rel=1e-4, abs=1e-10)
    assert math.isnan(rep.trace) and math.isnan(rep.trace_std)
    assert hessian_eigenvalues(model, masks, x, y, k=2) == pytest.approx(rep.top, rel=1e-6)
    bottom = hessian_eigenvalues(model, masks, x, y, k=1, which="bottom")
    assert bottom[0] == pytest.approx(float(ev[0]), rel=1e-4, abs=1e-10)


def test_hutchinson_within_standard_errors_of_exact_trace():
    model = tiny_model(1)
    masks = random_masks(model, density=0.9, seed=3)
    apply_masks(model, masks)
    x, y = batch(2)
    h, _, _ = dense_reference(model, masks, x, y)
    exact = float(h.trace())
    rep = hessian_report(model, masks, x, y, top_k=1, per_layer=False, hutchinson_samples=25)
    assert rep.n_active > 25  # the estimator, not the exact mode
    assert rep.trace_std > 0
    assert abs(rep.trace - exact) < 4 * rep.trace_std


def test_hutchinson_estimator_exact_on_diagonal_and_unbiased_on_dense():
    d = torch.linspace(-2.0, 5.0, 17, dtype=torch.float64)
    mean, se = hutchinson(lambda v: d * v, 17, samples=5, seed=0)
    assert mean == pytest.approx(float(d.sum()), rel=1e-12)
    assert se == 0.0
    a = torch.randn(20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = a + a.T
    mean, se = hutchinson(lambda v: a @ v, torch.zeros(20, dtype=torch.float64), 400, seed=1)
    assert abs(mean - float(a.trace())) < 4 * se


def test_lanczos_exact_with_full_krylov_space_and_multiplicities():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    spectrum = torch.tensor([-1.5, -1.5, 0, 0, 0, 0, 0.5, 2, 2, 2, 3, 7], dtype=torch.float64)
    a = q @ torch.diag(spectrum) @ q.T
    res = lanczos(lambda v: a @ v, 12, k=3, steps=12, seed=0, tol=0)
    torch.testing.assert_close(res.eigenvalues, spectrum, atol=1e-10, rtol=0)
    assert res.steps == 12 and res.converged
    # template tensors: vectors take their shape and dtype
    res = lanczos(
        lambda v: (a @ v.reshape(-1).double()).view(3, 4).float(),
        torch.zeros(3, 4),
        k=1,
        steps=12,
        seed=0,
        which="top",
    )
    assert res.top(1)[0] == pytest.approx(7.0, rel=1e-5)


def test_masked_positions_never_matter():
    masks = random_masks(tiny_model())
    zeroed = apply_masks(tiny_model(), masks)
    garbage = copy.deepcopy(zeroed)
    with torch.no_grad():
        for n, p in garbage.named_parameters():
            if n in masks:
                p[~masks[n]] = torch.randn(int((~masks[n]).sum()), dtype=p.dtype) * 3
    x, y = batch()
    kw = dict(top_k=2, hutchinson_samples=8, lanczos_steps=15)
    a = hessian_report(zeroed, masks, x, y, **kw)
    b = hessian_report(garbage, masks, x, y, **kw)
    assert a == b
    assert a.n_active == sum(int(m.sum()) for m in masks.values())
    # hvp ignores v at masked positions and returns zeros there
    params = {n: p for n, p in zeroed.named_parameters() if n in masks}
    hvp = hvp_fn(zeroed, params, masks, x, y)
    v = {n: torch.randn_like(p) for n, p in params.items()}
    v_clean = {n: t * masks[n] for n, t in v.items()}
    hv, hv_clean = hvp(v), hvp(v_clean)
    for n in params:
        torch.testing.assert_close(hv[n], hv_clean[n], rtol=0, atol=0)
        assert bool((hv[n][~masks[n]] == 0).all())


def test_hvp_matches_dense_and_is_symmetric_under_dropout():
    model = tiny_model(4)
    masks = random_masks(model, seed=9)
    apply_masks(model, masks)
    x, y = batch(5)
    h, _, _ = dense_reference(model, masks, x, y)
    names = list(layer_names(model, False))
    params = {n: p for n, p in model.named_parameters() if n in names}
    hvp = hvp_fn(model, params, masks, x, y)
    v = {n: torch.randn_like(p) * masks[n] for n, p in params.items()}
    flat = torch.cat([v[n].reshape(-1)[masks[n].reshape(-1)] for n in names])
    out = hvp(v)
    got = torch.cat([out[n].reshape(-1)[masks[n].reshape(-1)] for n in names])
    torch.testing.assert_close(got, h @ flat, rtol=1e-10, atol=1e-12)

    drop = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    drop.train()
    params = dict(drop.named_parameters())
    u = {n: torch.randn_like(p) for n, p in params.items()}
    w = {n: torch.randn_like(p) for n, p in params.items()}
    state = torch.get_rng_state()
    hvp = hvp_fn(drop, params, None, x, y, batch_size=8)  # a fresh forward per product
    hu, hw = hvp(u), hvp(w)
    lhs = sum(float((w[n] * hu[n]).sum()) for n in params)
    rhs = sum(float((u[n] * hw[n]).sum()) for n in params)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    assert torch.equal(torch.get_rng_state(), state)


def test_batch_size_accumulation_equals_full_batch():
    model = tiny_model(2)
    masks = random_masks(model, seed=4)
    apply_masks(model, masks)
    x, y = batch(6)
    kw = dict(top_k=2, include_biases=True, lanczos_steps=20, hutchinson_samples=10)
    full = hessian_report(model, masks, x, y, **kw)
    chunked = hessian_report(model, masks, x, y, batch_size=7, **kw)  # 7+7+7+7+2
    for a, b in [(full, chunked)] + [
        (full.per_layer[k], chunked.per_layer[k]) for k in full.per_layer
    ]:
        for f in ("top", "bottom"):
            torch.testing.assert_close(
                torch.tensor(getattr(b, f)), torch.tensor(getattr(a, f)), rtol=1e-8, atol=1e-12
            )
        for f in ("gHg", "gHg_over_gg", "trace", "trace_std"):
            assert getattr(b, f) == pytest.approx(getattr(a, f), rel=1e-8, abs=1e-12)


def test_batchnorm_train_mode_state_untouched():
    model = tiny_model(5, batchnorm=True)
    masks = random_masks(model, seed=6)
    apply_masks(model, masks)
    model.train()
    with torch.no_grad():
        for b in model.modules():
            if isinstance(b, nn.BatchNorm1d):
                b.running_mean.uniform_(-1, 1)
                b.running_var.uniform_(0.5, 2)
    bn_names = [n for n, p in model.named_parameters() if ".bn." in n]
    assert bn_names
    dict(model.named_parameters())[bn_names[0]].requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    x, y = batch(7)

    rep = hessian_report(model, masks, x, y, top_k=2, lanczos_steps=10_000, include_biases=True)

    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    for n, p in model.named_parameters():
        assert p.grad is None, n
        assert p.requires_grad == flags[n], n
        assert torch.equal(p, weights[n]), n
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    # evaluated in train mode: batch statistics, matching a dense train-mode Hessian
    h, _, _ = dense_reference(model, masks, x, y, include_biases=True)
    ev = torch.linalg.eigvalsh(h)
    assert rep.top[0] == pytest.approx(float(ev[-1]), rel=1e-6)
    assert rep.bottom[0] == pytest.approx(float(ev[0]), rel=1e-6, abs=1e-10)
    model.eval()
    assert hessian_report(model, masks, x, y, top_k=1, per_layer=False).top[0] != pytest.approx(
        rep.top[0], rel=1e-3
    )


def test_dense_masks_none_equals_all_true_masks():
    model = tiny_model(6)
    x, y = batch(8)
    ones = {
        n: torch.ones_like(p, dtype=torch.bool)
        for n, p in model.named_parameters()
        if n.endswith("weight")
    }
    kw = dict(top_k=2, lanczos_steps=12, hutchinson_samples=5)
    a = hessian_report(model, None, x, y, **kw)
    with torch.no_grad():  # works inside no_grad too
        b = hessian_report(model, ones, x, y, **kw)
    assert a == b
    assert a.n_active == sum(m.numel() for m in ones.values())


def test_errors():
    model = apply_masks(tiny_model(), random_masks(tiny_model()))
    masks = random_masks(tiny_model())
    x, y = batch()
    n = sum(int(m.sum()) for m in masks.values())
    with pytest.raises(ValueError, match=f"top_k={n + 1} exceeds the {n} active weights"):
        hessian_report(model, masks, x, y, top_k=n + 1)
    with pytest.raises(ValueError, match="no sparsifiable"):
        hessian_report(nn.Sequential(nn.BatchNorm1d(4)).double(), None, x, y)
    bad = dict(masks)
    first = next(iter(bad))
    bad[first] = bad[first].T
    with pytest.raises(ValueError, match="shape"):
        hessian_report(model, bad, x, y)
    with pytest.raises(ValueError, match="names no parameter of the model"):
        hessian_report(model, {**masks, "nope.weight": masks[first]}, x, y)
    for kw in ({"top_k": 0}, {"hutchinson_samples": -1}, {"lanczos_steps": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            hessian_report(model, masks, x, y, **kw)
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 5, k=6, steps=5)


def test_progress_counts_products_and_changes_no_number(capsys, monkeypatch):
    """The progress bar (shown on a terminal only) counts Hessian-vector products; the report
    is the same with and without it."""
    import io

    import tqdm

    model = tiny_model()
    x, y = batch()
    plain = hessian_report(model, None, x, y, top_k=2, hutchinson_samples=3)
    seen: list[int] = []
    original = tqdm.tqdm.update

    def count(self, n=1):
        seen.append(n)
        return original(self, n)

    monkeypatch.setattr(tqdm.tqdm, "update", count)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    shown = hessian_report(model, None, x, y, top_k=2, hutchinson_samples=3, progress=True)
    assert shown.top == plain.top and shown.bottom == plain.bottom
    assert shown.trace == plain.trace and shown.gHg == plain.gHg
    assert len(seen) > 3  # one per product: Lanczos steps, g^T H g, probes, per layer
