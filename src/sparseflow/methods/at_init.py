"""Pruning at initialisation as a method: SNIP, GraSP or SynFlow choose the mask, then it is
trained statically (the scores themselves: :mod:`sparseflow.methods.pai`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparseflow.methods.base import Sparsifier, as_pattern
from sparseflow.methods.calls import fill_doc, named_call
from sparseflow.methods.pai import PAI_METHODS
from sparseflow.sparsity import Pattern, kept_count, pattern_counts, select_weights


# --- pruning at initialisation ------------------------------------------------------------
@fill_doc
def pruned_at_init(
    method: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scope: str = "global",
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    input_shape: Sequence[int] | None = None,
    iterations: int = 100,
    sparsity: float = 0.9,
    distribution: str = "erk",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    execution: str = "masked",
    pattern: str | Pattern = "unstructured",
    seed: int = 0,
) -> Sparsifier:
    """Static training on the mask that SNIP, GraSP or SynFlow choose at initialisation.

    The generic form of :func:`snip`, :func:`grasp` and :func:`synflow` (and what the run
    config uses): ``batch`` is read by snip/grasp only, ``input_shape`` and ``iterations`` by
    synflow only.

    Parameters
    ----------
    method : {"snip", "grasp", "synflow"}
        The score (``sparseflow.methods.pai``).
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    scope : {"global", "layer"}, default "global"
        ``global`` keeps the ``K = round((1 - sparsity) * N)`` highest scores over all
        sparsified weights (halves up, ``sparsity.kept_count``), as the papers do; ``layer``
        keeps the distribution's count per layer.
    batch : tuple of (Tensor, Tensor), optional
        ``(x, y)``, the batch snip and grasp score the weights on (required for them).
    input_shape : sequence of int, optional
        One example's shape, for synflow's all-ones input (required for it).
    iterations : int, default 100
        SynFlow's pruning rounds.
    %(target)s
    include, exclude, dense_first, dense_last, init, init_opts, masking, execution, pattern,
seed
        As for :class:`Sparsifier`; ``masks`` is not an option (the method chooses them).

    Returns
    -------
    Sparsifier
        Static training on the chosen masks; its ``name`` is ``method``.
    """
    from sparseflow.methods.pai import prune_at_init

    with named_call("pruned_at_init()"):
        if method not in PAI_METHODS:
            raise ValueError(f"method: unknown {method!r}; valid: {', '.join(PAI_METHODS)}")
        if method != "synflow" and batch is None:
            raise ValueError(f"{method} scores the weights on a batch: pass batch=(x, y)")
        if method == "synflow" and input_shape is None:
            raise ValueError("synflow needs input_shape= (one example's shape, no batch "
                             "dimension)")
        params = select_weights(model, include=include, exclude=exclude,
                                dense_first=dense_first, dense_last=dense_last)
        pat = as_pattern(pattern)
        if pat.structured and scope != "layer":
            raise ValueError(f"scope: pattern {pat} needs scope='layer' (one threshold over "
                             f"all layers cannot keep it), got {scope!r}")
        if scope == "layer":
            counts: dict[str, int] | int = pattern_counts(
                {n: tuple(p.shape) for n, p in params.items()}, sparsity, distribution, pat)
        else:
            counts = kept_count(1.0 - sparsity, sum(p.numel() for p in params.values()))
        x, y = batch if batch is not None else (None, None)
        shape = tuple(input_shape) if input_shape is not None else None
        masks = prune_at_init(method, model, params, counts, x=x, y=y, input_shape=shape,
                              scope=scope, iterations=iterations, pattern=pat)
        s = Sparsifier(model, optimizer, sparsity=sparsity, distribution=distribution,
                       masks=masks, include=include, exclude=exclude, dense_first=dense_first,
                       dense_last=dense_last, init=init, init_opts=init_opts, masking=masking,
                       execution=execution, pattern=pattern, seed=seed)
    s.name = method
    return s


# --- the factories --------------------------------------------------------------------------
PAI_OPTIONS_DOC = """\
scope : {"global", "layer"}, default "global"
    ``global``: keep the round((1 - sparsity) * N) highest scores over all sparsified
    weights (halves up), as the papers do; ``layer``: the distribution's count per layer.
%(target)s
include, exclude, dense_first, dense_last, init, init_opts, masking, execution, pattern,
seed
    As for :class:`Sparsifier` (the masks are the method's).
"""


def _scored_on_a_batch(method: str, summary: str) -> Callable[..., Sparsifier]:
    """The factory of a method that scores the weights on one batch (SNIP, GraSP)."""

    def factory(
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        batch: tuple[torch.Tensor, torch.Tensor] | None = None,
        scope: str = "global",
        sparsity: float = 0.9,
        distribution: str = "erk",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        dense_first: bool = False,
        dense_last: bool = False,
        init: str = "dense",
        init_opts: Mapping[str, Any] | None = None,
        masking: str = "auto",
        execution: str = "masked",
        pattern: str | Pattern = "unstructured",
        seed: int = 0,
    ) -> Sparsifier:
        with named_call(f"{method}()"):
            return pruned_at_init(
                method, model, optimizer, scope=scope, batch=batch, sparsity=sparsity,
                distribution=distribution, include=include, exclude=exclude,
                dense_first=dense_first, dense_last=dense_last, init=init, init_opts=init_opts,
                masking=masking, execution=execution, pattern=pattern, seed=seed,
            )

    factory.__name__ = factory.__qualname__ = method
    factory.__doc__ = f"""{summary}

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    batch : tuple of (Tensor, Tensor)
        ``(x, y)``, the batch the weights are scored on (required).
    %(pai)s

    Returns
    -------
    Sparsifier
        Static training on the {method} mask.
    """
    return fill_doc(factory, pai=PAI_OPTIONS_DOC)


snip = _scored_on_a_batch(
    "snip", "SNIP (Lee et al. 2019): keep the largest |dL/dw * w| on one batch, train statically.")
grasp = _scored_on_a_batch(
    "grasp", "GraSP (Wang et al. 2020): keep the weights whose removal least reduces the "
    "gradient flow, scored on one batch (``methods.pai.grasp_scores``), train statically.")


@fill_doc(pai=PAI_OPTIONS_DOC)
def synflow(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    input_shape: Sequence[int] | None = None,
    iterations: int = 100,
    scope: str = "global",
    sparsity: float = 0.9,
    distribution: str = "erk",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
    init: str = "dense",
    init_opts: Mapping[str, Any] | None = None,
    masking: str = "auto",
    execution: str = "masked",
    pattern: str | Pattern = "unstructured",
    seed: int = 0,
) -> Sparsifier:
    """SynFlow (Tanaka et al. 2020): data-free iterative pruning by synaptic flow, then
    static training (a thin form of :func:`pruned_at_init`).

    Parameters
    ----------
    model : nn.Module
        Any module with materialised parameters.
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    input_shape : sequence of int
        One example's shape (no batch dimension), for the all-ones input (required).
    iterations : int, default 100
        Pruning rounds of the exponential schedule.
    %(pai)s

    Returns
    -------
    Sparsifier
        Static training on the SynFlow mask.
    """
    with named_call("synflow()"):
        return pruned_at_init(
            "synflow", model, optimizer, scope=scope, input_shape=input_shape,
            iterations=iterations, sparsity=sparsity, distribution=distribution,
            include=include, exclude=exclude, dense_first=dense_first, dense_last=dense_last,
            init=init, init_opts=init_opts, masking=masking, execution=execution,
            pattern=pattern, seed=seed,
        )


