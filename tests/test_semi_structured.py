"""2:4 weights for PyTorch's semi-structured kernels: the pattern check on CPU, the clear error
without a GPU, and (on a CUDA machine) the compressed layer's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseflow
from sparseflow.sparsity.semi_structured import check_two_four, semi_structured_linears


def test_a_model_trained_under_2_4_passes_the_check_and_others_are_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = sparseflow.rigl(model, opt, sparsity=0.5, pattern="2:4", t_end=20, update_every=2)
    for _ in range(6):
        model(torch.randn(4, 16)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        s.step()
    for name, m in s.masks.masks.items():
        check_two_four(name, dict(model.named_parameters())[name].detach(), m)
    dense = torch.ones(4, 8)
    with pytest.raises(ValueError, match="w: 8 groups of 4 inputs hold more than 2 non-zeros"):
        check_two_four("w", dense)
    with pytest.raises(ValueError, match="fan-in 6 is not a multiple of 4"):
        check_two_four("w", torch.zeros(2, 6))
    with pytest.raises(ValueError, match="Linear weights"):
        check_two_four("c", torch.zeros(2, 4, 3, 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only error")
def test_without_a_gpu_the_conversion_says_what_is_missing():
    with pytest.raises(RuntimeError, match="need a CUDA GPU with sparse tensor cores"):
        semi_structured_linears(nn.Linear(8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_semi_structured_layer_computes_the_masked_product():  # pragma: no cover - GPU only
    torch.manual_seed(0)
    lin = nn.Linear(128, 128).cuda().half()
    mask = torch.zeros(128, 128, dtype=torch.bool)
    mask.view(128, 32, 4)[..., :2] = True
    with torch.no_grad():
        lin.weight.mul_(mask.cuda())
    x = torch.randn(64, 128, device="cuda", dtype=torch.half)
    want = lin(x)
    names = semi_structured_linears(nn.Sequential(lin), {"0.weight": mask})
    assert names == ["0.weight"]
    assert torch.allclose(lin(x), want, atol=1e-2, rtol=1e-2)
