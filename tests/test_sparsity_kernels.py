"""sparsity.kernels: the compiled bool-mask loop and torch's multiply agree, and the choice
between them follows the documented rule."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from sparseflow.methods import static
from sparseflow.models import build_model
from sparseflow.sparsity import kernels

pytest.importorskip("numba")


@pytest.fixture
def choose(monkeypatch):
    """Reload the kernel choice under a given SPARSEFLOW_KERNELS; restore it afterwards."""
    saved = (kernels._loaded, kernels._kernels)

    def set_choice(value: str | None) -> str:
        if value is None:
            monkeypatch.delenv("SPARSEFLOW_KERNELS", raising=False)
        else:
            monkeypatch.setenv("SPARSEFLOW_KERNELS", value)
        kernels._loaded, kernels._kernels = False, None
        return kernels.kernel_name()

    yield set_choice
    kernels._loaded, kernels._kernels = saved


@pytest.fixture
def spy(monkeypatch):
    """Count the elements each call of a compiled loop covers."""
    found = kernels._load()
    if found is None:
        pytest.skip("compiled kernels disabled")
    calls: list[int] = []

    def counting(real):
        def counted(address, mask):
            calls.append(mask.size)
            real(address, mask)
        return counted

    monkeypatch.setattr(kernels, "_kernels", {k: counting(v) for k, v in found.items()})
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_loop_equals_the_multiply(dtype, spy):
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(300, 784, generator=g) < 0.08
    t = torch.randn(300, 784, generator=g, dtype=dtype)
    want = t * mask.to(dtype)
    kernels.mask_(t, kernels.compiled_mask(t, mask), mask.to(dtype))
    assert spy == [t.numel()]
    assert torch.equal(t, want)
    assert bool((t[~mask] == 0).all()) and not bool(torch.signbit(t[~mask]).any())  # +0.0


def test_masked_nan_becomes_zero_with_the_loop_and_stays_nan_with_the_multiply(spy):
    t = torch.tensor([float("nan"), 1.0, float("inf"), -2.0])
    mask = torch.tensor([False, True, False, False])
    u = t.clone()
    kernels.mask_(t, kernels.compiled_mask(t, mask), mask.float())
    assert t.tolist() == [0.0, 1.0, 0.0, 0.0]
    u.mul_(mask.float())
    assert torch.isnan(u[0]) and u[1] == 1.0


def test_which_path_runs(spy, monkeypatch):
    mask = torch.rand(400, 100) < 0.5
    big = torch.randn(400, 100)  # 40,000 >= torch's grain size
    small = torch.randn(100, 100)
    small_mask = mask[:100].clone()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    kernels.mask_(big, kernels.compiled_mask(big, mask), mask.float())
    assert spy == []  # torch's parallel multiply on a large tensor with two threads
    kernels.mask_(small, kernels.compiled_mask(small, small_mask), small_mask.float())
    assert spy == [10_000]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    kernels.mask_(big, kernels.compiled_mask(big, mask), mask.float())
    assert spy == [10_000, 40_000]
    assert bool((big[~mask] == 0).all())
    # not eligible: half precision, a transposed (non-contiguous) view
    half = torch.randn(400, 100, dtype=torch.float16)
    assert kernels.compiled_mask(half, mask) is None
    kernels.mask_(half, None, mask.half())
    assert bool((half[~mask] == 0).all())
    view = torch.randn(100, 400).t()
    assert kernels.compiled_mask(view, mask) is None
    kernels.mask_(view, kernels.compiled_mask(big, mask), mask.float())  # falls back too
    assert spy == [10_000, 40_000]
    assert bool((view[~mask] == 0).all())


def test_a_write_through_the_loop_bumps_the_autograd_version(spy):
    w = torch.nn.Parameter(torch.randn(10, 10))
    mask = torch.rand(10, 10) < 0.5
    before = w._version
    kernels.mask_(w, kernels.compiled_mask(w, mask), mask.float())
    assert spy == [100] and w._version > before
    assert bool((w.detach()[~mask] == 0).all())


def test_environment_choice(choose, monkeypatch):
    assert choose("torch") == "torch"
    assert kernels.compiled_mask(torch.zeros(3), torch.ones(3, dtype=torch.bool)) is None
    assert choose(None) == "numba"
    with pytest.raises(ValueError, match="SPARSEFLOW_KERNELS") as e:
        choose("fastest")
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "sparseflow.sparsity._numba_kernels", None)  # not importable
    assert choose("auto") == "torch"
    with pytest.raises(ValueError, match="numba is not installed"):
        choose("numba")


def _train(steps: int = 30) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sp = static(model, opt, sparsity=0.9, distribution="erk", masking="both")
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_training_is_the_same_with_either_kernel(choose, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the loop runs on every layer
    assert choose("numba") == "numba"
    compiled = _train()
    assert choose("torch") == "torch"
    plain = _train()
    assert all(torch.equal(compiled[n], plain[n]) for n in plain)


def test_model_cast_after_attach_switches_the_loop_to_the_new_dtype(spy, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = static(model, opt, sparsity=0.8, distribution="uniform")
    model.double()  # the same Parameter objects, now float64
    x, y = torch.randn(8, 20, dtype=torch.float64), torch.randint(0, 4, (8,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in sp.masks.params.items():
            assert p.grad.dtype == torch.float64
            assert bool((p.grad[~sp.masks[n]] == 0).all())
        opt.step()
    assert spy  # the float64 loop ran
    for n, p in sp.masks.params.items():
        assert bool((p.detach()[~sp.masks[n]] == 0).all())
        assert bool((p.detach()[sp.masks[n]] != 0).all())
