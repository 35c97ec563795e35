"""sparseflow: train sparse neural networks and see why they train well or badly.

From your own training loop::

    import sparseflow
    sparsifier = sparseflow.rigl(model, optimizer, sparsity=0.9, distribution="erk", t_end=5000)
    ...  # loss.backward(); optimizer.step(); sparsifier.step()

Every factory (``static``, ``set_training``, ``rigl``, ``rigl_inverted``, ``gradual``,
``oneshot``, ``snip``, ``grasp``, ``synflow``) lists its options in its signature;
``sparsify(method, model, optimizer, **options)`` picks one by name.

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
    grasp,
    make_grad_fn,
    oneshot,
    rigl,
    rigl_inverted,
    set_training,
    snip,
    sparsify,
    static,
    synflow,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``sparseflow.track`` (imported on first use: it brings the run store and the config)."""
    if name == "track":
        from sparseflow.training.track import track

        return track
    raise AttributeError(f"module 'sparseflow' has no attribute {name!r}")

__all__ = [
    "SET", "GradualPruning", "OneShotPruning", "RigL", "RigLInverted", "Sparsifier",
    "UserError", "gradual", "grasp", "make_grad_fn", "oneshot", "rigl", "rigl_inverted",
    "set_training", "snip", "sparsify", "static", "synflow", "track",
]
