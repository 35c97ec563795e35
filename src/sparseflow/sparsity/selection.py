"""Which weight tensors of a model are sparsified.

Only the weight tensors of Linear and Conv layers are sparsified by default
(docs/science.md section 1: biases and normalisation parameters stay dense). Parameters keep
the names the model gives them in ``model.named_parameters()``; those names key every mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from torch import nn

SPARSIFIABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def default_weight_names(model: nn.Module) -> list[str]:
    """Names of the weight tensors of every Linear / Conv{1,2,3}d module, in model order.

    A weight shared by several modules (tied weights) is listed once, under the first
    name ``model.named_parameters()`` gives it.
    """
    param_names = {id(p): n for n, p in model.named_parameters()}
    names: list[str] = []
    seen: set[int] = set()
    for _, module in model.named_modules():
        if isinstance(module, SPARSIFIABLE_TYPES):
            w = module.weight
            if isinstance(w, nn.Parameter) and id(w) in param_names and id(w) not in seen:
                seen.add(id(w))
                names.append(param_names[id(w)])
    return names


def _matches(name: str, pattern: str) -> bool:
    """A pattern names a parameter (``fc1.weight``) or its module (``fc1`` -> ``fc1.weight``)."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".weight")


def _select(names: Iterable[str], patterns: Iterable[str], what: str, available: str) -> set[str]:
    names = list(names)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if _matches(n, pattern)}
        if not hits:
            raise ValueError(f"{what} pattern {pattern!r} matches no parameter; {available}")
        chosen |= hits
    return chosen


def select_weights(
    model: nn.Module,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    dense_first: bool = False,
    dense_last: bool = False,
) -> dict[str, nn.Parameter]:
    """The parameters to sparsify, ``{name: parameter}`` in ``model.named_parameters()`` order.

    selected = (include or all Linear/Conv weights) - exclude - {first if dense_first}
    - {last if dense_last}

    ``include`` and ``exclude`` hold parameter names or fnmatch patterns
    (``"features.*.weight"``); a pattern that names a module (``"fc1"``) means its ``weight``.
    ``include`` may name any parameter of the model with at least 2 dimensions (the inits
    read dim 0 as output units and dim 1 as input units). "First" and "last" are taken
    among the selected weights, after ``include``/``exclude``.

    Raises ValueError, listing the available names, when a pattern matches nothing or when
    nothing is left to sparsify.
    """
    if isinstance(include, str) or isinstance(exclude, str):
        raise TypeError("include/exclude take a sequence of names, not a single string")
    params = dict(model.named_parameters())
    if include is None:
        candidates = default_weight_names(model)
        available = "Linear/Conv weights: " + (", ".join(candidates) or "none")
        chosen = set(candidates)
    else:
        candidates = [n for n, p in params.items() if p.dim() >= 2]
        available = "parameters with >= 2 dims: " + (", ".join(candidates) or "none")
        chosen = _select(candidates, include, "include", available)
    chosen -= _select(candidates, exclude, "exclude", available)
    ordered = [n for n in params if n in chosen]
    if dense_first and ordered:
        ordered = ordered[1:]
    if dense_last and ordered:
        ordered = ordered[:-1]
    if not ordered:
        raise ValueError(f"no weight left to sparsify; {available}")
    return {n: params[n] for n in ordered}
