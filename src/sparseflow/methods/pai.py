"""Pruning at initialisation: SNIP, GraSP and SynFlow scores, and the masks they give.

Every function here is pure: the model is run through ``torch.func.functional_call`` on
substitute tensors (detached views of the weights, fresh clones of the buffers), so its
parameters, buffers, ``.grad`` fields and ``requires_grad`` flags are never written, and the
only thing ever changed, the train/eval flags SynFlow switches to eval, is restored exactly
(per module) on the way out, even when the forward raises. Gradients come from
``torch.autograd.grad`` on those substitutes, never from ``.backward()``.

Scores are oriented so that **larger = more important = kept** for every method;
``prune_at_init`` keeps the largest scores with ``sparsity.topk_mask`` (ties go to the
lower flat index; in the global scope, the lower index in the concatenation of the layers
in ``params`` order), so the masks are deterministic.

Sources: Lee et al. 2019 (SNIP), Wang et al. 2020 (GraSP), Tanaka et al. 2020 (SynFlow).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..sparsity import (
    Pattern,
    achievable_count,
    check_masks,
    pattern_topk,
    round_half_even,
    schedule_pattern,
    topk_mask,
)

PAI_METHODS: tuple[str, ...] = ("snip", "grasp", "synflow")
SCOPES: tuple[str, ...] = ("global", "layer")

LossFn = Callable[[Tensor, Tensor], Tensor]


# --- helpers ----------------------------------------------------------------------
def _model_names(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, str]:
    """``{key in params: name of that parameter in model.named_parameters()}``, by identity."""
    if not params:
        raise ValueError("params is empty: nothing to score")
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = {}
    for key, p in params.items():
        if id(p) not in by_id:
            raise ValueError(f"params[{key!r}] is not a parameter of the model")
        names[key] = by_id[id(p)]
    return names


def _substitutes(model: nn.Module) -> dict[str, Tensor]:
    """Detached views of every parameter and clones of every buffer, keyed as in the model.

    Parameters are only read (so views are enough); buffers are cloned because a forward in
    train mode updates BatchNorm's running statistics in place.
    """
    tensors: dict[str, Tensor] = {n: p.detach() for n, p in model.named_parameters()}
    tensors.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return tensors


@contextmanager
def _eval_mode(model: nn.Module):
    """Put every module in eval mode; restore each module's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _scalar_loss(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {shape}")
    return loss.reshape(())


def _grads(out: Tensor, leaves: list[Tensor], create_graph: bool = False) -> list[Tensor]:
    """d out / d leaves; zeros for a leaf ``out`` does not depend on."""
    if not out.requires_grad:
        return [torch.zeros_like(w) for w in leaves]
    grads = torch.autograd.grad(out, leaves, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(leaves, grads, strict=True)]


def _loss_and_leaves(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x: Any,
    y: Any,
    loss_fn: LossFn,
    temperature: float = 1.0,
) -> tuple[Tensor, list[Tensor]]:
    """loss_fn(model(x) / temperature, y) as a function of fresh leaves holding params' values."""
    names = _model_names(model, params)
    tensors = _substitutes(model)
    leaves = []
    for key in params:
        leaf = tensors[names[key]].detach().requires_grad_(True)
        tensors[names[key]] = leaf
        leaves.append(leaf)
    out = functional_call(model, tensors, (x,))
    if temperature != 1.0:
        out = out / temperature
    return _scalar_loss(loss_fn(out, y)), leaves


# --- scores -----------------------------------------------------------------------
def snip_scores(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    x: Any,
    y: Any,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, Tensor]:
    """SNIP connection sensitivity (Lee et al. 2019, "SNIP: Single-shot Network Pruning").

    S(w) = |dL/dw * w|, L = loss_fn(model(x), y) on one batch, for the full dense weights
    (the derivative of L w.r.t. a multiplicative gate c on w, at c = 1). The paper divides
    by sum |S|, a positive constant that does not change the ranking; it is left out.

    The model runs in its current train/eval mode (train mode: BatchNorm uses the batch
    statistics; its running statistics are not updated). Larger = keep.
    Returns ``{key of params: scores}``, each of its weight's shape and dtype.
    """
    with torch.enable_grad():
        loss, leaves = _loss_and_leaves(model, params, x, y, loss_fn)
        grads = _grads(loss, leaves)
    return {k: (g * w).abs().detach() for k, g, w in zip(params, grads, leaves, strict=True)}


