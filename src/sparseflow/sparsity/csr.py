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
from functools import cached_property
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from sparseflow.sparsity.kernels import csr_kernels

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

    def host_rows(self) -> tuple[Any, Any]:
        """numpy views of (crow, col) for the compiled kernels (CPU patterns; made once)."""
        return self._host[0], self._host[1]

    def host_columns(self) -> tuple[Any, Any, Any]:
        """numpy views of W^T's (t_crow, t_col) and of ``t_perm`` (CPU patterns; made once)."""
        return self._host[2], self._host[3], self._host[4]

    @cached_property
    def _host(self) -> tuple[Any, ...]:
        return tuple(t.numpy() for t in (self.crow, self.col, self.t_crow, self.t_col,
                                          self.t_perm))

    def to(self, device: torch.device) -> CSRPattern:
        """The same pattern with its index tensors on ``device``."""
        if self.index.device == device:
            return self
        return CSRPattern(self.shape, *(t.to(device) for t in (
            self.index, self.crow, self.col, self.t_crow, self.t_col, self.t_perm)))


def compiled_kernels(dtype: torch.dtype = torch.float32, threads: int | None = None
                     ) -> Any | None:
    """The compiled CSR kernels (``sparsity._numba_csr``) that CPU layers of ``dtype`` run on
    with ``threads`` torch threads (default: now), or None where the torch kernels run (numba
    missing or disabled, not float32/float64, more than one thread).

    The compiled loops are serial: with one thread they ran a whole Linear step 1.4-1.5x faster
    than MKL's CSR kernels (300x784 at density 0.08 to 2768x2768 at 0.01, batch 128); with two
    threads MKL's parallel kernels won (benchmarks/sparse_execution.py --crossover).
    """
    if (threads or torch.get_num_threads()) != 1:
        return None
    return csr_kernels(dtype)


# fewest batch rows for the compiled kernels: their inner loops run over the batch, and below
# ~16 rows each non-zero's loop set-up costs more than MKL's kernels (LeNet-300-100's layers at
# densities 0.015-0.23: forward and backward 1.1-1.7x faster than MKL at 16 rows, 1.7-2.0x
# slower forward alone at 2-8 rows; benchmarks/sparse_execution.py --crossover, batch 1 and 32)
MIN_ROWS_COMPILED = 16


def _compiled(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None) -> Any | None:
    """:func:`compiled_kernels` for this call where they apply (CPU, one dtype throughout, a
    batch of at least ``MIN_ROWS_COMPILED`` rows)."""
    if (not x.is_cpu or values.dtype is not x.dtype or x.layout != torch.strided
            or (bias is not None and bias.dtype is not x.dtype)
            or x.numel() < MIN_ROWS_COMPILED * x.shape[-1]):
        return None
    return compiled_kernels(x.dtype)


def is_feature_major(t2: torch.Tensor) -> bool:
    """Whether a 2-d (N x F) tensor is stored feature-major: its transpose is C-contiguous
    (``t2.t().is_contiguous()``, read from the strides without making the view)."""
    n, f = t2.shape
    s0, s1 = t2.stride()
    return n * f == 0 or ((n <= 1 or s0 == 1) and (f <= 1 or s1 == n))


def feature_major(t2: torch.Tensor, compiled: Any | None = None) -> torch.Tensor:
    """A 2-d (N x F) tensor with the same values stored feature-major (its transpose, F x N,
    C-contiguous): ``t2`` itself when it already is (the output of a previous sparse layer),
    else a copy (the compiled blocked transpose where given)."""
    if is_feature_major(t2):
        return t2
    if compiled is None:
        return t2.t().contiguous().t()
    src = t2.contiguous()
    out = torch.empty((src.shape[1], src.shape[0]), dtype=src.dtype)
    compiled.transpose(src.data_ptr(), src.shape[0], src.shape[1], out.data_ptr())
    return out.t()


