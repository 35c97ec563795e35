"""Sparse execution (docs/science.md section 16): CSR kernels against autograd on the masked
dense layer, and the same training as the masked path for every method, with checkpoints,
resume, measurement and removal working in both executions."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseflow
from sparseflow.flow.norms import gradient_flow
from sparseflow.methods import make_grad_fn
from sparseflow.sparsity import CSRLinear, CSRPattern, sparse_linear, sparse_pays

# weights of the two executions after a few hundred steps: the same training up to rounding
# (different summation orders in the kernels), far below any weight's scale (~0.3). In float32
# a rounding difference can flip a ReLU whose input is within 1e-7 of zero, and the runs then
# drift apart by more (seen: 4e-2 after 240 SGD steps of a conv net); in float64 they do not
WEIGHT_ATOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def _mask(shape: tuple[int, int], density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < density


# --- kernels ---------------------------------------------------------------------------------
KERNEL_SETS = ["compiled", "torch"]


@pytest.fixture
def kernel_set(request: Any, monkeypatch: Any) -> str:
    """Run ``sparse_linear`` on one kernel set: the compiled (numba) loops, which CPU layers
    use with one torch thread, or torch's (MKL) kernels, used otherwise."""
    from sparseflow.sparsity import csr

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the compiled loops' condition
    if request.param == "torch":
        monkeypatch.setattr(csr, "compiled_kernels", lambda *a, **k: None)
    elif csr.compiled_kernels(torch.float32) is None:
        pytest.skip("numba is not installed (the fast extra)")
    else:
        monkeypatch.setattr(csr, "MIN_ROWS_COMPILED", 1)  # the tests' small batches too
    return str(request.param)


def test_pattern_layout_is_row_major_csr_and_its_transpose() -> None:
    mask = _mask((5, 7), 0.4, 0)
    w = torch.randn(5, 7) * mask
    p = CSRPattern.from_mask(mask)
    values = w[mask]  # boolean indexing walks the tensor in row-major order
    assert torch.equal(p.gather(w), values)
    assert torch.equal(p.dense(values), w)
    assert torch.equal(p.matrix(values).to_dense(), w)
    assert torch.equal(p.transposed(values).to_dense(), w.t())
    assert p.nnz == int(mask.sum()) and p.density == pytest.approx(int(mask.sum()) / 35)


@pytest.mark.parametrize("kernel_set", KERNEL_SETS, indirect=True)
@pytest.mark.parametrize("bias", [True, False])
def test_kernels_pass_gradcheck_in_float64(kernel_set: str, bias: bool) -> None:
    mask = _mask((6, 9), 0.35, 1)
    mask[2] = False  # an empty row (an output with no inputs)
    mask[:, 4] = False  # an empty column (an input no output reads)
    pattern = CSRPattern.from_mask(mask)
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    v = torch.randn(pattern.nnz, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    args = (x, v, b) if bias else (x, v)
    assert torch.autograd.gradcheck(lambda x, v, b=None: sparse_linear(x, v, pattern, b), args)


@pytest.mark.parametrize("kernel_set", KERNEL_SETS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lead", [(8,), (2, 3), (1,), (0,), (131,)])
def test_forward_and_gradients_equal_the_masked_dense_layer(
        kernel_set: str, dtype: torch.dtype, lead: tuple[int, ...]) -> None:
    mask = _mask((11, 13), 0.2, 2)
    pattern = CSRPattern.from_mask(mask)
    w = (torch.randn(11, 13, dtype=dtype) * mask).requires_grad_()
    b = torch.randn(11, dtype=dtype, requires_grad=True)
    x = torch.randn(*lead, 13, dtype=dtype, requires_grad=True)
    ref = F.linear(x, w * mask, b)
    gy = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, w, b), gy)
    v = pattern.gather(w.detach()).requires_grad_()
    x2 = x.detach().requires_grad_()
    b2 = b.detach().requires_grad_()
    out = sparse_linear(x2, v, pattern, b2)
    grads = torch.autograd.grad(out, (x2, v, b2), gy)
    assert out.shape == ref.shape and grads[0].shape == x.shape
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grads[0], ref_grads[0])
    torch.testing.assert_close(grads[1], ref_grads[1][mask])  # masked gradient, value order
    torch.testing.assert_close(grads[2], ref_grads[2])