def grasp_scores(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    x: Any,
    y: Any,
    loss_fn: LossFn = F.cross_entropy,
    temperature: float = 200.0,
    pattern: Pattern | None = None,
) -> dict[str, Tensor]:
    """GraSP scores (Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving
    Gradient Flow"), oriented so that larger = keep.

    L = loss_fn(model(x) / T, y) (T = ``temperature``, default 200 as in the paper's code),
    g = dL/dw (over all weights in ``params`` together), H = d^2 L / dw^2 over the same
    weights (cross-layer blocks included), Hg = d/dw (stop_gradient(g) . dL/dw) by double
    backward (one forward pass).

    Sign convention: the paper scores S(w) = -w * (Hg) and REMOVES the weights with the
    highest S. This function returns ``+w * (Hg) = -S``, so keeping the largest returned
    scores is the paper's rule. The scores are signed (no absolute value). The paper's
    normalisation by |sum S| does not change the ranking and is left out.

    The model runs in its current train/eval mode, as for ``snip_scores``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.enable_grad():
        loss, leaves = _loss_and_leaves(model, params, x, y, loss_fn, float(temperature))
        grads = _grads(loss, leaves, create_graph=True)
        z = torch.stack([(g.detach() * g).sum() for g in grads]).sum()
        hg = _grads(z, leaves)
    return {k: (w * h).detach() for k, w, h in zip(params, leaves, hg, strict=True)}


def _masks_by_name(
    model: nn.Module, masks: Mapping[str, Tensor] | None, tensors: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Masks keyed by model parameter name (any parameter, not only the scored ones)."""
    if masks is None:
        return {}
    params = {n: tensors[n] for n, _ in model.named_parameters()}
    return check_masks(masks, params, "synflow_scores: masks", subset=True,
                       against="parameter of the model")


