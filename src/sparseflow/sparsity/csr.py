"""Sparse kernels for a Linear layer whose weight is stored as its non-zero values (CSR).

A weight W (out x in) with bool mask M is held as the vector v of its active entries in
row-major order, ``v = W.flat[idx]`` with ``idx`` the sorted active flat positions; that order is
the CSR order of W, so (crow, col, v) is W in compressed sparse rows without a copy.
docs/science.md section 16:

- forward ``y = x W^T + b``, computed as ``(W_csr @ x^T)^T``;
- ``dL/dx = g W = ((W^T)_csr @ g^T)^T``, with ``(W^T)_csr`` the same entries sorted by column
  (``v[t_perm]``);
- ``dL/dv = (g^T x)`` sampled at the active positions (``torch.sparse.sampled_addmm``: only the
  nnz dot products are computed); with ``capture_dense_grad`` set on the layer, the full
  ``dL/dW = g^T x`` is computed instead (RigL's grow score on its update steps), kept on the
  layer and ``dL/dv`` gathered from it;
- ``dL/db = sum_rows g``.

Every product runs in the weight's dtype on its device (MKL's sparse BLAS on CPU, cuSPARSE on
CUDA). benchmarks/sparse_execution.py measures where this beats the dense kernel.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

# torch warns once per process that CSR support is "beta"; the ops used here are stable
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta",
                        category=UserWarning)


@dataclass(frozen=True, eq=False)
class CSRPattern:
    """Where the non-zeros of a 2-d weight are: CSR indices of W and of W^T.

    ``index``: sorted flat positions of the active entries (the order of the values);
    ``crow``/``col``: W's CSR row pointers and column indices; ``t_crow``/``t_col``: those of
    W^T, whose values are ``values[t_perm]``.
    """

    shape: tuple[int, int]
    index: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_perm: torch.Tensor

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> CSRPattern:
        """The pattern of a 2-d bool mask (one ``nonzero`` and one sort: O(numel))."""
        if mask.dim() != 2:
            raise ValueError(f"CSRPattern: expected a 2-d mask, got shape {tuple(mask.shape)}")
        out, inp = (int(s) for s in mask.shape)
        index = mask.reshape(-1).nonzero().squeeze(1)
        rows, cols = index // inp, index % inp
        # MKL's sparse BLAS takes 32-bit indices: torch converts int64 ones at every call
        small = max(index.numel(), out, inp) < 2**31
        itype = torch.int32 if small else torch.int64
        crow = torch.zeros(out + 1, dtype=torch.int64, device=mask.device)
        crow[1:] = torch.bincount(rows, minlength=out).cumsum(0)
        t_perm = torch.argsort(cols * out + rows)  # keys are unique: the order is exact
        t_crow = torch.zeros(inp + 1, dtype=torch.int64, device=mask.device)
        t_crow[1:] = torch.bincount(cols, minlength=inp).cumsum(0)
        return cls((out, inp), index, crow.to(itype), cols.to(itype), t_crow.to(itype),
                   rows[t_perm].to(itype), t_perm)

    @property
    def nnz(self) -> int:
        """Number of active entries."""
        return int(self.index.numel())

    @property
    def density(self) -> float:
        """nnz / (out * in)."""
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """W as a sparse CSR tensor over ``values`` (no copy)."""
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape,
                                       check_invariants=False)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """W^T as a sparse CSR tensor (values gathered into column order)."""
        return torch.sparse_csr_tensor(self.t_crow, self.t_col, values[self.t_perm],
                                       (self.shape[1], self.shape[0]), check_invariants=False)

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """W as a dense tensor: zeros with ``values`` at the active positions."""
        out = torch.zeros(self.shape[0] * self.shape[1], dtype=values.dtype,
                          device=values.device)
        out[self.index] = values
        return out.view(self.shape)

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """The active entries of a dense tensor of W's shape, in value order (a copy)."""
        return dense.reshape(-1)[self.index]

    def to(self, device: torch.device) -> CSRPattern:
        """The same pattern with its index tensors on ``device``."""
        if self.index.device == device:
            return self
        return CSRPattern(self.shape, *(t.to(device) for t in (
            self.index, self.crow, self.col, self.t_crow, self.t_col, self.t_perm)))


class _SparseLinear(torch.autograd.Function):
    """y = x W^T + b with W given by (pattern, values); see the module docstring.

    The layouts are chosen by measurement (benchmarks/sparse_execution.py): MKL's CSR product
    wants a contiguous dense right-hand side, so forward makes x^T contiguous once and keeps it
    for backward, where ``sampled_addmm(M, g^T, (x^T)^T)`` (both operands in the layout MKL
    reads best) is 1.3x (90% sparse) to 2.4x (98%) faster than with x itself; g^T is made
    contiguous once for both backward products.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                pattern: CSRPattern, layer: Any) -> torch.Tensor:
        out_features = pattern.shape[0]
        xt = x.reshape(-1, pattern.shape[1]).t().contiguous()  # in x N
        y = torch.sparse.mm(pattern.matrix(values), xt).t()
        y = y + bias if bias is not None else y.contiguous()
        ctx.save_for_backward(xt, values)
        ctx.pattern, ctx.layer, ctx.x_shape = pattern, layer, x.shape
        return y.view(*x.shape[:-1], out_features)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xt, values = ctx.saved_tensors
        pattern: CSRPattern = ctx.pattern
        g2 = gy.reshape(-1, pattern.shape[0])
        gt = g2.t().contiguous()  # out x N
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.sparse.mm(pattern.transposed(values), gt).t().reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            layer = ctx.layer
            if layer is not None and getattr(layer, "capture_dense_grad", False):
                dense = gt @ xt.t()
                seen = layer.dense_grad
                layer.dense_grad = dense if seen is None else seen + dense
                gv = pattern.gather(dense)
            else:
                gv = torch.sparse.sampled_addmm(pattern.matrix(values), gt, xt.t(),
                                                beta=0.0).values()
        if ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gv, gb, None, None


def sparse_linear(x: torch.Tensor, values: torch.Tensor, pattern: CSRPattern,
                  bias: torch.Tensor | None = None, layer: Any = None) -> torch.Tensor:
    """``F.linear(x, W, bias)`` for W = ``pattern.dense(values)``, on sparse kernels.

    Differentiable once in ``x``, ``values`` and ``bias`` (the masked Hessian needs the dense
    path). ``layer``: an object with ``capture_dense_grad`` and ``dense_grad`` attributes (a
    :class:`~sparseflow.sparsity.execution.CSRLinear`): while ``capture_dense_grad`` is true,
    backward also accumulates the dense dL/dW into ``layer.dense_grad``.
    """
    return _SparseLinear.apply(x, values, bias, pattern, layer)
