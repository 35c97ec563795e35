"""Comparing n trained solutions at once: every pairwise metric, ensembles and an MDS map.

docs/science.md sections 6 and 9.1 (the lottery-ticket analyses of Evci et al.). The
metrics themselves (distances, disagreement, KL, accuracy, ensembles, Jaccard, pairwise
matrices, MDS) live in ``landscape/metrics.py``; ``compare_models`` applies them to a list of
models on one evaluation set and returns a ``Comparison``. Nothing trains and no model is
left changed. The figures and text tables of a comparison are drawn above this layer
(``sparseflow.plots.plot_mds``, ``sparseflow.analysis.tables.comparison_table``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .metrics import (
    accuracy,
    cosine,
    disagreement,
    ensemble_accuracy,
    flat_params,
    jaccard,
    kl_divergence,
    l2,
    mds_2d,
    pairwise,
    predict_proba,
)

__all__ = ["Comparison", "compare_models"]

#: Up to this many models, ``compare_models`` scores every ensemble of size >= 2.
MAX_SUBSET_MODELS = 8


@dataclass
class Comparison:
    """The pairwise comparison of n models on one evaluation set (see :func:`compare_models`).

    Matrices are n x n float64 in the order of ``labels``. ``l2``, ``cosine``,
    ``disagreement`` and ``sym_kl`` are symmetric with zero diagonals; ``kl[i, j] =
    KL(p_i || p_j)`` is not symmetric. ``jaccard`` holds the pooled mask overlap (diagonal 1)
    or None when any model has no masks (dense). ``l2_to_init`` / ``cosine_to_init`` are
    None for a model without an init. ``mds`` is the (n, 2) classical MDS of ``l2``.
    ``ensembles`` maps sorted index tuples to the ensemble accuracy: every subset of size >= 2
    when n <= 8 (2^n - n - 1 subsets), otherwise only the ensemble of all models.
    """

    labels: list[str]
    l2: np.ndarray
    cosine: np.ndarray
    disagreement: np.ndarray
    kl: np.ndarray
    sym_kl: np.ndarray
    accuracy: list[float]
    jaccard: np.ndarray | None
    l2_to_init: list[float | None]
    cosine_to_init: list[float | None]
    mds: np.ndarray
    ensembles: dict[tuple[int, ...], float] = field(default_factory=dict)


def _param_layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def _check_architectures(models: Sequence[nn.Module]) -> None:
    """All models have model 0's parameter names and shapes, in order; one-line ValueError."""
    ref = _param_layout(models[0])
    ref_map = dict(ref)
    for i, m in enumerate(models[1:], start=1):
        lay = _param_layout(m)
        if lay == ref:
            continue
        got = dict(lay)
        for name, shape in ref:
            if name not in got:
                raise ValueError(
                    f"different architectures: model {i} has no parameter {name!r} of model 0"
                )
            if got[name] != shape:
                raise ValueError(
                    f"different architectures: parameter {name!r} has shape {got[name]} in "
                    f"model {i} vs {shape} in model 0"
                )
        for name, _ in lay:
            if name not in ref_map:
                raise ValueError(
                    f"different architectures: model {i} has parameter {name!r} not in model 0"
                )
        raise ValueError(f"different architectures: model {i} orders its parameters differently")


def _init_vector(init: Any, names: list[str], shapes: dict[str, tuple[int, ...]], i: int) -> Tensor:
    """theta_0 of model i from an init dict (extra keys ignored) or an nn.Module."""
    if isinstance(init, nn.Module):
        init = dict(init.named_parameters())
    if not isinstance(init, Mapping):
        raise TypeError(f"inits[{i}]: expected a parameter dict, an nn.Module or None")
    for n in names:
        if n not in init:
            raise ValueError(f"inits[{i}]: no entry {n!r}")
        if tuple(init[n].shape) != shapes[n]:
            raise ValueError(
                f"inits[{i}]: entry {n!r} has shape {tuple(init[n].shape)}, expected {shapes[n]}"
            )
    return flat_params(init, names).cpu()