@pytest.mark.parametrize("kernel_set", KERNEL_SETS, indirect=True)
def test_a_chain_of_sparse_layers_passes_activations_feature_major(kernel_set: str) -> None:
    """A sparse layer returns y as the transpose of a contiguous y^T; an element-wise op keeps
    that layout, so the next sparse layer reads its input without a copy; the results equal
    the dense chain's, forward and backward."""
    masks = [_mask((20, 30), 0.3, 5), _mask((7, 20), 0.4, 6)]
    patterns = [CSRPattern.from_mask(m) for m in masks]
    ws = [torch.randn(*m.shape, dtype=torch.float64) * m for m in masks]
    vs = [p.gather(w).requires_grad_() for p, w in zip(patterns, ws, strict=True)]
    x = torch.randn(16, 30, dtype=torch.float64, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64)
    h = sparse_linear(x, vs[0], patterns[0], b)
    assert h.t().is_contiguous()  # feature-major: y^T is the stored tensor
    a = torch.relu(h)
    assert a.t().is_contiguous()  # the activation kept the layout
    out = sparse_linear(a, vs[1], patterns[1])
    x_d = x.detach().requires_grad_()
    w_d = [w.clone().requires_grad_() for w in ws]
    ref = F.linear(torch.relu(F.linear(x_d, w_d[0], b)), w_d[1])
    torch.testing.assert_close(out, ref)
    gy = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, *vs), gy)
    want = torch.autograd.grad(ref, (x_d, *w_d), gy)
    torch.testing.assert_close(got[0], want[0])
    for g, w, m in zip(got[1:], want[1:], masks, strict=True):
        torch.testing.assert_close(g, w[m])


def test_feature_major_layout_is_read_from_strides_and_made_by_either_transpose() -> None:
    from sparseflow.sparsity.csr import compiled_kernels, feature_major, is_feature_major

    compiled = compiled_kernels(torch.float32, threads=1)
    for shape in [(128, 784), (9, 13), (8, 8), (1, 5), (5, 1), (0, 3), (1, 1)]:
        a = torch.randn(shape)
        stored = a.t().contiguous().t()
        assert is_feature_major(stored) == stored.t().is_contiguous() == True  # noqa: E712
        assert is_feature_major(a) == a.t().is_contiguous()
        assert feature_major(stored, compiled) is stored  # no copy
        for kernels in (None, compiled):
            got = feature_major(a, kernels)
            assert got.t().is_contiguous() and torch.equal(got, a)
    strided = torch.randn(10, 12)[:, ::2]  # neither layout: copied first
    assert not is_feature_major(strided) and not strided.is_contiguous()
    for kernels in (None, compiled):
        assert torch.equal(feature_major(strided, kernels), strided)


@pytest.mark.parametrize("kernel_set", KERNEL_SETS, indirect=True)
def test_captured_dense_gradient_is_the_unmasked_autograd_one(kernel_set: str) -> None:
    mask = _mask((7, 10), 0.3, 3)
    layer = CSRLinear.convert_(nn.Linear(10, 7).double())
    with torch.no_grad():
        layer.weight.mul_(mask)
    dense_w = layer.weight.detach().clone().requires_grad_()
    x = torch.randn(5, 10, dtype=torch.float64)
    ref = torch.autograd.grad(F.linear(x, dense_w, layer.bias).square().sum(), dense_w)[0]
    values = layer.hold_values_(CSRPattern.from_mask(mask))
    assert layer.weight is values and layer.dense_weight.numel() == 0
    layer.capture_dense_grad = True
    layer(x).square().sum().backward()
    torch.testing.assert_close(layer.dense_grad, ref)  # inactive positions too
    torch.testing.assert_close(values.grad, ref[mask])


