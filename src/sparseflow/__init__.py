"""sparseflow: train sparse neural networks and see why they train well or badly.

From your own training loop::

    import sparseflow
    sparsifier = sparseflow.rigl(model, optimizer, sparsity=0.9, distribution="erk", t_end=5000)
    ...  # loss.backward(); optimizer.step(); sparsifier.step()

From the command line: ``sparseflow run --help``.
"""

from sparseflow.errors import UserError
from sparseflow.methods import (
    SET,
    GradualPruning,
    OneShotPruning,
    RigL,
    RigLInverted,
    Sparsifier,
    gradual,
    make_grad_fn,
    rigl,
    set_training,
    sparsify,
    static,
)

__version__ = "0.1.0"

__all__ = [
    "SET", "GradualPruning", "OneShotPruning", "RigL", "RigLInverted", "Sparsifier",
    "UserError", "gradual", "make_grad_fn", "rigl", "set_training", "sparsify", "static",
]
