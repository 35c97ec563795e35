"""In-place masking kernels: ``t <- t * M`` for a weight or its gradient.

Two implementations of one operation, chosen per call:

- **torch** (always available): ``t.mul_(factor)``, the mask pre-stored in ``t``'s dtype.
  Reads 4 bytes of mask per float32 weight.
- **numba** (the optional ``fast`` extra): a compiled loop ``t[i] = t[i] if M[i] else 0``
  over the bool mask, 1 byte per weight, called with ``t``'s data address. Used for
  contiguous float32/float64 CPU tensors when torch runs one intra-op thread or the tensor is
  below torch's parallel grain size (the compiled loop is serial; torch's ``mul_`` is
  parallel on larger tensors and more threads).

Why: on LeNet-300-100 (266k masked weights, one thread, batch 128) the cost of masking is the
mask read, not the pass over the gradients (benchmarks/masking.py: a pass that multiplies the
gradients by the scalar 1 costs ~2% of a dense step, the float32 factor multiply ~5.5%); the
bool-mask loop took static sparse training from ~1.055x to ~1.044x a dense step. torch's own
kernels for a 1-byte mask are slower than the float32 multiply (``mul_`` by a uint8 / bool mask,
``masked_fill_``, ``torch.where``: docs/results/masking.md), hence a compiled loop.

Both give the same values except at masked positions, where the loop writes +0.0 and the
multiply gives -0.0 for negative entries and keeps NaN / inf (NaN * 0).
``SPARSEFLOW_KERNELS=torch`` in the environment forces the torch path (``=numba`` insists on
numba and fails without it). A write through the loop bumps the tensor's autograd version
counter where the tensor requires grad, as ``mul_`` would. The same switch governs the
compiled CSR products of sparse execution (:func:`csr_kernels`, ``sparsity/_numba_csr.py``;
used by ``sparsity/csr.py``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.graph import increment_version

GRAIN_SIZE = 32768  # torch's at::internal::GRAIN_SIZE: below it, elementwise ops run serially
_FLOATS = (torch.float32, torch.float64)
Kernel = Callable[[int, Any], None]  # (data address, numpy bool mask) -> None
_kernels: dict[str, Kernel] | None = None
_loaded = False


def _compiled_module(name: str) -> Any | None:
    """``sparsity.<name>`` (numba-compiled loops), or None when numba is missing or
    ``SPARSEFLOW_KERNELS=torch`` (``=numba`` makes a missing numba an error)."""
    choice = os.environ.get("SPARSEFLOW_KERNELS", "auto").strip().lower()
    if choice not in ("auto", "torch", "numba"):
        raise ValueError(f"SPARSEFLOW_KERNELS: expected auto, torch or numba, got {choice!r}")
    if choice == "torch":
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        if choice == "numba":
            raise ValueError("SPARSEFLOW_KERNELS=numba but numba is not installed "
                             "(pip install 'sparseflow[fast]')") from None
        return None


def _load() -> dict[str, Kernel] | None:
    """The compiled masking kernels by dtype name, or None when numba is missing or disabled
    (imported lazily, compiled on first use)."""
    global _kernels, _loaded
    if _loaded:
        return _kernels
    _loaded = True
    compiled = _compiled_module("_numba_kernels")
    _kernels = None if compiled is None else dict(compiled.KERNELS)
    return _kernels


_csr: dict[torch.dtype, Any] | None = None
_csr_loaded = False


def csr_kernels(dtype: torch.dtype) -> Any | None:
    """The compiled CSR products of ``sparsity._numba_csr`` for ``dtype`` (float32 / float64),
    or None when numba is missing or disabled (the same ``SPARSEFLOW_KERNELS`` switch as the
    masking loop) or for another dtype."""
    global _csr, _csr_loaded
    if not _csr_loaded:
        module = _compiled_module("_numba_csr")
        _csr = None if module is None else {
            getattr(torch, name): kernels for name, kernels in module.KERNELS.items()}
        _csr_loaded = True
    return None if _csr is None else _csr.get(dtype)


def kernel_name() -> str:
    """``numba`` or ``torch``: the implementation used where both apply."""
    return "numba" if _load() is not None else "torch"


Compiled = tuple[Any, bool, Kernel]


def compiled_mask(param: torch.Tensor, mask: torch.Tensor) -> Compiled | None:
    """(numpy view of ``mask``, whether ``param`` is below torch's grain size, the loop for
    ``param``'s dtype) for ``mask_``, or None where the compiled loop does not apply to
    ``param`` (numba missing or disabled, not CPU, not float32/float64, not C-contiguous)."""
    found = _load()
    if (found is None or param.device.type != "cpu" or param.dtype not in _FLOATS
            or not param.is_contiguous() or mask.device.type != "cpu"
            or mask.dtype != torch.bool or not mask.is_contiguous()
            or mask.shape != param.shape):
        return None
    return mask.numpy(), param.numel() < GRAIN_SIZE, found[str(param.dtype).split(".")[-1]]


def mask_(t: torch.Tensor, compiled: Compiled | None, factor: torch.Tensor) -> None:
    """``t <- t * M`` in place, no autograd. ``compiled``: ``compiled_mask(param, M)`` of the
    parameter ``t`` is (or is the gradient of); ``factor``: M in ``t``'s dtype and device.

    The compiled bool-mask loop where it applies and is faster (one torch thread, or fewer
    elements than torch's grain size), else ``t.mul_(factor)``. The loop writes through
    ``t.data_ptr()``: ``t`` is contiguous, of the parameter's shape and of the factor's dtype,
    the dtype the loop was compiled for (``MaskSet`` rebuilds both when the model is cast).
    """
    if (compiled is not None and (compiled[1] or torch.get_num_threads() == 1)
            and t.dtype is factor.dtype and t.is_contiguous()):
        compiled[2](t.data_ptr(), compiled[0])
        if t.requires_grad:  # a parameter written behind autograd's back: say so
            increment_version(t)
        return
    with torch.no_grad():
        t.mul_(factor)