def test_batches_below_the_compiled_minimum_run_on_torch_kernels(monkeypatch: Any) -> None:
    from types import SimpleNamespace

    from sparseflow.sparsity import csr

    real = csr.compiled_kernels(torch.float32, threads=1)
    if real is None:
        pytest.skip("numba is not installed (the fast extra)")
    calls: list[str] = []

    def counted(name: str) -> Any:
        def call(*args: Any) -> None:
            calls.append(name)
            getattr(real, name)(*args)
        return call

    spy = SimpleNamespace(**{n: counted(n) for n in ("transpose", "rows_times", "sampled")})
    monkeypatch.setattr(csr, "compiled_kernels", lambda *a, **k: spy)
    pattern = CSRPattern.from_mask(_mask((9, 12), 0.3, 4))
    v = torch.randn(pattern.nnz, requires_grad=True)
    for rows, compiled in [(csr.MIN_ROWS_COMPILED - 1, False), (csr.MIN_ROWS_COMPILED, True)]:
        calls.clear()
        x = torch.randn(rows, 12, requires_grad=True)
        sparse_linear(x, v, pattern).sum().backward()
        assert bool(calls) == compiled, rows
        if compiled:  # forward, input and weight gradients
            assert calls.count("rows_times") == 2 and calls.count("sampled") == 1


def test_compiled_kernels_run_with_one_thread_only() -> None:
    from sparseflow.sparsity.csr import compiled_kernels

    if compiled_kernels(torch.float32, threads=1) is None:
        pytest.skip("numba is not installed (the fast extra)")
    assert compiled_kernels(torch.float32, threads=2) is None  # MKL's parallel kernels then
    assert compiled_kernels(torch.float64, threads=1) is not None
    assert compiled_kernels(torch.bfloat16, threads=1) is None


def test_sparse_pays_follows_density_threads_and_size_on_torch_kernels(monkeypatch: Any
                                                                       ) -> None:
    from sparseflow.sparsity import execution
    from sparseflow.sparsity.execution import CROSSOVER

    monkeypatch.setattr(execution, "compiled_kernels", lambda *a, **k: None)
    big = (300, 784)
    assert sparse_pays(big, 0.05, threads=1) and sparse_pays(big, 0.05, threads=2)
    assert not sparse_pays(big, 0.9, threads=1)
    assert not sparse_pays((10, 100), 0.01, threads=1)  # too small to pay for the calls
    assert not sparse_pays((6, 1, 5, 5), 0.01, threads=1)  # not a Linear weight
    assert sparse_pays((100, 300), 0.02, threads=1) and not sparse_pays((100, 300), 0.02,
                                                                          threads=2)
    sizes = [size for size, _ in CROSSOVER]
    assert sizes == sorted(sizes, reverse=True)
    for size, by_threads in CROSSOVER:
        lo, hi = by_threads[1], by_threads[2]
        assert hi <= lo  # more threads favour the dense kernel
        if lo:
            shape = (size // 256, 256)
            assert sparse_pays(shape, lo, threads=1) and not sparse_pays(shape, lo + 0.01,
                                                                         threads=1)
            assert sparse_pays(shape, hi, threads=8) == (hi > 0)  # beyond the table


def test_sparse_pays_on_compiled_kernels_uses_their_own_table() -> None:
    from sparseflow.sparsity.csr import compiled_kernels
    from sparseflow.sparsity.execution import CROSSOVER_COMPILED

    if compiled_kernels(torch.float32, threads=1) is None:
        pytest.skip("numba is not installed (the fast extra)")
    (smallest, limit), = CROSSOVER_COMPILED
    shape = (smallest // 128, 128)
    assert sparse_pays(shape, limit, threads=1) and not sparse_pays(shape, limit + 0.01,
                                                                    threads=1)
    assert not sparse_pays((smallest // 128 - 1, 128), 0.01, threads=1)  # below the table
    assert sparse_pays((100, 300), 0.23, threads=1)  # LeNet-300-100's 90% ERK middle layer
    assert not sparse_pays((100, 300), 0.23, threads=2)  # MKL with two threads: masked
    assert not sparse_pays((10, 100), 0.01, threads=1)


def test_sparse_pays_only_on_the_measured_cpu() -> None:
    big = (300, 784)
    assert sparse_pays(big, 0.05, threads=1, device="cpu")
    assert sparse_pays(big, 0.05, threads=2, device=torch.device("cpu"))
    assert not sparse_pays(big, 0.05, threads=1, device="cuda")  # unmeasured: masked
    assert not sparse_pays(big, 0.01, threads=2, device=torch.device("meta"))


# --- training: the same run in both executions ------------------------------------------------
def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 48), nn.ReLU(), nn.Linear(48, 32),
                         nn.ReLU(), nn.Linear(32, 5))


def convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 2 * 2, 24), nn.ReLU(), nn.Linear(24, 5))