def _per_model(values: Sequence[Any] | None, n: int, what: str) -> list[Any]:
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} entries for {n} models")
    return values


def compare_models(
    models: Sequence[nn.Module],
    x: Tensor,
    y: Tensor,
    *,
    labels: Sequence[str] | None = None,
    masks: Sequence[Any | None] | None = None,
    inits: Sequence[Mapping[str, Tensor] | nn.Module | None] | None = None,
    batch_size: int = 1000,
) -> Comparison:
    """Compare n >= 1 models on (x, y): parameter distances, predictions, ensembles, masks.

    The parameters compared are ``model.named_parameters()`` (every parameter, biases and
    normalisation scales included; buffers are not), flattened in float64. All models must
    have identical parameter names and shapes (one-line ValueError "different architectures:
    ..." naming the first mismatch). ``labels`` default to ``model0``, ``model1``, ...
    ``masks[i]`` is model i's ``{layer: bool mask}`` dict (or ``MaskSet``), None for a dense
    model; ``inits[i]`` its parameters at initialisation (a parameter dict, a state dict whose
    extra entries are ignored, or a module), None when unknown. Predictions are
    :func:`predict_proba` in eval mode; the models are left unchanged.
    """
    models = list(models)
    n = len(models)
    if n == 0:
        raise ValueError("compare_models: no models")
    _check_architectures(models)
    labels = [f"model{i}" for i in range(n)] if labels is None else [str(s) for s in labels]
    if len(labels) != n:
        raise ValueError(f"labels: {len(labels)} labels for {n} models")
    masks_l = _per_model(masks, n, "masks")
    inits_l = _per_model(inits, n, "inits")
    y = torch.as_tensor(y).reshape(-1).cpu()
    if len(y) != len(x):
        raise ValueError(f"compare_models: {len(x)} inputs vs {len(y)} labels")

    names = [name for name, _ in models[0].named_parameters()]
    shapes = dict(_param_layout(models[0]))
    thetas = [flat_params(dict(m.named_parameters()), names).cpu() for m in models]
    probs = [predict_proba(m, x, batch_size) for m in models]
    idx = list(range(n))

    l2_mat = pairwise(idx, lambda i, j: l2(thetas[i], thetas[j]))
    cos_mat = pairwise(idx, lambda i, j: cosine(thetas[i], thetas[j]))
    dis = pairwise(idx, lambda i, j: disagreement(probs[i], probs[j]))
    kl = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(n):
            if i != j:
                kl[i, j] = kl_divergence(probs[i], probs[j])
    sym = 0.5 * (kl + kl.T)

    jac: np.ndarray | None = None
    if all(m is not None for m in masks_l):
        jac = pairwise(idx, lambda i, j: jaccard(masks_l[i], masks_l[j])[0])
        np.fill_diagonal(jac, 1.0)

    l2_init: list[float | None] = []
    cos_init: list[float | None] = []
    for i, init in enumerate(inits_l):
        if init is None:
            l2_init.append(None)
            cos_init.append(None)
            continue
        theta0 = _init_vector(init, names, shapes, i)
        l2_init.append(l2(thetas[i], theta0))
        cos_init.append(cosine(thetas[i], theta0))

    if n <= MAX_SUBSET_MODELS:
        subsets = [s for k in range(2, n + 1) for s in itertools.combinations(idx, k)]
    else:
        subsets = [tuple(idx)]
    ensembles = {s: ensemble_accuracy([probs[i] for i in s], y) for s in subsets}

    return Comparison(
        labels=labels,
        l2=l2_mat,
        cosine=cos_mat,
        disagreement=dis,
        kl=kl,
        sym_kl=sym,
        accuracy=[accuracy(p, y) for p in probs],
        jaccard=jac,
        l2_to_init=l2_init,
        cosine_to_init=cos_init,
        mds=mds_2d(l2_mat),
        ensembles=ensembles,
    )
