"""Compiled CSR products for ``sparsity.csr`` (imported only when numba is installed and wanted).

Activations are held feature-major inside a sparse layer: ``xt`` (in x N) and ``yt`` (out x N)
are C-contiguous, so every non-zero weight touches one contiguous row of N batch entries and the
inner loops are vector FMAs over the batch (LLVM vectorises them: ``fastmath`` is limited to
``reassoc`` and ``contract``, which allow the vector reductions and fused multiply-adds and keep
IEEE NaN / inf / signed-zero semantics). docs/science.md section 16 has the formulas:

- ``rows_times``: ``yt[r, :] = b[r] + sum_k v[k] * xt[col[k], :]`` over row r's entries
  (forward ``y^T = W x^T + b``); with the values read through a permutation (``v[perm[k]]``)
  and no bias it is ``W^T g^T`` from W^T's CSR indices without gathering the values first
  (input gradient);
- ``sampled``: ``gv[k] = <gt[row(k), :], xt[col[k], :]>`` (weight gradient at the non-zeros)
  and the bias gradient ``gb[r] = sum_j gt[r, j]`` in the same pass;
- ``transpose``: a blocked out-of-place transpose (8 x 8 tiles), 1.5-2x faster than
  ``x.t().contiguous()`` on a 128 x 784 batch here.

Dense operands are passed as data addresses and sizes, as in ``_numba_kernels`` (a numpy view
per tensor costs about a microsecond, and a step makes dozens); the caller guarantees
C-contiguous tensors of the kernel's dtype that stay alive during the call. The index arrays
(int32 or int64) are numpy views made once per pattern. All loops are serial (``nogil``),
compiled lazily per dtype and index type, and not cached on disk (see ``_numba_kernels``).
benchmarks/sparse_execution.py measures them against MKL's CSR kernels.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numba
import numpy as np

from ._numba_kernels import _void_pointer

_FLAGS = {"reassoc", "contract"}
_TILE = 8


def _make(dtype: Any) -> SimpleNamespace:
    zero = dtype(0)

    @numba.njit(nogil=True, fastmath=_FLAGS, cache=False)
    def transpose(a_at: int, rows: int, cols: int, out_at: int) -> None:  # pragma: no cover
        """out[j, i] = a[i, j] for a (rows x cols) ``a`` and (cols x rows) ``out``."""
        a = numba.carray(_void_pointer(a_at), (rows, cols), dtype)
        out = numba.carray(_void_pointer(out_at), (cols, rows), dtype)
        r8, c8 = rows - rows % _TILE, cols - cols % _TILE
        for i0 in range(0, r8, _TILE):
            for j0 in range(0, c8, _TILE):
                for jj in range(_TILE):
                    for ii in range(_TILE):
                        out[j0 + jj, i0 + ii] = a[i0 + ii, j0 + jj]
            for j in range(c8, cols):
                for ii in range(_TILE):
                    out[j, i0 + ii] = a[i0 + ii, j]
        for i in range(r8, rows):
            for j in range(cols):
                out[j, i] = a[i, j]

    @numba.njit(nogil=True, fastmath=_FLAGS, cache=False)
    def rows_times(crow: Any, col: Any, perm: Any, v_at: int, b_at: int, xt_at: int, n_in: int,
                   yt_at: int, n: int) -> None:  # pragma: no cover - compiled
        """yt[r, :] = b[r] + sum_{k in row r} v[k] * xt[col[k], :] (``b_at`` 0: no bias);
        with a ``perm`` array the values are read as ``v[perm[k]]`` (``perm`` None is
        compiled away)."""
        rows = crow.size - 1
        v = numba.carray(_void_pointer(v_at), crow[rows], dtype)
        xt = numba.carray(_void_pointer(xt_at), (n_in, n), dtype)
        yt = numba.carray(_void_pointer(yt_at), (rows, n), dtype)
        b = numba.carray(_void_pointer(b_at), rows if b_at != 0 else 0, dtype)
        for r in range(rows):
            yr = yt[r]
            b_r = b[r] if b_at != 0 else zero
            for j in range(n):
                yr[j] = b_r
            for k in range(crow[r], crow[r + 1]):
                if perm is None:
                    w = v[k]
                else:
                    w = v[perm[k]]
                xr = xt[col[k]]
                for j in range(n):
                    yr[j] += w * xr[j]

    @numba.njit(nogil=True, fastmath=_FLAGS, cache=False)
    def sampled(crow: Any, col: Any, gt_at: int, xt_at: int, n_in: int, gv_at: int, gb_at: int,
                n: int) -> None:  # pragma: no cover - compiled
        """gv[k] = sum_j gt[r, j] * xt[col[k], j] for every entry k of row r, and (``gb_at``
        not 0) the bias gradient gb[r] = sum_j gt[r, j]."""
        rows = crow.size - 1
        gt = numba.carray(_void_pointer(gt_at), (rows, n), dtype)
        xt = numba.carray(_void_pointer(xt_at), (n_in, n), dtype)
        gv = numba.carray(_void_pointer(gv_at), crow[rows], dtype)
        gb = numba.carray(_void_pointer(gb_at), rows if gb_at != 0 else 0, dtype)
        for r in range(rows):
            gr = gt[r]
            for k in range(crow[r], crow[r + 1]):
                xr = xt[col[k]]
                s = zero
                for j in range(n):
                    s += gr[j] * xr[j]
                gv[k] = s
            if gb_at != 0:
                s = zero
                for j in range(n):
                    s += gr[j]
                gb[r] = s

    return SimpleNamespace(transpose=transpose, rows_times=rows_times, sampled=sampled)


KERNELS = {"float32": _make(np.float32), "float64": _make(np.float64)}