def batches(n: int, seed: int, conv: bool, dtype: torch.dtype = torch.float32
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shape = (16, 1, 6, 6)
    out = []
    for _ in range(n):
        x = torch.randn(shape, generator=g, dtype=dtype)
        out.append((x if conv else x.flatten(1), torch.randint(0, 5, (16,), generator=g)))
    return out


HELDOUT = batches(1, 999, conv=False)[0]

# method -> (factory keyword arguments, needs a training batch / heldout) for 240 steps
METHODS: dict[str, Callable[[nn.Module], dict[str, Any]]] = {
    "static": lambda m: {"sparsity": 0.8},
    "set": lambda m: {"sparsity": 0.8, "t_end": 200, "update_every": 20},
    "rigl": lambda m: {"sparsity": 0.8, "t_end": 200, "update_every": 20},
    "rigl_inverted": lambda m: {"sparsity": 0.8, "t_end": 200, "update_every": 20},
    "rigl_heldout": lambda m: {"sparsity": 0.8, "t_end": 200, "update_every": 20},
    "gradual": lambda m: {"sparsity": 0.85, "t_begin": 20, "t_end": 160, "every": 20},
    "oneshot": lambda m: {"sparsity": 0.85, "t_prune": 60},
    "snip": lambda m: {"sparsity": 0.8},
}


def build(method: str, model: nn.Module, opt: torch.optim.Optimizer, execution: str,
          conv: bool, dtype: torch.dtype = torch.float32) -> sparseflow.methods.Sparsifier:
    kw = METHODS[method](model)
    if method == "rigl_heldout":
        x, y = batches(1, 999, conv, dtype)[0]
        kw["grad_fn"] = lambda: make_grad_fn(model, s_params(model), x, y)()
        return sparseflow.rigl(model, opt, execution=execution, **kw)
    if method == "snip":
        kw["batch"] = batches(1, 998, conv, dtype)[0]
    return sparseflow.sparsify(method, model, opt, execution=execution, **kw)


def s_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if n.endswith("weight")}


def train(method: str, execution: str, *, conv: bool, optim: str, steps: int = 240,
          dtype: torch.dtype = torch.float32
          ) -> tuple[nn.Module, Any, list[dict[str, torch.Tensor]]]:
    model = (convnet if conv else mlp)(0).to(dtype)
    opt = (torch.optim.Adam(model.parameters(), lr=3e-3) if optim == "adam" else
           torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4))
    sp = build(method, model, opt, execution, conv, dtype)
    history = []
    for x, y in batches(steps, 1, conv, dtype):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sp.step() is not None:
            history.append({n: m.clone() for n, m in sp.masks.masks.items()})
    return model, sp, history


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("conv", "optim", "dtype"), [(False, "adam", torch.float32),
                                                      (True, "sgd", torch.float64)])
def test_sparse_execution_trains_like_the_masked_path(method: str, conv: bool, optim: str,
                                                      dtype: torch.dtype) -> None:
    m_model, m_sp, m_hist = train(method, "masked", conv=conv, optim=optim, dtype=dtype)
    s_model, s_sp, s_hist = train(method, "sparse", conv=conv, optim=optim, dtype=dtype)
    linear = [n for n, e in s_sp.execution.executions().items() if e == "sparse"]
    assert linear and all(n in s_sp.params for n in linear)
    assert all(isinstance(s_model.get_submodule(n.rsplit(".", 1)[0]), CSRLinear)
               for n in linear)
    assert len(m_hist) == len(s_hist)
    for a, b in zip(m_hist, s_hist, strict=True):  # the same masks after every update
        assert all(torch.equal(a[n], b[n]) for n in a)
    m_state, s_state = m_model.state_dict(), s_model.state_dict()
    assert list(m_state) == list(s_state)  # same names, dense shapes
    for name, t in m_state.items():
        assert s_state[name].shape == t.shape
        assert float((s_state[name] - t).abs().max()) <= WEIGHT_ATOL[dtype], name
    for name in linear:  # masked weights are exactly zero (there is no storage for them)
        assert bool((s_state[name][~s_sp.masks[name]] == 0).all())


