"""The public factories of the training-loop methods: one call attaches a method to a model
and its optimiser, with every option in the signature.

Each factory is its method class under a lower-case name (:func:`factory_of`): the class's own
signature (``inspect.signature``, ``help()``, and for type checkers through ``ParamSpec``), its
parameter documentation, and errors named after the call the user made
(``rigl(): drop_fraction: 1.5 is out of range [0, 1]``,
:class:`~sparseflow.methods.base.ArgumentError`). ``snip``, ``grasp`` and ``synflow`` are in
:mod:`sparseflow.methods.at_init`; :func:`sparseflow.methods.registry.sparsify` picks one by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sparseflow.methods.acdc import ACDC
from sparseflow.methods.base import Sparsifier
from sparseflow.methods.calls import named_call
from sparseflow.methods.dynamic import SET, RigL, RigLInverted
from sparseflow.methods.granet import GraNet
from sparseflow.methods.mest import MEST
from sparseflow.methods.pruning import GradualPruning, OneShotPruning
from sparseflow.methods.snfs import SNFS
from sparseflow.methods.srigl import SRigL
from sparseflow.methods.ste import SRSTE, STE
from sparseflow.methods.topkast import TopKAST

P = ParamSpec("P")
S = TypeVar("S", bound=Sparsifier)

_RETURNS = """
Returns
-------
{cls}
    Call its ``step()`` after every ``optimizer.step()``.
"""


def factory_of(cls: Callable[P, S], name: str, summary: str) -> Callable[P, S]:
    """The public factory ``name(model, optimizer, **options)`` of the method class ``cls``.

    Calling it is calling ``cls`` with the same arguments; its signature is the class's, its
    docstring ``summary`` followed by the class's parameter documentation, and a bad argument
    raises a one-line ``ValueError`` that starts ``name():`` (an unknown or missing keyword: a
    ``TypeError`` that starts ``name()``).
    """

    signature = inspect.signature(cls)

    def factory(*args: P.args, **kwargs: P.kwargs) -> S:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:  # named after this call, not the class's __init__
            raise TypeError(f"{name}() {e}") from None
        with named_call(f"{name}()"):
            return cls(*args, **kwargs)

    doc = inspect.getdoc(cls) or ""
    params = doc[doc.index("Parameters\n"):] if "Parameters\n" in doc else ""
    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = (f"{summary}\n\n{params.rstrip()}\n"
                       + _RETURNS.format(cls=cls.__name__))  # type: ignore[attr-defined]
    factory.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=cls.__name__)  # type: ignore[attr-defined]
    return factory


static = factory_of(
    Sparsifier, "static",
    "Static sparse training: a mask fixed before training (:class:`Sparsifier`).")
set_training = factory_of(
    SET, "set_training",
    "SET (Mocanu et al. 2018): drop the smallest |w|, grow at random (:class:`SET`).")
rigl = factory_of(
    RigL, "rigl",
    "RigL (Evci et al. 2020): drop the smallest |w|, grow the largest |dL/dW| (:class:`RigL`).")
rigl_inverted = factory_of(
    RigLInverted, "rigl_inverted",
    "RigL inverted, the control of Evci et al. 2022: grow the *smallest* |dL/dW| "
    "(:class:`RigLInverted`).")
gradual = factory_of(
    GradualPruning, "gradual",
    "Gradual magnitude pruning (Zhu & Gupta 2018; :class:`GradualPruning`).")
oneshot = factory_of(
    OneShotPruning, "oneshot",
    "One-shot magnitude pruning: train dense, prune once at ``t_prune``, fine-tune "
    "(:class:`OneShotPruning`).")
srigl = factory_of(
    SRigL, "srigl",
    "SRigL (Lasby et al. 2023): RigL under a constant fan-in per unit, with neuron ablation "
    "(:class:`SRigL`).")
granet = factory_of(
    GraNet, "granet",
    "GraNet (Liu et al. 2021): gradual magnitude pruning with zero-cost neuroregeneration "
    "(:class:`GraNet`).")
acdc = factory_of(
    ACDC, "acdc",
    "AC/DC (Peste et al. 2021): dense warm-up, alternating sparse and dense phases, a final "
    "sparse phase (:class:`ACDC`).")
ste = factory_of(
    STE, "ste",
    "STE: magnitude masks of dense weights recomputed every ``update_every`` steps, trained "
    "with the straight-through gradient (:class:`STE`).")
sr_ste = factory_of(
    SRSTE, "sr_ste",
    "SR-STE (Zhou et al. 2021): STE with the masked weights decayed by lambda_W (1 - M) W "
    "(:class:`SRSTE`).")
topkast = factory_of(
    TopKAST, "topkast",
    "Top-KAST (Jayakumar et al. 2020): top-k forward set, larger top-k backward set, "
    "exploration penalty (:class:`TopKAST`).")
mest = factory_of(
    MEST, "mest",
    "MEST+EM (Yuan et al. 2021): drop the smallest |w| + lambda |dL/dW|, grow at random, with "
    "a decaying mutation ratio (:class:`MEST`).")
snfs = factory_of(
    SNFS, "snfs",
    "Sparse momentum (SNFS; Dettmers & Zettlemoyer 2019): prune by magnitude, redistribute "
    "across layers by mean momentum, grow the largest momentum (:class:`SNFS`).")
