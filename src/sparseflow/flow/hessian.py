"""Hessian of the loss restricted to the active weights (docs/science.md sections 4 and 11).

Restricted space
----------------
The coordinates are the *active* weights: the entries with mask True of every masked weight,
every entry of a Linear/Conv weight without a mask (``masks=None`` means dense), and, with
``include_biases=True``, the biases of those layers (dense). Let P be the 0/1 diagonal
projection onto them (P = diag(M) on full-shape tensors). The operator studied is

    A = P H P,        H = d^2 L / dtheta^2,   L(theta) = (1/N) sum_i loss(f(x_i; theta), y_i),

evaluated at theta = W * M (masked entries are read as zero, which they are under the
MaskSet invariant, so values stored at masked positions never matter). Inside this module
vectors of the restricted space are *packed*: the n_active active entries, concatenated in
model order, so that the Lanczos basis lives in R^{n_active} and the zero eigenvalues of A on
the inactive coordinates can never appear as Ritz values. ``hvp_fn`` exposes the same
operator on dicts of full-shape tensors (zero outside the active set): v -> M * H (M * v).

Hessian-vector products use double backward, Hv = d/dtheta (g(theta) . v) with
g = dL/dtheta built with ``create_graph=True``; a dense Hessian is never formed. With one
batch the gradient graph is built once and reused by every product; with ``batch_size`` it
is rebuilt per mini-batch and per product (memory of one mini-batch), and the loss is
weighted by the batch fraction, L = sum_c (n_c / N) L_c, which equals the full-batch mean
for a mean-reduced loss (not with BatchNorm in train mode, whose batch statistics depend
on the chunking).

Quantities (``hessian_report``)
-------------------------------
* top / bottom: the k largest and k smallest (algebraic) eigenvalues of A on the active
  space, from one Lanczos run with full reorthogonalisation: the Ritz values at both ends
  of the same Krylov space. By Cauchy interlacing the i-th largest Ritz value is a lower
  bound of the i-th largest eigenvalue and the i-th smallest an upper bound of the i-th
  smallest; each Ritz value theta_i has an eigenvalue within its residual bound
  |beta_m s_{m,i}| (``top_err``/``bottom_err``). The outliers at the top of a network
  Hessian converge in a few tens of steps; the bottom lies at the edge of the bulk near 0
  with small gaps and converges more slowly: read ``bottom_err``. Lanczos sees each
  distinct eigenvalue once, so multiplicities at the ends (exact zeros of dead units,
  the softmax shift invariance) are resolved only when the Krylov space is exhausted
  (``lanczos_steps = n_active``, where the result is exact).
* gHg = g^T A g and gHg / g^T g, g = M * dL/dtheta (the masked gradient on the same
  coordinates; the ratio is NaN when g = 0).
* trace: Hutchinson, tr(A) = E[z^T A z] for Rademacher z on the active coordinates; the
  estimate is the mean over S probes and ``trace_std`` its standard error
  std(z^T A z) / sqrt(S). When S >= n_active the trace is computed exactly from the n_active
  unit vectors instead (no more products than asked for) and ``trace_std`` is 0.
* per layer: the same for each sparsified weight's own diagonal block A_ll = P_l H P_l
  (the weight's active entries, plus its layer's bias with ``include_biases``). The sum of
  the per-layer traces is the whole-model trace.

The model is evaluated in its current mode (train/eval) through
``torch.func.functional_call`` on copies of its parameters and buffers: BatchNorm running
statistics, ``.grad`` fields and ``requires_grad`` flags of the model are untouched, and the
global RNG is not advanced (random layers such as dropout run under a forked RNG with a
fixed seed, so the operator is the same on every product and stays symmetric).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from sparseflow.sparsity import check_masks, default_weight_names

__all__ = [
    "HessianReport",
    "LanczosResult",
    "hessian_eigenvalues",
    "hessian_report",
    "hutchinson",
    "hvp_fn",
    "lanczos",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
Which = Literal["top", "bottom", "both"]

DEFAULT_MAX_STEPS = 100
"""Default cap on Lanczos steps (the Krylov basis holds steps x n_active numbers)."""


# ---------------------------------------------------------------------------------------------
# Generic eigen/trace estimators on a symmetric operator
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The loss as a function of the restricted parameters
# ---------------------------------------------------------------------------------------------


class _Objective:
    """L(theta) at theta = W * M, its masked gradient and its masked Hessian-vector products."""

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, Tensor],
        masks: Mapping[str, Tensor | None],
        x: Tensor,
        y: Tensor,
        loss_fn: LossFn,
        batch_size: int | None,
        seed: int = 0,
    ) -> None:
        named = dict(model.named_parameters())
        unknown = [n for n in params if n not in named]
        if unknown:
            raise ValueError(f"not parameters of the model: {unknown}")
        given = {n: m for n, m in masks.items() if m is not None}
        checked = check_masks(given, params, "masks", subset=True, against="entry of params")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.model = model
        self.loss_fn = loss_fn
        self.names = list(params)
        self.masks: dict[str, Tensor | None] = {}
        self.point: dict[str, Tensor] = {}
        for n, p in params.items():
            m = self.masks[n] = checked.get(n)
            t = p.detach().clone() if m is None else p.detach() * m
            self.point[n] = t.requires_grad_(True)
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.point}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        n_ex = x.shape[0]
        if batch_size is None or batch_size >= n_ex:
            self.chunks = [(x, y, 1.0)]
        else:
            self.chunks = [
                (xc, yc, xc.shape[0] / n_ex)
                for xc, yc in zip(x.split(batch_size), y.split(batch_size), strict=True)
            ]
        self.seed = int(seed)
        self.device = x.device
        self._graph: dict[str, Tensor] | None = None
        self._grad: dict[str, Tensor] | None = None

    @property
    def cached(self) -> bool:
        return len(self.chunks) == 1

    def _mask(self, name: str, t: Tensor) -> Tensor:
        m = self.masks[name]
        return t if m is None else t * m

    def _loss(self, i: int) -> Tensor:
        xc, yc, weight = self.chunks[i]
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.default_generator.manual_seed(self.seed + i)
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(self.seed + i)
            out = functional_call(self.model, (self.point, self.fixed, self.buffers), (xc,))
        loss = self.loss_fn(out, yc)
        return loss * weight if weight != 1.0 else loss

    def _grads(self, i: int, create_graph: bool) -> dict[str, Tensor]:
        with torch.enable_grad():
            loss = self._loss(i)
            gs = torch.autograd.grad(
                loss,
                [self.point[n] for n in self.names],
                create_graph=create_graph,
                allow_unused=True,
            )
        return {
            n: torch.zeros_like(self.point[n]) if g is None else g
            for n, g in zip(self.names, gs, strict=True)
        }

    def _graph_grads(self, i: int) -> dict[str, Tensor]:
        if not self.cached:
            return self._grads(i, create_graph=True)
        if self._graph is None:
            self._graph = self._grads(0, create_graph=True)
        return self._graph

    def gradient(self) -> dict[str, Tensor]:
        """g = M * dL/dtheta, full-shape (zero outside the active set)."""
        if self._grad is None:
            if self.cached:
                g = {n: t.detach() for n, t in self._graph_grads(0).items()}
            else:
                g = {n: torch.zeros_like(t) for n, t in self.point.items()}
                for i in range(len(self.chunks)):
                    for n, t in self._grads(i, create_graph=False).items():
                        g[n] += t
            self._grad = {n: self._mask(n, t.detach()) for n, t in g.items()}
        return self._grad

    def hvp(self, v: Mapping[str, Tensor], names: list[str] | None = None) -> dict[str, Tensor]:
        """(M H M v) on ``names`` (all by default): the block H[names, names] applied to v.

        Entries of v missing from ``v`` are zero; its values at masked positions are ignored.
        """
        names = self.names if names is None else names
        unknown = [n for n in v if n not in names]
        if unknown:
            raise ValueError(f"vector entries outside the operator's parameters: {unknown}")
        vin = {n: self._mask(n, v[n].to(self.point[n])) for n in names if n in v}
        out = {n: torch.zeros_like(self.point[n]) for n in names}
        if vin:
            inputs = [self.point[n] for n in names]
            for i in range(len(self.chunks)):
                with torch.enable_grad():
                    grads = self._graph_grads(i)
                    pairs = [(grads[n], u) for n, u in vin.items() if grads[n].requires_grad]
                    if not pairs:
                        continue
                    hv = torch.autograd.grad(
                        [g for g, _ in pairs],
                        inputs,
                        grad_outputs=[u for _, u in pairs],
                        retain_graph=self.cached,
                        allow_unused=True,
                    )
                for n, h in zip(names, hv, strict=True):
                    if h is not None:
                        out[n] += h.detach()
        return {n: self._mask(n, t) for n, t in out.items()}


def hvp_fn(
    model: nn.Module,
    params: Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int | None = None,
) -> Callable[[Mapping[str, Tensor]], dict[str, Tensor]]:
    """The masked Hessian-vector product v -> M * H (M * v) on dicts of full-shape tensors.

    ``params`` names the model parameters theta to differentiate (``{name: tensor}``; the
    values give the point, masked: theta = W * M); the other parameters and the buffers are
    held fixed at copies of the model's. ``masks`` maps some of those names to masks
    (bool, or 0/1); names without one are fully active. H = d^2 L/dtheta^2 with
    L = mean loss over (x, y); with ``batch_size`` the products are accumulated over
    mini-batches, weighted by n_c / N. Keys missing from v count as zero; the result has every
    key of ``params`` and is zero at masked positions.
    """
    obj = _Objective(model, params, dict(masks or {}), x, y, loss_fn, batch_size)
    return obj.hvp


# ---------------------------------------------------------------------------------------------
# Packed restricted space
# ---------------------------------------------------------------------------------------------


class _Space:
    """Active coordinates of some parameters, packed into one flat vector (model order)."""

    def __init__(self, names: list[str], point: Mapping[str, Tensor], masks: Mapping) -> None:
        self.names = names
        self.shapes = {n: point[n].shape for n in names}
        self.dtypes = {n: point[n].dtype for n in names}
        self.index: dict[str, Tensor | None] = {}
        self.sizes: list[int] = []
        for n in names:
            m = masks.get(n)
            idx = None if m is None else m.reshape(-1).nonzero().squeeze(1)
            self.index[n] = idx
            self.sizes.append(point[n].numel() if idx is None else int(idx.numel()))
        self.n = sum(self.sizes)
        first = point[names[0]]
        self.template = torch.empty(self.n, dtype=first.dtype, device=first.device)

    def pack(self, d: Mapping[str, Tensor]) -> Tensor:
        parts = []
        for n in self.names:
            flat = d[n].reshape(-1)
            idx = self.index[n]
            parts.append(flat if idx is None else flat.index_select(0, idx))
        return torch.cat([p.to(self.template.dtype) for p in parts])

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        out = {}
        for n, seg in zip(self.names, flat.split(self.sizes), strict=True):
            seg = seg.to(self.dtypes[n])
            idx = self.index[n]
            if idx is None:
                out[n] = seg.reshape(self.shapes[n])
            else:
                full = torch.zeros(math.prod(self.shapes[n]), dtype=seg.dtype, device=seg.device)
                out[n] = full.index_copy_(0, idx, seg).view(self.shapes[n])
        return out


def _restricted(
    model: nn.Module, masks: Mapping[str, Tensor] | None, include_biases: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor | None], dict[str, list[str]]]:
    """(params, masks, layer groups) of the restricted space, in model order."""
    named = dict(model.named_parameters())
    mask_in = {} if masks is None else {n: masks[n] for n in masks}
    bool_masks: dict[str, Tensor | None] = dict(
        check_masks(mask_in, named, "masks", subset=True, against="parameter of the model"))
    chosen = set(default_weight_names(model)) | set(mask_in)
    weights = [n for n in named if n in chosen]
    if not weights:
        raise ValueError("the model has no sparsifiable (Linear/Conv) weight and no mask")
    ids = {id(p): n for n, p in named.items()}
    groups: dict[str, list[str]] = {w: [w] for w in weights}
    taken = set(weights)
    if include_biases:
        for w in weights:
            owner = w.rpartition(".")[0]
            try:
                module = model.get_submodule(owner)
            except AttributeError:
                continue
            bias = getattr(module, "bias", None)
            bname = ids.get(id(bias)) if isinstance(bias, nn.Parameter) else None
            if bname is not None and bname not in taken:
                groups[w].append(bname)
                taken.add(bname)
    order = [n for n in named if n in taken]
    return {n: named[n] for n in order}, {n: bool_masks.get(n) for n in order}, groups


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass
class HessianReport:
    """Spectral summary of A = P H P on the active coordinates (see the module docstring).

    ``top`` descending, ``bottom`` ascending; ``top_err``/``bottom_err`` are the Lanczos
    residual bounds (an eigenvalue of A lies within err of each value); ``lanczos_iterations``
    the Lanczos steps taken and ``converged`` whether the wanted Ritz values met the
    tolerance (always True when the Krylov space was exhausted). ``trace``/``trace_std`` are
    NaN with ``hutchinson_samples=0``. ``per_layer`` maps each sparsified weight's name to the
    report of its diagonal block (their own ``per_layer`` is empty).
    """

    top: list[float]
    bottom: list[float]
    gHg: float
    gHg_over_gg: float
    trace: float
    trace_std: float
    n_active: int
    per_layer: dict[str, HessianReport] = field(default_factory=dict)
    top_err: list[float] = field(default_factory=list)
    bottom_err: list[float] = field(default_factory=list)
    lanczos_iterations: int = 0
    converged: bool = True


def _check_int(name: str, value: int | None, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def _steps(n: int, k: int, lanczos_steps: int | None) -> tuple[int, float | None]:
    """(steps, tol): adaptive up to min(n, max(100, 4k)) by default, exactly as given else."""
    if lanczos_steps is None:
        return min(n, max(DEFAULT_MAX_STEPS, 4 * k)), None
    return min(n, lanczos_steps), 0.0


def _block_report(
    obj: _Objective,
    space: _Space,
    names: list[str] | None,
    k: int,
    lanczos_steps: int | None,
    samples: int,
    seed: int,
) -> HessianReport:
    n = space.n
    if n == 0:
        return HessianReport([], [], 0.0, math.nan, 0.0, 0.0, 0)

    def matvec(flat: Tensor) -> Tensor:
        return space.pack(obj.hvp(space.unpack(flat), names))

    k = min(k, n)
    steps, tol = _steps(n, k, lanczos_steps)
    res = lanczos(matvec, space.template, k, steps, seed, which="both", tol=tol)
    g = space.pack(obj.gradient())
    hg = matvec(g)
    ghg = float(torch.dot(g.double(), hg.double()))
    gg = float(torch.dot(g.double(), g.double()))
    if samples == 0:
        trace, trace_std = math.nan, math.nan
    elif samples >= n:
        trace, trace_std = 0.0, 0.0
        for i in range(n):
            e = torch.zeros_like(space.template)
            e[i] = 1.0
            trace += float(matvec(e)[i])
    else:
        trace, trace_std = hutchinson(matvec, space.template, samples, seed + 1)
    return HessianReport(
        top=res.top(k),
        bottom=res.bottom(k),
        gHg=ghg,
        gHg_over_gg=ghg / gg if gg > 0 else math.nan,
        trace=trace,
        trace_std=trace_std,
        n_active=n,
        top_err=res.top_err(k),
        bottom_err=res.bottom_err(k),
        lanczos_iterations=res.steps,
        converged=res.converged,
    )


def _setup(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    include_biases: bool,
    batch_size: int | None,
    seed: int,
) -> tuple[_Objective, _Space, dict[str, list[str]]]:
    params, bool_masks, groups = _restricted(model, masks, include_biases)
    obj = _Objective(model, params, bool_masks, x, y, loss_fn, batch_size, seed)
    return obj, _Space(list(params), obj.point, obj.masks), groups


def hessian_report(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    top_k: int = 5,
    include_biases: bool = False,
    per_layer: bool = True,
    lanczos_steps: int | None = None,
    hutchinson_samples: int = 50,
    seed: int = 0,
    batch_size: int | None = None,
) -> HessianReport:
    """Extreme eigenvalues, g^T H g and trace of the Hessian restricted to the active weights.

    The restricted space: masked weights' active entries, all entries of Linear/Conv weights
    without a mask (``masks=None``: all of them), plus those layers' biases with
    ``include_biases``. ``loss_fn(model(x), y)`` must be a mean over the batch.
    ``lanczos_steps=None`` runs Lanczos adaptively (until the top_k Ritz values at both ends
    have relative residual below 100 eps of the weights' dtype, at most
    min(n_active, max(100, 4 top_k)) steps);
    an int runs exactly that many steps (capped at n_active; ``n_active`` gives exact
    eigenvalues). ``hutchinson_samples`` Rademacher probes estimate the trace (0 skips it,
    >= n_active computes it exactly). ``seed`` fixes the Lanczos start vector, the probes and
    dropout. ``per_layer`` adds one report per sparsified weight (top_k capped at the layer's
    active count). Cost: roughly lanczos steps + hutchinson_samples + 1 Hessian-vector
    products (each about 2-3 backward passes), per block.

    Raises ValueError when top_k exceeds the number of active coordinates, when the model has
    no Linear/Conv weight, or when masks do not match the parameters.
    """
    _check_int("top_k", top_k, 1)
    _check_int("lanczos_steps", lanczos_steps, 1)
    _check_int("hutchinson_samples", hutchinson_samples, 0)
    _check_int("batch_size", batch_size, 1)
    obj, space, groups = _setup(model, masks, x, y, loss_fn, include_biases, batch_size, seed)
    if top_k > space.n:
        raise ValueError(f"top_k={top_k} exceeds the {space.n} active weights")
    report = _block_report(obj, space, None, top_k, lanczos_steps, hutchinson_samples, seed)
    if per_layer:
        for i, (layer, names) in enumerate(groups.items()):
            sub = _Space(names, obj.point, obj.masks)
            report.per_layer[layer] = _block_report(
                obj, sub, names, top_k, lanczos_steps, hutchinson_samples, seed + 1000 * (i + 1)
            )
    return report


def hessian_eigenvalues(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor,
    *,
    k: int = 1,
    which: Literal["top", "bottom"] = "top",
    loss_fn: LossFn = F.cross_entropy,
    include_biases: bool = False,
    lanczos_steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> list[float]:
    """Only the k largest (descending) or smallest (ascending) eigenvalues of P H P.

    The cheap path of ``hessian_report``: one Lanczos run that stops as soon as the wanted
    end has converged, no gradient, trace or per-layer work. Same space and options.
    """
    _check_int("k", k, 1)
    _check_int("lanczos_steps", lanczos_steps, 1)
    if which not in ("top", "bottom"):
        raise ValueError(f"which must be 'top' or 'bottom', got {which!r}")
    obj, space, _ = _setup(model, masks, x, y, loss_fn, include_biases, batch_size, seed)
    if k > space.n:
        raise ValueError(f"top_k={k} exceeds the {space.n} active weights")

    def matvec(flat: Tensor) -> Tensor:
        return space.pack(obj.hvp(space.unpack(flat)))

    steps, tol = _steps(space.n, k, lanczos_steps)
    res = lanczos(matvec, space.template, k, steps, seed, which=which, tol=tol)
    return res.top(k) if which == "top" else res.bottom(k)
