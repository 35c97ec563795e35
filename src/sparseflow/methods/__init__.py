"""Sparse-training methods: each says when the topology changes and which scores drop and grow.

Training-loop methods are :class:`Sparsifier` subclasses (one call of ``step()`` per optimiser
step). The factories (``static``, ``set_training``, ``rigl``, ``rigl_inverted``, ``gradual``,
``oneshot`` in :mod:`~sparseflow.methods.api`; ``snip``, ``grasp``, ``synflow`` in
:mod:`~sparseflow.methods.at_init`) attach one to a model and its optimiser with every option
in their signatures; :func:`sparsify` picks one by its registered name
(:mod:`~sparseflow.methods.registry`). ``dense``, ``small_dense`` and ``lottery`` runs are set up
by the training layer from other runs (``sparseflow.training``).

Errors: a bad argument raises a one-line ``ValueError`` that starts with the call the user
made, e.g. ``rigl(): drop_fraction: 1.5 is out of range [0, 1]`` (:class:`ArgumentError`).
"""

from sparseflow.methods.acdc import ACDC
from sparseflow.methods.api import (
    acdc,
    gradual,
    granet,
    mest,
    oneshot,
    rigl,
    rigl_inverted,
    set_training,
    snfs,
    sr_ste,
    srigl,
    static,
    ste,
    topkast,
)
from sparseflow.methods.at_init import grasp, pruned_at_init, snip, synflow
from sparseflow.methods.base import Sparsifier, keep_top, make_grad_fn
from sparseflow.methods.calls import ArgumentError
from sparseflow.methods.dynamic import SET, RigL, RigLInverted
from sparseflow.methods.granet import GraNet
from sparseflow.methods.mest import MEST
from sparseflow.methods.pruning import (
    GradualPruning,
    OneShotPruning,
    magnitude_masks,
    zhu_gupta_sparsity,
)
from sparseflow.methods.registry import METHODS, method_names, options_of, register, sparsify
from sparseflow.methods.snfs import SNFS
from sparseflow.methods.srigl import SRigL
from sparseflow.methods.ste import SRSTE, STE
from sparseflow.methods.topkast import TopKAST

Static = Sparsifier

__all__ = [
    "ACDC", "GraNet", "acdc", "granet",
    "METHODS", "SET", "ArgumentError", "GradualPruning", "OneShotPruning", "RigL",
    "RigLInverted", "Sparsifier", "Static", "gradual", "grasp", "keep_top", "magnitude_masks",
    "make_grad_fn", "method_names", "oneshot", "options_of", "pruned_at_init", "register",
    "rigl", "rigl_inverted", "set_training", "SRigL", "srigl", "snip", "sparsify", "static",
    "synflow",
    "zhu_gupta_sparsity",
    "SRSTE", "STE", "TopKAST", "sr_ste", "ste", "topkast",
    "MEST", "SNFS", "mest", "snfs",
]
