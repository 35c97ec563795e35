"""Spectral reports of the Hessian restricted to the active weights.

docs/science.md sections 4 and 11. The operator is A = P H P on the active coordinates,
with vectors packed to R^{n_active} and products by double backward (``flow/hvp.py``); the
eigenvalues come from ``lanczos`` and the trace from ``hutchinson`` (``flow/lanczos.py``).

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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .hvp import LossFn, Objective, Space, restricted
from .lanczos import hutchinson, lanczos

__all__ = ["HessianReport", "hessian_eigenvalues", "hessian_report"]

DEFAULT_MAX_STEPS = 100
"""Default cap on Lanczos steps (the Krylov basis holds steps x n_active numbers)."""


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
    obj: Objective,
    space: Space,
    names: list[str] | None,
    k: int,
    lanczos_steps: int | None,
    samples: int,
    seed: int,
    tick: Callable[[], object] = lambda: None,
) -> HessianReport:
    n = space.n
    if n == 0:
        return HessianReport([], [], 0.0, math.nan, 0.0, 0.0, 0)

    def matvec(flat: Tensor) -> Tensor:
        tick()
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
) -> tuple[Objective, Space, dict[str, list[str]]]:
    params, bool_masks, groups = restricted(model, masks, include_biases)
    obj = Objective(model, params, bool_masks, x, y, loss_fn, batch_size, seed)
    return obj, Space(list(params), obj.point, obj.masks), groups


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
    progress: bool = False,
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
    products (each about 2-3 backward passes), per block; ``progress`` counts them on a
    progress bar (on a terminal only).

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
    with tqdm(desc="Hessian-vector products", unit="hvp", leave=False,
              disable=None if progress else True) as bar:
        report = _block_report(obj, space, None, top_k, lanczos_steps, hutchinson_samples,
                               seed, bar.update)
        if per_layer:
            for i, (layer, names) in enumerate(groups.items()):
                sub = Space(names, obj.point, obj.masks)
                report.per_layer[layer] = _block_report(
                    obj, sub, names, top_k, lanczos_steps, hutchinson_samples,
                    seed + 1000 * (i + 1), bar.update)
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