def synflow_scores(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    input_shape: tuple[int, ...],
    masks: Mapping[str, Tensor] | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """SynFlow scores (Tanaka et al. 2020, "Pruning neural networks without any data by
    iteratively conserving synaptic flow"); data-free, larger = keep.

    Every floating parameter AND buffer theta is replaced by |theta| (as the paper's code
    does with the whole state dict), masked weights by |w| * M, and the network is run in
    eval mode on an all-ones input of shape (1, *input_shape):
    R = sum(model(1)),  S(w) = |dR/dw * w|  (w = |w| here; masked positions score 0).

    BatchNorm: eval mode, so it applies its running statistics (with |running_mean|;
    at initialisation running_mean = 0 and running_var = 1, so it is a positive scaling by
    |gamma| / sqrt(1 + eps) plus |beta|). A norm layer that uses batch statistics even in
    eval mode (``track_running_stats=False``) sees a batch of one.

    ``masks`` maps model parameter names (scored or not) to bool masks; unmasked
    parameters are dense. The model itself is never written: the absolute values live in
    substitute tensors, so the signs need no restoring. R is a product over the depth of
    the network, so it is computed in ``dtype`` (float64 by default, like the paper's code)
    and the scores are returned in that dtype; non-finite scores (overflow, even in
    float64) raise ``FloatingPointError``.
    """
    names = _model_names(model, params)
    device = next(iter(params.values())).device
    with torch.enable_grad(), _eval_mode(model):
        tensors = _substitutes(model)
        mask_of = _masks_by_name(model, masks, tensors)
        leaves = {}
        for name, t in tensors.items():
            if t.is_floating_point():
                t = t.detach().abs().to(dtype)
                if name in names.values():
                    t = leaves[name] = t.requires_grad_(True)
                if name in mask_of:
                    t = t * mask_of[name]
                tensors[name] = t
        ones = torch.ones((1, *input_shape), dtype=dtype, device=device)
        out = functional_call(model, tensors, (ones,))
        r = out.sum()
        keys = list(params)
        ws = [leaves[names[k]] for k in keys]
        grads = _grads(r, ws)
    scores = {k: (g * w).abs().detach() for k, g, w in zip(keys, grads, ws, strict=True)}
    if not all(bool(torch.isfinite(s).all()) for s in scores.values()):
        raise FloatingPointError(
            f"SynFlow scores overflowed in {dtype}; use a wider dtype or rescale the weights"
        )
    return scores


# --- masks ------------------------------------------------------------------------
def _as_count(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int, got {type(value).__name__}") from None


def _check_counts(
    params: Mapping[str, Tensor], counts: Mapping[str, int] | int, scope: str
) -> dict[str, int] | int:
    if scope == "layer":
        if not isinstance(counts, Mapping):
            raise ValueError(f'scope="layer" needs counts as {{name: int}}, got {counts!r}')
        missing = [n for n in params if n not in counts]
        extra = [n for n in counts if n not in params]
        if missing or extra:
            raise ValueError(f"counts do not match params: missing {missing}, extra {extra}")
        out = {}
        for name, p in params.items():
            k = _as_count(counts[name], f"counts[{name!r}]")
            if not 0 <= k <= p.numel():
                raise ValueError(f"counts[{name!r}]={k} outside [0, {p.numel()}]")
            out[name] = k
        return out
    if isinstance(counts, Mapping):
        raise ValueError('scope="global" needs counts as one int (the total number to keep)')
    total = sum(p.numel() for p in params.values())
    k = _as_count(counts, "counts")
    if not 0 <= k <= total:
        raise ValueError(f"counts={k} outside [0, {total}] (the total number of weights)")
    return k


def _keep_largest(
    scores: Mapping[str, Tensor], counts: Mapping[str, int] | int,
    pattern: Pattern | None = None,
) -> dict[str, Tensor]:
    """Per layer (counts a dict) or one threshold over all layers (counts an int).

    Global: ``topk_mask`` over the concatenation of the flattened scores in ``scores``
    order, cast to float64 (exact for float32/16 scores), so ties go to the earlier layer,
    then to the lower index. Per layer under a structured ``pattern``: the highest scores the
    pattern allows (``sparsity.pattern_topk``; N:M at an intermediate count steps through
    n_t:M, ``sparsity.schedule_pattern``).
    """
    if isinstance(counts, Mapping):
        if pattern is not None and pattern.structured:
            return {n: _pattern_keep(s, int(counts[n]), pattern) for n, s in scores.items()}
        return {n: topk_mask(s, int(counts[n])) for n, s in scores.items()}
    device = next(iter(scores.values())).device
    flat = torch.cat([s.detach().reshape(-1).to(device, torch.float64) for s in scores.values()])
    keep = topk_mask(flat, counts)
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].view(s.shape).to(s.device)
        start += s.numel()
    return out


def _pattern_keep(scores: Tensor, k: int, pattern: Pattern) -> Tensor:
    """The ``k`` highest ``scores`` of one layer under ``pattern`` (all kept while N:M is at
    M:M)."""
    step = schedule_pattern(pattern, k / scores.numel())
    if step is None:
        return torch.isfinite(scores) | (scores > 0)
    return pattern_topk(scores, achievable_count(scores.shape, k, step), step)


def _schedule(n: int, k: int, r: int, iterations: int) -> int:
    """Number kept after round r of the exponential schedule: round(n * (k/n)^(r/T))."""
    if r >= iterations or n == 0:
        return k
    return max(k, round_half_even(n * (k / n) ** (r / iterations)))


def prune_at_init(
    method: str,
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    counts: Mapping[str, int] | int,
    *,
    x: Any = None,
    y: Any = None,
    input_shape: tuple[int, ...] | None = None,
    scope: str = "global",
    iterations: int = 100,
    loss_fn: LossFn = F.cross_entropy,
    temperature: float = 200.0,
    pattern: Pattern | None = None,
) -> dict[str, Tensor]:
    """Bool masks ``{key of params: mask}`` from SNIP, GraSP or SynFlow scores (larger = keep).

    scope="layer": ``counts`` is ``{name: k_l}``; keep the k_l largest scores of layer l.
    scope="global": ``counts`` is K, the total to keep; keep the K largest scores over all
    layers together (one threshold). Ties: lower flat index (global: earlier layer first).

    snip / grasp: one shot on the batch (x, y) (``temperature`` is GraSP's T).
    synflow (data-free, needs ``input_shape``): ``iterations`` rounds r = 1..T; in round r
    the scores are recomputed with the current masks and the number kept is
    round(n * (k/n)^(r/T)) (the paper's exponential schedule; per layer with n = numel_l,
    k = k_l, or globally with n = total, k = K), so the last round keeps exactly k.
    Pruned weights never come back (a pruned weight's score is -inf in later rounds).
    ``pattern``: with ``scope="layer"``, each layer keeps the highest scores the pattern allows.

    The model is left untouched (see the module docstring). Raises a one-line ValueError
    for an unknown method or scope, missing x/y (snip, grasp) or input_shape (synflow),
    counts of the wrong kind or out of range, or iterations < 1.
    """
    if method not in PAI_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(PAI_METHODS)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    _model_names(model, params)
    checked = _check_counts(params, counts, scope)

    if method in ("snip", "grasp"):
        if x is None or y is None:
            raise ValueError(f"method {method!r} needs a batch: pass x= and y=")
        if method == "snip":
            scores = snip_scores(model, params, x, y, loss_fn)
        else:
            scores = grasp_scores(model, params, x, y, loss_fn, temperature)
        return _keep_largest(scores, checked, pattern)

    if input_shape is None:
        raise ValueError("method 'synflow' needs input_shape= (one example's shape, no batch)")
    iterations = _as_count(iterations, "iterations")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    names = _model_names(model, params)
    masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in params.items()}
    total = sum(p.numel() for p in params.values())
    for r in range(1, iterations + 1):
        target: dict[str, int] | int
        if isinstance(checked, dict):
            target = {k: _schedule(p.numel(), checked[k], r, iterations) for k, p in params.items()}
            done = all(int(masks[k].sum()) == target[k] for k in params)
        else:
            target = _schedule(total, checked, r, iterations)
            done = sum(int(m.sum()) for m in masks.values()) == target
        if done:
            continue
        scores = synflow_scores(
            model, params, tuple(input_shape), {names[k]: m for k, m in masks.items()}
        )
        scores = {k: s.masked_fill(~masks[k], float("-inf")) for k, s in scores.items()}
        masks = _keep_largest(scores, target, pattern)
    return masks


__all__ = [
    "PAI_METHODS",
    "grasp_scores",
    "prune_at_init",
    "snip_scores",
    "synflow_scores",
]
