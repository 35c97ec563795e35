"""2:4 masks in the form PyTorch accelerates: ``torch.sparse.to_sparse_semi_structured``
(docs/science.md section 17).

NVIDIA's sparse tensor cores (Ampere and later) multiply a weight whose every group of 4
consecutive inputs holds at most 2 non-zeros at up to twice the dense rate; PyTorch exposes
them as ``SparseSemiStructuredTensor`` (CUDA, float16 / bfloat16, and shape constraints of the
CUTLASS or cuSPARSELt kernels). A Linear layer trained with ``pattern="2:4"`` has exactly that
layout: :func:`semi_structured_linears` swaps its weights for the compressed form, in place,
for inference. On a machine without such a GPU it raises a one-line error saying what is
missing; the pattern check (:func:`check_two_four`) runs anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .patterns import Pattern, pattern_violations

TWO_FOUR = Pattern("nm", n=2, m=4)


def check_two_four(name: str, weight: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """ValueError naming ``name`` unless its non-zeros (or ``mask``) fit 2:4 along the inputs:
    at most 2 of every 4 consecutive entries of a row (exactly 2 for a mask trained with
    ``pattern="2:4"``; fewer non-zero values are allowed, a weight can be zero by chance)."""
    if weight.dim() != 2:
        raise ValueError(f"{name}: semi-structured sparsity is for Linear weights (2-d), got "
                         f"shape {tuple(weight.shape)}")
    if weight.shape[1] % 4:
        raise ValueError(f"{name}: fan-in {weight.shape[1]} is not a multiple of 4")
    active = mask if mask is not None else weight != 0
    per = active.reshape(weight.shape[0], -1, 4).sum(-1)
    if bool((per > 2).any()):
        bad = int((per > 2).sum())
        raise ValueError(f"{name}: {bad} groups of 4 inputs hold more than 2 non-zeros")
    if mask is not None and pattern_violations(mask, TWO_FOUR):
        raise ValueError(f"{name}: the mask is not 2:4")


def semi_structured_linears(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None,
                            dtype: torch.dtype = torch.float16) -> list[str]:
    """Replace the weight of every Linear layer whose weight is 2:4 sparse (``masks`` names
    the layers, ``{parameter name: mask}``; default: every Linear whose non-zeros fit) by
    ``torch.sparse.to_sparse_semi_structured`` of it in ``dtype`` on its CUDA device, for
    inference; returns the names converted. RuntimeError without a CUDA device (sparse tensor
    cores need one); ValueError naming a layer whose weight breaks 2:4."""
    if not torch.cuda.is_available():
        raise RuntimeError("semi-structured 2:4 weights need a CUDA GPU with sparse tensor "
                           "cores (compute capability 8.0 or later); none is available here")
    from torch.sparse import to_sparse_semi_structured

    params = dict(model.named_parameters())
    done = []
    for mod_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        name = f"{mod_name}.weight" if mod_name else "weight"
        if masks is not None and name not in masks:
            continue
        w = params[name]
        if masks is None:
            try:
                check_two_four(name, w.detach())
            except ValueError:
                continue
        else:
            check_two_four(name, w.detach(), masks[name].to(w.device))
        dense = w.detach().to(device=w.device if w.is_cuda else "cuda", dtype=dtype)
        module.weight = nn.Parameter(to_sparse_semi_structured(dense), requires_grad=False)
        done.append(name)
    return done