@pytest.mark.parametrize("kernel_set", KERNEL_SETS, indirect=True)
@pytest.mark.parametrize("method", ["static", "rigl"])
def test_both_kernel_sets_train_like_the_masked_path(method: str, kernel_set: str) -> None:
    """The method test above runs the kernels a one-thread CPU run uses; here each set by
    name (float64, so the runs agree to rounding)."""
    m_model, _, m_hist = train(method, "masked", conv=False, optim="sgd", steps=120,
                               dtype=torch.float64)
    s_model, s_sp, s_hist = train(method, "sparse", conv=False, optim="sgd", steps=120,
                                  dtype=torch.float64)
    assert "sparse" in s_sp.execution.executions().values()
    assert len(m_hist) == len(s_hist) and (method == "static" or m_hist)  # RigL updated
    assert all(torch.equal(a[n], b[n]) for a, b in zip(m_hist, s_hist, strict=True) for n in a)
    m_state, s_state = m_model.state_dict(), s_model.state_dict()
    for name, t in m_state.items():
        assert float((s_state[name] - t).abs().max()) <= WEIGHT_ATOL[torch.float64], name


def test_memory_scales_with_the_non_zeros() -> None:
    model, sp, _ = train("rigl", "sparse", conv=False, optim="adam", steps=30)
    opt = sp.optimizer
    for name, mask in sp.masks.masks.items():
        p = sp.execution.parameter(name)  # the one the optimiser holds now
        assert any(q is p for g in opt.param_groups for q in g["params"])
        assert sp.params[name].numel() == 0  # the original weight gave up its data
        nnz = int(mask.sum())
        assert p.shape == (nnz,)
        state = [t for k, t in opt.state[p].items() if k != "step"]
        assert state and all(t.shape == (nnz,) for t in state)  # exp_avg, exp_avg_sq
        assert name not in sp.masks._factors  # no dense float mask kept either


