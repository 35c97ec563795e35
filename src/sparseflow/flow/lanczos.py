"""Eigenvalues and traces of a symmetric linear operator (docs/science.md sections 4 and 11).

Generic solvers on a matrix-vector product ``matvec``: they know nothing of networks or
masks. ``lanczos`` runs Lanczos with full reorthogonalisation and returns the Ritz values at
both ends of the spectrum with their residual bounds (``LanczosResult``); ``hutchinson``
estimates the trace from Rademacher probes, tr(A) = E[z^T A z]. ``flow/hessian.py`` applies
them to the Hessian restricted to the active weights (``flow/hvp.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = ["LanczosResult", "hutchinson", "lanczos"]

Which = Literal["top", "bottom", "both"]


class LanczosResult(NamedTuple):
    """Ritz values of a Lanczos run, ascending, with their residual bounds.

    ``eigenvalues[i]`` = theta_i (float64); ``residuals[i]`` = |beta_m s_{m,i}|, a bound on the
    distance from theta_i to the nearest eigenvalue of the operator.
    """

    eigenvalues: Tensor
    residuals: Tensor
    steps: int
    converged: bool

    def top(self, k: int) -> list[float]:
        """The k largest Ritz values, descending."""
        return self.eigenvalues.flip(0)[:k].tolist()

    def bottom(self, k: int) -> list[float]:
        """The k smallest Ritz values, ascending."""
        return self.eigenvalues[:k].tolist()

    def top_err(self, k: int) -> list[float]:
        """Residual bounds of ``top(k)``, same order."""
        return self.residuals.flip(0)[:k].tolist()

    def bottom_err(self, k: int) -> list[float]:
        """Residual bounds of ``bottom(k)``, same order."""
        return self.residuals[:k].tolist()


def _vector_space(dim_or_template: int | Tensor) -> tuple[torch.Size, torch.dtype, torch.device]:
    if isinstance(dim_or_template, Tensor):
        t = dim_or_template
        if not t.is_floating_point():
            raise ValueError(f"template must be a floating tensor, got {t.dtype}")
        return t.shape, t.dtype, t.device
    if isinstance(dim_or_template, bool) or not isinstance(dim_or_template, int):
        raise TypeError("dim_or_template must be an int or a tensor")
    if dim_or_template < 1:
        raise ValueError(f"dimension must be >= 1, got {dim_or_template}")
    return torch.Size([dim_or_template]), torch.float64, torch.device("cpu")


def _default_tol(dtype: torch.dtype) -> float:
    """Relative residual tolerance: 100 eps, floored at 1e-10 (1.2e-5 for float32)."""
    return max(100.0 * torch.finfo(dtype).eps, 1e-10)


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return t


def _wanted(m: int, k: int, which: Which) -> list[int]:
    k = min(k, m)
    lo = list(range(k)) if which in ("bottom", "both") else []
    hi = list(range(m - k, m)) if which in ("top", "both") else []
    return sorted(set(lo + hi))


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    dim_or_template: int | Tensor,
    k: int,
    steps: int,
    seed: int = 0,
    *,
    which: Which = "both",
    tol: float | None = None,
) -> LanczosResult:
    """Lanczos with full reorthogonalisation on a symmetric operator; Ritz values at both ends.

    ``matvec(q)`` returns A q for q shaped like the template (``dim_or_template`` is an int n,
    giving float64 CPU vectors of shape (n,), or a floating tensor whose shape, dtype and
    device the vectors take). From a random unit q_1 (normal, seeded by ``seed``):

        w = A q_j - alpha_j q_j - beta_{j-1} q_{j-1},   alpha_j = q_j^T A q_j,
        w <- w - Q_j (Q_j^T w)   (full reorthogonalisation, repeated when ||w|| drops
                                  below ||w||/sqrt(2): the DGKS criterion),
        beta_j = ||w||,   q_{j+1} = w / beta_j,

    and T_m = tridiag(beta, alpha, beta) (float64) is diagonalised with
    ``torch.linalg.eigh``: T_m = S diag(theta) S^T. The residual bound of theta_i is
    |beta_m S[m, i]|. When beta_j vanishes (an invariant subspace: at most one vector per
    distinct eigenvalue), the run restarts from a fresh random vector orthogonal to Q_j with
    beta_j = 0, so that with ``steps = n`` all n eigenvalues, multiplicities included, come out.

    Stops after ``steps`` steps (capped at n), or earlier once the ``k`` wanted Ritz values
    (``which``: the k largest, the k smallest, or both) have residual bounds
    <= tol * max|theta| after at least min(steps, 2k + 10) steps and no restart.
    ``tol=None`` is 100 machine epsilons of the vector dtype (at least 1e-10); ``tol=0``
    always runs ``steps`` steps. Memory: the basis, steps x n numbers.
    """
    shape, dtype, device = _vector_space(dim_or_template)
    n = int(math.prod(shape))
    if k < 1 or k > n:
        raise ValueError(f"k={k} must lie in [1, {n}]")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if which not in ("top", "bottom", "both"):
        raise ValueError(f"which must be 'top', 'bottom' or 'both', got {which!r}")
    steps = min(int(steps), n)
    tol = _default_tol(dtype) if tol is None else float(tol)
    min_steps = min(steps, 2 * k + 10)
    breakdown = torch.finfo(dtype).eps ** 0.75
    gen = torch.Generator().manual_seed(int(seed))

    def random_unit(basis: Tensor) -> Tensor:
        r = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        for _ in range(2):
            r = r - basis.T @ (basis @ r) if basis.shape[0] else r
        return r / r.norm()

    def apply(q: Tensor) -> Tensor:
        return matvec(q.view(shape)).reshape(-1).to(dtype)

    Q = torch.empty(steps, n, dtype=dtype, device=device)
    Q[0] = random_unit(Q[:0])
    alphas: list[float] = []
    betas: list[float] = []
    beta_prev, anorm, restarted, converged = 0.0, 0.0, False, False
    beta = 0.0
    for j in range(steps):
        q = Q[j]
        w = apply(q)
        alpha = float(torch.dot(q, w))
        w = w - alpha * q
        if j > 0 and beta_prev != 0.0:
            w = w - beta_prev * Q[j - 1]
        basis = Q[: j + 1]
        before = float(w.norm())
        w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        if beta < 0.7071 * before:  # cancellation: a second pass (Daniel-Gragg-Kaufman-Stewart)
            w = w - basis.T @ (basis @ w)
            beta = float(w.norm())
        alphas.append(alpha)
        anorm = max(anorm, abs(alpha) + beta + beta_prev)
        m = j + 1
        if m == steps:
            break
        if tol > 0 and m >= min_steps and not restarted:
            theta, s = torch.linalg.eigh(_tridiagonal(alphas, betas))
            res = (beta * s[-1].abs()).tolist()
            scale = float(theta.abs().max())
            if all(res[i] <= tol * scale for i in _wanted(m, k, which)):
                converged = True
                break
        if beta <= breakdown * anorm:
            restarted = True
            betas.append(0.0)
            Q[m] = random_unit(basis)
            beta_prev = 0.0
        else:
            betas.append(beta)
            Q[m] = w / beta
            beta_prev = beta
    m = len(alphas)
    theta, s = torch.linalg.eigh(_tridiagonal(alphas, betas[: m - 1]))
    res = beta * s[-1].abs()
    if not converged:
        flag_tol = tol if tol > 0 else _default_tol(dtype)
        scale = float(theta.abs().max())
        converged = m == n or all(float(res[i]) <= flag_tol * scale for i in _wanted(m, k, which))
    return LanczosResult(theta, res, m, bool(converged))


def hutchinson(
    matvec: Callable[[Tensor], Tensor], dim_or_template: int | Tensor, samples: int, seed: int = 0
) -> tuple[float, float]:
    """Hutchinson trace estimate and its standard error.

    tr(A) = E[z^T A z] for z with i.i.d. Rademacher (+-1) entries. Returns
    (mean_s z_s^T A z_s, std_s(z_s^T A z_s) / sqrt(S)) with the sample std (ddof 1; NaN
    for S = 1). Exact with zero error for a diagonal A, since z^T D z = sum_i d_i z_i^2.
    """
    shape, dtype, device = _vector_space(dim_or_template)
    n = int(math.prod(shape))
    if samples < 1:
        raise ValueError(f"samples={samples} must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    vals = []
    for _ in range(samples):
        z = torch.randint(0, 2, (n,), generator=gen).to(dtype=dtype, device=device) * 2 - 1
        az = matvec(z.view(shape)).reshape(-1)
        vals.append(float(torch.dot(z.double(), az.double())))
    t = torch.tensor(vals, dtype=torch.float64)
    std = float(t.std()) / math.sqrt(samples) if samples > 1 else math.nan
    return float(t.mean()), std