class _SparseLinear(torch.autograd.Function):
    """y = x W^T + b with W given by (pattern, values); see the module docstring.

    Both kernel sets work feature-major: forward makes x^T contiguous (a view when x came from
    a previous sparse layer), computes y^T = W x^T (+ b) and returns its transpose as a view, so
    a chain of sparse layers (with element-wise activations between them, which keep the
    layout) never copies activations; backward likewise takes g^T once for both products.

    - **compiled** (numba, CPU float32/float64): loops over the non-zeros with vector FMAs over
      the batch (``sparsity._numba_csr``); the bias is the accumulators' initial value.
    - **torch**: MKL's CSR product on CPU (cuSPARSE on CUDA) and ``sampled_addmm``, in the
      layouts they read best (``sampled_addmm(M, g^T, (x^T)^T)`` is 1.3x (90% sparse) to 2.4x
      (98%) faster than with x itself).

    benchmarks/sparse_execution.py measures both against the dense layer.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                pattern: CSRPattern, layer: Any) -> torch.Tensor:
        out_features = pattern.shape[0]
        compiled = _compiled(x, values, bias)
        # x as (N x in) stored feature-major: x2.t() is x^T, C-contiguous
        x2 = feature_major(x if x.dim() == 2 else x.reshape(-1, pattern.shape[1]), compiled)
        if compiled is not None:
            crow, col = pattern.host_rows()
            yt = torch.empty((out_features, x2.shape[0]), dtype=x.dtype)
            values = values.contiguous()  # kept alive (saved below) while the kernel reads it
            b = None if bias is None else bias.contiguous()
            compiled.rows_times(crow, col, None, values.data_ptr(),
                                0 if b is None else b.data_ptr(), x2.data_ptr(), x2.shape[1],
                                yt.data_ptr(), x2.shape[0])
            y = yt.t()
        else:
            y = torch.sparse.mm(pattern.matrix(values), x2.t()).t()
            y = y + bias if bias is not None else y  # the sum keeps y's layout
        ctx.save_for_backward(x2, values)
        ctx.pattern, ctx.layer, ctx.x_shape = pattern, layer, x.shape
        ctx.compiled = compiled
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out_features)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, values = ctx.saved_tensors  # x2: (N x in) stored feature-major
        pattern: CSRPattern = ctx.pattern
        compiled = ctx.compiled if gy.dtype is values.dtype else None
        g2 = feature_major(gy if gy.dim() == 2 else gy.reshape(-1, pattern.shape[0]),
                           compiled)  # (N x out) stored feature-major
        n = g2.shape[0]
        gx = gv = gb = None
        needs = ctx.needs_input_grad
        if needs[0]:
            if compiled is not None:
                t_crow, t_col, t_perm = pattern.host_columns()
                gxt = torch.empty((pattern.shape[1], n), dtype=g2.dtype)
                compiled.rows_times(t_crow, t_col, t_perm, values.data_ptr(), 0,
                                    g2.data_ptr(), pattern.shape[0], gxt.data_ptr(), n)
            else:
                gxt = torch.sparse.mm(pattern.transposed(values), g2.t())
            gx = gxt.t() if len(ctx.x_shape) == 2 else gxt.t().reshape(ctx.x_shape)
        if needs[1]:
            layer = ctx.layer
            if layer is not None and getattr(layer, "capture_dense_grad", False):
                dense = g2.t() @ x2
                seen = layer.dense_grad
                layer.dense_grad = dense if seen is None else seen + dense
                gv = pattern.gather(dense)
            elif compiled is not None:
                crow, col = pattern.host_rows()
                gv = torch.empty_like(values)
                if needs[2]:
                    gb = torch.empty(pattern.shape[0], dtype=g2.dtype)
                compiled.sampled(crow, col, g2.data_ptr(), x2.data_ptr(), x2.shape[1],
                                 gv.data_ptr(), 0 if gb is None else gb.data_ptr(), n)
            else:
                gv = torch.sparse.sampled_addmm(pattern.matrix(values), g2.t(), x2,
                                                beta=0.0).values()
        if needs[2] and gb is None:
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
