"""The public calls of the methods: one-line errors named after the call the user made, and
the shared parameter documentation of their numpy-style docstrings."""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

Fn = TypeVar("Fn", bound=Callable[..., Any])


class ArgumentError(ValueError):
    """A bad argument of a public call: ``"<call>: <detail>"`` on one line.

    ``call`` is the call the user made (``rigl()``, ``RigL()``, ``sparsify('rigl')``) and
    ``detail`` names the argument at fault (``drop_fraction: 1.5 is out of range [0, 1]``).
    """

    def __init__(self, call: str, detail: str) -> None:
        self.call, self.detail = call, " ".join(str(detail).split())
        super().__init__(f"{call}: {self.detail}")


@contextmanager
def named_call(call: str) -> Iterator[None]:
    """Report every ``ValueError`` raised inside as an :class:`ArgumentError` of ``call``.

    The one mechanism behind the call names in error messages: each class ``__init__``
    (:func:`named_errors`) and each factory runs under its own name, and an outer name
    replaces an inner one, so ``rigl(...)``'s errors read ``rigl(): ...``, not
    ``RigL(): ...``.
    """
    try:
        yield
    except ArgumentError as e:
        raise ArgumentError(call, e.detail) from None
    except ValueError as e:
        raise ArgumentError(call, str(e)) from None


def named_errors(init: Fn) -> Fn:
    """Decorate a class's ``__init__`` to run under :func:`named_call` ``("ClassName()")``."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        with named_call(f"{type(self).__name__}()"):
            init(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


TARGET_OPTIONS_DOC = """\
sparsity : float, default 0.9
    Target sparsity over the sparsified layers, in [0, 1).
distribution : {"erk", "er", "uniform"}, default "erk"
    How the sparsity is split over the layers (docs/science.md section 1).
"""

COMMON_OPTIONS_DOC = """\
masks : MaskSet or dict of str to Tensor, optional
    Start from these masks (``{name: bool tensor}``, keyed by the names of the sparsified
    weights) instead of a random one with the distribution's per-layer counts.
include : sequence of str, optional
    Patterns of the weights to sparsify (default: every Linear/Conv weight;
    ``sparsity.select_weights``).
exclude : sequence of str, default ()
    Patterns of weights to keep dense.
dense_first, dense_last : bool, default False
    Keep the first / last sparsifiable layer dense.
init : {"dense", "liu", "sparse", "keep"}, default "dense"
    ``dense`` masks the model's own init, ``liu`` divides its variance by the layer
    density, ``sparse`` draws per-unit fan-in variances (docs/science.md section 2), ``keep``
    only masks the weights as they are.
init_opts : dict, optional
    Options of the ``sparse`` init: ``mode``, ``distribution``, ``gain2``.
masking : {"auto", "grads", "weights", "both"}, default "auto"
    How masked weights are kept at zero around ``optimizer.step()`` (see
    :class:`~sparseflow.methods.base.Sparsifier`).
execution : {"masked", "sparse", "auto"}, default "masked"
    ``sparse``: sparsified ``nn.Linear`` weights are held as their non-zero values and train
    on CSR kernels (memory and time scale with the non-zeros); ``auto``: only the layers
    where that is predicted faster; ``masked``: dense weights with zeros. Same training up
    to float32 rounding (docs/science.md section 16).
pattern : str or Pattern, default "unstructured"
    Which masks are allowed: ``unstructured``, ``N:M`` (e.g. ``"2:4"``, fixes sparsity at
    1 - N/M), ``block:BxB``, ``unit`` or ``fan_in`` (``sparsity.patterns``); initial masks,
    updates and pruning keep it.
seed : int, default 0
    Seeds the method's own generator (random masks, SET growth, sparse init).
"""

_DOC_FRAGMENTS = {"%(target)s": TARGET_OPTIONS_DOC, "%(common)s": COMMON_OPTIONS_DOC}


def fill_doc(obj: Fn | None = None, /, **fragments: str) -> Any:
    """Fill the placeholders of ``obj``'s numpy-style docstring with shared fragments.

    ``%(target)s`` is :data:`TARGET_OPTIONS_DOC` (sparsity, distribution), ``%(common)s``
    :data:`COMMON_OPTIONS_DOC` (masks ... seed), ``%(name)s`` the keyword ``name`` of
    ``fill_doc(name=text)`` (then used as ``@fill_doc(name=text)``). Each placeholder stands
    on its own line, indented like the parameter names around it.
    """
    if obj is None:
        return functools.partial(fill_doc, **fragments)
    table = {**_DOC_FRAGMENTS, **{f"%({k})s": v for k, v in fragments.items()}}
    doc = obj.__doc__ or ""
    while True:  # a fragment may hold placeholders of its own
        lines = []
        for line in doc.split("\n"):
            fragment = table.get(line.strip())
            if fragment is None:
                lines.append(line)
            else:
                indent = line[: len(line) - len(line.lstrip())]
                lines.append(textwrap.indent(fragment, indent).rstrip("\n"))
        if "\n".join(lines) == doc:
            break
        doc = "\n".join(lines)
    obj.__doc__ = doc
    return obj