def test_grown_weights_restart_with_zero_state_in_sparse_execution() -> None:
    model = mlp(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sp = sparseflow.rigl(model, opt, sparsity=0.7, distribution="uniform", t_end=50,
                         update_every=5, drop_fraction=0.5, drop_schedule="constant",
                         execution="sparse")
    for x, y in batches(10, 4, conv=False):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        before = {n: sp.masks[n].clone() for n in sp.params}
        old = {n: {k: v.clone() for k, v in opt.state[sp.execution.parameter(n)].items()}
               for n in sp.params}
        if sp.step() is None:
            continue
        for name in sp.params:
            p = sp.execution.parameter(name)
            new = sp.masks[name]
            dense = {k: torch.zeros(new.shape) for k in ("exp_avg", "exp_avg_sq")}
            for k in dense:  # lay the values out by hand: row-major order of the mask
                dense[k][new] = opt.state[p][k]
                was = torch.zeros(new.shape)
                was[before[name]] = old[name][k]
                kept = before[name] & new
                changed = new & ~before[name]
                assert bool((dense[k][changed] == 0).all()), f"{k} of grown {name}"
                # kept positions keep their state, except those dropped and regrown at once
                same = dense[k][kept] == was[kept]
                assert float(same.float().mean()) > 0.5
            w = torch.zeros(new.shape)
            w[new] = p.detach()
            assert bool((w[new & ~before[name]] == 0).all()), f"grown {name} not zero"


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer, sp: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "sparsifier": sp.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(("first", "second"), [("sparse", "sparse"), ("sparse", "masked"),
                                               ("masked", "sparse")])
def test_checkpoint_written_in_one_execution_resumes_in_the_other(first: str, second: str
                                                                  ) -> None:
    data = batches(80, 5, conv=False)

    def run(execution: str, steps: range, state: dict[str, Any] | None = None):
        model = mlp(0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        sp = sparseflow.rigl(model, opt, sparsity=0.8, t_end=70, update_every=10,
                             execution=execution)
        if state is not None:  # the training loop's order: model, optimiser, sparsifier
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sp.load_state_dict(state["sparsifier"])
        for t in steps:
            x, y = data[t]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sp.step()
        return model, opt, sp

    whole = run(second, range(80))
    half = run(first, range(35))
    state = _snapshot(*half)
    for t in state["model"].values():  # a plain dense state dict
        assert t.dim() != 1 or t.numel() in (48, 32, 5)
    resumed = run(second, range(35, 80), state)
    assert all(torch.equal(whole[2].masks[n], resumed[2].masks[n]) for n in whole[2].params)
    a, b = whole[0].state_dict(), resumed[0].state_dict()
    for name in a:
        if first == second:
            assert torch.equal(a[name], b[name]), name  # exact resume
        else:
            assert float((a[name] - b[name]).abs().max()) <= WEIGHT_ATOL[torch.float32], name


def test_sparse_state_dict_loads_into_a_plain_model() -> None:
    model, sp, _ = train("set", "sparse", conv=False, optim="adam", steps=45)
    plain = mlp(1)
    plain.load_state_dict(model.state_dict())
    x = batches(1, 7, conv=False)[0][0]
    torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)


def test_gradient_flow_is_measured_the_same_in_a_dense_block() -> None:
    out = {}
    for execution in ("masked", "sparse"):
        model, sp, _ = train("rigl", execution, conv=False, optim="adam", steps=30)
        with sp.dense():
            assert all(sp.execution.parameter(n) is p and p.dim() == 2
                       for n, p in sp.params.items())
            out[execution] = gradient_flow(model, sp.masks.masks, *HELDOUT)
        assert all((sp.execution.parameter(n).dim() == 1) == (execution == "sparse")
                   for n in sp.params)
    for key, value in out["masked"].items():
        assert out["sparse"][key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


def test_masked_hessian_of_a_sparse_model_in_a_dense_block() -> None:
    from sparseflow.flow.hessian import hessian_eigenvalues

    out = {}
    for execution in ("masked", "sparse"):
        model, sp, _ = train("static", execution, conv=False, optim="adam", steps=20,
                             dtype=torch.float64)
        x, y = batches(1, 9, conv=False, dtype=torch.float64)[0]
        with sp.dense():
            out[execution] = hessian_eigenvalues(model, sp.masks.masks, x, y, k=3,
                                                 lanczos_steps=60)
    assert out["sparse"] == pytest.approx(out["masked"], rel=1e-8)


def test_auto_runs_sparse_only_where_it_pays() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sparseflow.static(model, opt, sparsity=0.9, distribution="uniform", execution="auto")
    want = {n: "sparse" if sparse_pays(tuple(sp.masks[n].shape), 0.1) else "masked"
            for n in sp.params}
    assert sp.execution.executions() == want
    assert want["0.weight"] == "sparse" and want["2.weight"] == "masked"  # 3000 weights
    assert sp.summary()["execution"] == want


def test_gradual_pruning_under_auto_switches_a_layer_to_sparse_when_it_gets_sparse() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparseflow.gradual(model, opt, sparsity=0.95, t_begin=0, t_end=20, every=5,
                            execution="auto")
    seen = [sp.execution.executions()["0.weight"]]
    g = torch.Generator().manual_seed(0)
    for _ in range(22):
        x, y = torch.randn(8, 512, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
        seen.append(sp.execution.executions()["0.weight"])
        p = sp.execution.parameter("0.weight")
        state = opt.state[p]["momentum_buffer"]
        assert state.shape == p.shape  # the state follows the layout
    assert seen[0] == "masked" and seen[-1] == "sparse"


def test_remove_gives_back_plain_linear_layers_with_dense_state() -> None:
    model, sp, _ = train("static", "sparse", conv=False, optim="adam", steps=5)
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    sp.remove()
    assert all(type(m) is not CSRLinear for m in model.modules())
    for name, p in sp.params.items():
        assert p.shape == sp.masks[name].shape
        assert all(t.shape == p.shape for k, t in sp.optimizer.state[p].items() if k != "step")
    for name, t in model.state_dict().items():
        assert torch.equal(t, weights[name])


def test_shared_and_subclassed_linear_weights_stay_masked() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(30, 30)
            self.b = nn.Linear(30, 30)
            self.b.weight = self.a.weight
            self.c = nn.modules.linear.NonDynamicallyQuantizableLinear(30, 30)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(self.a(x)))

    model = Tied()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sparseflow.static(model, opt, sparsity=0.8, execution="sparse")
    assert set(sp.execution.executions().values()) == {"masked"}


def test_bad_execution_is_a_one_line_error() -> None:
    model = mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"execution: unknown 'fast'; valid: masked, sparse, auto"):
        sparseflow.static(model, opt, execution="fast")


# --- inside runs ----------------------------------------------------------------------------
RUN = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=64", "train.batch_size=32",
       "train.duration=3ep", "data.heldout=64", "sparse.update_every=8", "sparse.prune_every=4",
       "sparsity=0.9", "flow.every=8"]


