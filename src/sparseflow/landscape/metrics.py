"""Metrics between trained solutions: the lottery-ticket analyses (docs/science.md section 6).

Pairwise measures and their matrices; ``landscape/compare.py`` applies them all to n models.
Definitions as implemented by Evci et al. (docs/science.md sections 6 and 9.1) and Fort et al.:

- parameter distances over a flat vector theta (all compared entries concatenated, float64):
  L2 distance ``||theta_A - theta_B||_2`` and cosine distance
  ``1 - <theta_A / ||theta_A||, theta_B / ||theta_B||>`` (between solutions and to the init);
- disagreement: the fraction of examples whose predicted class (argmax) differs;
- ``KL(p_A || p_B) = (1/N) sum_n sum_c p_A[n, c] log(p_A[n, c] / p_B[n, c])`` of the softmax
  distributions, averaged over examples, and the symmetric mean ``(KL(A||B) + KL(B||A)) / 2``;
- ensemble accuracy: the accuracy of the mean of the members' softmax probabilities;
- mask overlap: Jaccard ``|A n B| / |A u B|`` of the active sets, pooled over all masked
  weights and per layer;
- a 2-D classical (Torgerson) MDS of a pairwise distance matrix.

Everything is a pure function of models, parameter dicts or predictions; nothing trains and no
model is left changed (``predict_proba`` restores every module's train/eval flag). Imports only
torch, numpy and the standard library; the figures and text tables of a comparison are drawn
above this layer (``sparseflow.plots.plot_mds``, ``sparseflow.analysis.tables.comparison_table``).

Parameter dicts are expected to be keyed like ``dict(model.named_parameters())``: pass
parameters, not ``model.state_dict()`` (whose buffers, e.g. BatchNorm running statistics,
would otherwise be counted as coordinates of the solution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sparseflow.sparsity import check_masks

__all__ = [
    "accuracy",
    "cosine_distance",
    "disagreement",
    "ensemble_accuracy",
    "flat_params",
    "jaccard",
    "kl_divergence",
    "l2_distance",
    "mds_2d",
    "pairwise",
    "predict_proba",
    "symmetric_kl",
]

ParamsLike = Tensor | Mapping[str, Tensor]


# --------------------------------------------------------------------------------------------
# parameter vectors and distances
# --------------------------------------------------------------------------------------------
def flat_params(state: Mapping[str, Tensor], names: Sequence[str] | None = None) -> Tensor:
    """theta = concat_k vec(state[k]) in float64, over ``names`` in the given order.

    ``names=None`` takes every floating-point entry of ``state`` in its iteration order
    (integer/bool entries such as BatchNorm's ``num_batches_tracked`` are skipped). Callers
    should pass ``dict(model.named_parameters())``-keyed dicts, not ``state_dict()``s with
    buffers. A named entry that is missing or not floating raises a one-line ValueError.
    The result is detached and lives on the device of the first entry.
    """
    if names is None:
        names = [k for k, v in state.items() if torch.is_floating_point(v)]
    parts: list[Tensor] = []
    device: torch.device | None = None
    for k in names:
        if k not in state:
            raise ValueError(f"flat_params: no entry {k!r}")
        v = state[k]
        if not torch.is_floating_point(v):
            raise ValueError(f"flat_params: entry {k!r} is not floating point ({v.dtype})")
        device = v.device if device is None else device
        parts.append(v.detach().to(device=device, dtype=torch.float64).reshape(-1))
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(parts)


def _check_same_layout(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    """Same keys (in any order) and same shapes; one-line ValueError naming the first mismatch."""
    for k in a:
        if k not in b:
            raise ValueError(f"{what}: entry {k!r} is in the first but not in the second")
        if tuple(a[k].shape) != tuple(b[k].shape):
            raise ValueError(
                f"{what}: entry {k!r} has shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
            )
    for k in b:
        if k not in a:
            raise ValueError(f"{what}: entry {k!r} is in the second but not in the first")


def _pair_vectors(a: ParamsLike, b: ParamsLike, what: str) -> tuple[Tensor, Tensor]:
    """Two aligned float64 vectors from two tensors or two parameter dicts."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        _check_same_layout(a, b, what)
        names = [k for k, v in a.items() if torch.is_floating_point(v)]
        va, vb = flat_params(a, names), flat_params(b, names)
    elif isinstance(a, Tensor) and isinstance(b, Tensor):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
        va = a.detach().to(torch.float64).reshape(-1)
        vb = b.detach().to(device=va.device, dtype=torch.float64).reshape(-1)
    else:
        raise TypeError(f"{what}: expected two tensors or two parameter dicts")
    return va, vb.to(va.device)


def l2(va: Tensor, vb: Tensor) -> float:
    return float(torch.linalg.vector_norm(va - vb))


def cosine(va: Tensor, vb: Tensor) -> float:
    na, nb = torch.linalg.vector_norm(va), torch.linalg.vector_norm(vb)
    if float(na) == 0.0 or float(nb) == 0.0:
        raise ValueError("cosine distance is undefined for a zero vector")
    cos = float(torch.dot(va / na, vb / nb))
    return 1.0 - min(1.0, max(-1.0, cos))


def l2_distance(a: ParamsLike, b: ParamsLike) -> float:
    """||theta_a - theta_b||_2 of two tensors or two parameter dicts (float64).

    Dicts must have the same keys and shapes (one-line ValueError naming the first mismatch);
    their floating entries are compared (see :func:`flat_params`).
    """
    return l2(*_pair_vectors(a, b, "l2_distance"))


def cosine_distance(a: ParamsLike, b: ParamsLike) -> float:
    """1 - <theta_a / ||theta_a||, theta_b / ||theta_b||>, in [0, 2] (float64).

    Same inputs and checks as :func:`l2_distance`; a zero vector raises ValueError.
    """
    return cosine(*_pair_vectors(a, b, "cosine_distance"))


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------
def predict_proba(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """softmax(model(x)) row by row: an (N, C) float64 tensor on the CPU.

    Runs in eval mode under ``torch.no_grad()`` in batches of ``batch_size`` on the device of
    the model's first parameter (or buffer), then restores every submodule's train/eval flag.
    The softmax is taken in float64 of the logits. The model must return (batch, C) logits.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) == 0:
        raise ValueError("predict_proba: x is empty")
    tensors = itertools.chain(model.parameters(), model.buffers())
    first = next(tensors, None)
    device = first.device if first is not None else x.device
    flags = [(m, m.training) for m in model.modules()]
    out: list[Tensor] = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = model(x[start:start + batch_size].to(device))
                if logits.dim() != 2:
                    raise ValueError(
                        f"predict_proba: the model returned shape {tuple(logits.shape)}, "
                        "expected (batch, classes)"
                    )
                out.append(torch.softmax(logits.detach().to(torch.float64), dim=1).cpu())
    finally:
        for m, was in flags:
            m.training = was
    return torch.cat(out)


def _check_probs(p: Tensor, name: str) -> None:
    if p.dim() != 2 or p.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, C) tensor, got {tuple(p.shape)}")


def _check_pair(p_a: Tensor, p_b: Tensor) -> None:
    _check_probs(p_a, "p_a")
    _check_probs(p_b, "p_b")
    if p_a.shape != p_b.shape:
        raise ValueError(f"shapes differ: {tuple(p_a.shape)} vs {tuple(p_b.shape)}")


def _predicted(p: Tensor, name: str) -> Tensor:
    """Class indices: argmax over dim 1 of (N, C) probabilities, or (N,) indices as given."""
    if p.dim() == 1 and not torch.is_floating_point(p):
        return p
    _check_probs(p, name)
    return p.argmax(dim=1)


def disagreement(p_a: Tensor, p_b: Tensor) -> float:
    """(1/N) sum_n [argmax_c p_a[n, c] != argmax_c p_b[n, c]].

    Inputs are (N, C) probability (or logit) tensors; (N,) integer class predictions are also
    accepted. Ties in argmax go to the lowest class index (torch's rule).
    """
    a, b = _predicted(p_a, "p_a"), _predicted(p_b, "p_b")
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"disagreement: {tuple(a.shape)} vs {tuple(b.shape)} predictions")
    return float((a.cpu() != b.cpu()).double().mean())


def kl_divergence(p_a: Tensor, p_b: Tensor, eps: float = 1e-12) -> float:
    """KL(p_a || p_b) = (1/N) sum_n sum_c p_a log(max(p_a, eps) / max(p_b, eps)), in nats.

    Inputs are (N, C) probability tensors (rows summing to 1). A zero p_a contributes 0; eps
    keeps a zero p_b finite (it then costs up to log(1/eps) ~ 27.6 nats per unit of p_a).
    """
    _check_pair(p_a, p_b)
    a = p_a.detach().to(torch.float64).cpu()
    b = p_b.detach().to(torch.float64).cpu()
    terms = a * (a.clamp_min(eps).log() - b.clamp_min(eps).log())
    return float(terms.sum(dim=1).mean())


def symmetric_kl(p_a: Tensor, p_b: Tensor, eps: float = 1e-12) -> float:
    """(KL(p_a || p_b) + KL(p_b || p_a)) / 2 (see :func:`kl_divergence`)."""
    return 0.5 * (kl_divergence(p_a, p_b, eps) + kl_divergence(p_b, p_a, eps))


def accuracy(p: Tensor, y: Tensor) -> float:
    """(1/N) sum_n [argmax_c p[n, c] == y[n]] for (N, C) scores and (N,) integer labels."""
    _check_probs(p, "p")
    y = torch.as_tensor(y).reshape(-1)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"accuracy: {p.shape[0]} predictions vs {y.shape[0]} labels")
    return float((p.argmax(dim=1).cpu() == y.cpu()).double().mean())


def ensemble_accuracy(probs: Sequence[Tensor], y: Tensor) -> float:
    """accuracy(p_bar, y) with p_bar = (1/M) sum_m p_m, the mean of the softmax probabilities.

    All members must have the same (N, C) shape. A single member gives its own accuracy.
    """
    if len(probs) == 0:
        raise ValueError("ensemble_accuracy: no members")
    first = probs[0]
    _check_probs(first, "probs[0]")
    total = torch.zeros(first.shape, dtype=torch.float64)
    for i, p in enumerate(probs):
        if p.shape != first.shape:
            raise ValueError(
                f"ensemble_accuracy: probs[{i}] has shape {tuple(p.shape)}, "
                f"expected {tuple(first.shape)}"
            )
        total += p.detach().to(torch.float64).cpu()
    return accuracy(total / len(probs), y)


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def _as_mask_dict(masks: Any, what: str) -> dict[str, Tensor]:
    """{name: bool tensor} from a dict or any mapping-like object (e.g. ``MaskSet``)."""
    try:
        return {str(k): torch.as_tensor(masks[k]).detach().bool().cpu() for k in masks}
    except (TypeError, KeyError) as exc:
        raise TypeError(f"{what}: expected a mapping of layer names to bool masks") from exc


def jaccard(masks_a: Any, masks_b: Any) -> tuple[float, dict[str, float]]:
    """Mask overlap J(A, B) = |A n B| / |A u B| of the active (True) positions.

    Returns (pooled, per_layer): pooled = sum_l |A_l n B_l| / sum_l |A_l u B_l| over all
    layers (not the mean of the per-layer values), and per_layer[l] = |A_l n B_l| / |A_l u B_l|.
    An empty union gives 1.0 (two empty masks are identical). Both arguments are dicts of
    bool masks keyed by layer (a ``MaskSet`` works too) with the same keys and shapes
    (one-line ValueError naming the first mismatch).
    """
    a = _as_mask_dict(masks_a, "masks_a")
    b = check_masks(_as_mask_dict(masks_b, "masks_b"), a, "jaccard: masks_b",
                    against="mask in masks_a")
    inter_total = union_total = 0
    per_layer: dict[str, float] = {}
    for k in a:
        inter = int((a[k] & b[k]).sum())
        union = int((a[k] | b[k]).sum())
        per_layer[k] = inter / union if union else 1.0
        inter_total += inter
        union_total += union
    pooled = inter_total / union_total if union_total else 1.0
    return pooled, per_layer


# --------------------------------------------------------------------------------------------
# matrices and MDS
# --------------------------------------------------------------------------------------------
def pairwise(items: Sequence[Any], fn: Callable[[Any, Any], float]) -> np.ndarray:
    """M[i, j] = M[j, i] = fn(items[i], items[j]) for i < j, M[i, i] = 0 (float64, n x n).

    fn is called once per unordered pair, so it is meant for symmetric measures.
    """
    n = len(items)
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = float(fn(items[i], items[j]))
    return out


def mds_2d(distances: np.ndarray, seed: int = 0) -> np.ndarray:
    """Classical (Torgerson) MDS of an n x n distance matrix D into 2-D: an (n, 2) array.

    B = -1/2 J D^2 J with J = I - 11^T / n (double centring of the squared distances);
    with B's two largest eigenvalues l_1 >= l_2 and unit eigenvectors v_1, v_2 (numpy
    ``eigh``), X[:, k] = v_k sqrt(max(l_k, 0)). When D is Euclidean of rank <= 2 (points in a
    plane) the distances between the rows of X equal D exactly (up to rounding); otherwise X
    is the best rank-2 fit of B. The result is centred at the origin.

    Sign convention (deterministic): each axis is flipped so that its coordinate of largest
    absolute value is positive; values within a relative 1e-9 of the maximum count as tied
    and the first tied index decides, so rounding noise cannot flip the choice. An axis with
    a non-positive eigenvalue (e.g. n <= 2 for the second axis) is all zeros. ``seed`` is
    accepted for API symmetry with iterative MDS and unused: the classical solution has no
    randomness.
    """
    del seed
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"mds_2d: distances must be a square matrix, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("mds_2d: distances must be finite")
    scale = max(float(np.abs(d).max(initial=0.0)), 1.0)
    if not np.allclose(d, d.T, rtol=0.0, atol=1e-9 * scale):
        raise ValueError("mds_2d: distances must be symmetric")
    if np.any(d < -1e-12 * scale):
        raise ValueError("mds_2d: distances must be non-negative")
    n = d.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    sq = d * d
    # double centring B = -1/2 J D^2 J, written without forming J
    b = -0.5 * (sq - sq.mean(axis=0, keepdims=True) - sq.mean(axis=1, keepdims=True) + sq.mean())
    b = 0.5 * (b + b.T)
    vals, vecs = np.linalg.eigh(b)  # ascending
    order = np.argsort(vals)[::-1][:2]
    coords = np.zeros((n, 2), dtype=np.float64)
    tol = 1e-12 * max(float(np.abs(vals).max(initial=0.0)), 1e-300)
    for axis, idx in enumerate(order):
        lam = float(vals[idx])
        if lam <= tol:
            continue
        col = vecs[:, idx] * math.sqrt(lam)
        mag = np.abs(col)
        pivot = int(np.argmax(mag >= mag.max() * (1.0 - 1e-9)))  # first (near-)maximum
        if col[pivot] < 0:
            col = -col
        coords[:, axis] = col
    return coords