def _run_masks(summary: dict[str, Any]) -> dict[str, torch.Tensor]:
    from sparseflow.store.checkpoint import load_checkpoint

    return load_checkpoint(summary["checkpoint"])["callbacks"]["sparsifier"]["masks"]


@pytest.mark.parametrize("method", ["static", "set", "rigl", "gradual", "snip"])
def test_runs_in_sparse_execution_match_masked_runs(method: str, tmp_path: Any) -> None:
    from sparseflow.config import load_config, run_id
    from sparseflow.store.database import Store
    from sparseflow.training.run import execute

    out = {}
    for execution in ("masked", "sparse"):
        cfg = load_config(None, [*RUN, f"method={method}", f"sparse.execution={execution}"])
        out[execution] = (run_id(cfg), execute(cfg, root=tmp_path / execution, progress=False))
    (m_id, masked), (s_id, sparse) = out["masked"], out["sparse"]
    assert m_id == s_id  # the execution does not name the experiment
    assert sparse["status"] == "finished" and "execution" not in masked
    assert set(sparse["execution"].values()) == {"sparse"}
    assert sparse["test_loss"] == pytest.approx(masked["test_loss"], abs=1e-4)
    a, b = _run_masks(masked), _run_masks(sparse)
    assert all(torch.equal(a[n], b[n]) for n in a)
    with Store(tmp_path / "sparse" / "sparseflow.db") as st:
        flow = {r["name"]: r["value"] for r in st.metrics(s_id, prefix="flow/egf_l2")
                if r["step"] == 8}
    with Store(tmp_path / "masked" / "sparseflow.db") as st:
        ref = {r["name"]: r["value"] for r in st.metrics(m_id, prefix="flow/egf_l2")
               if r["step"] == 8}
    assert flow and flow.keys() == ref.keys()
    for key, value in ref.items():
        assert flow[key] == pytest.approx(value, rel=1e-4), key


def test_rigl_run_in_sparse_execution_resumes_exactly(tmp_path: Any, stop_after: Any,
                                                      root: Any) -> None:
    from sparseflow.config import load_config
    from sparseflow.training.run import execute

    cfg = load_config(None, [*RUN, "method=rigl", "train.checkpoint_every=10it",
                             "sparse.execution=sparse", "optim.name=adam", "optim.lr=0.003"])
    full = execute(cfg, root=tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(21)])
    resumed = execute(cfg, root=root, progress=False)
    assert resumed["test_loss"] == full["test_loss"]
    a, b = _run_masks(full), _run_masks(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("method", ["gradual", "rigl_heldout"])
def test_a_loop_that_keeps_its_loss_alive_across_pattern_changes(method: str) -> None:
    """A graph still alive (``loss`` of the last step) pins the shape autograd saw for each
    Parameter: a pattern change (new nnz) or a dense block must not reuse it."""
    model = mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = build(method, model, opt, "sparse", conv=False)
    kept = []
    for t, (x, y) in enumerate(batches(100, 2, conv=False), start=1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sp.step()
        if t % 10 == 0:  # measure while this step's graph is still referenced
            with sp.dense():
                gradient_flow(model, sp.masks.masks, *HELDOUT)
        kept.append(loss)  # and keep a few graphs alive for good measure
        kept = kept[-3:]
    assert sp.updates > 0 and set(sp.execution.executions().values()) == {"sparse"}


def test_landscape_analyses_read_runs_trained_in_sparse_execution(tmp_path: Any, capsys: Any
                                                                  ) -> None:
    import json

    from sparseflow.cli import main
    from sparseflow.config import load_config
    from sparseflow.training.run import execute

    a, b = (execute(load_config(None, [*RUN, "method=set", f"seed={s}",
                                       "sparse.execution=sparse"]),
                    root=tmp_path, progress=False) for s in (1, 2))
    capsys.readouterr()
    code = main(["analyze", "interpolate", a["run_id"], b["run_id"], "--split", "test",
                 "--alphas", "0:1:3", "--mask", "union", "--json", "--root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    # the analysis evaluates the dense checkpoint; training evaluated on the sparse kernels
    assert res["loss"][0] == pytest.approx(a["test_loss"], rel=1e-5)
    assert res["loss"][-1] == pytest.approx(b["test_loss"], rel=1e-5)
