"""sparseflow: train sparse neural networks and see why they train well or badly.

From your own training loop::

    import sparseflow
    sparsifier = sparseflow.rigl(model, optimizer, sparsity=0.9, distribution="erk", t_end=5000)
    ...  # loss.backward(); optimizer.step(); sparsifier.step()

Every factory (``static``, ``set_training``, ``rigl``, ``rigl_inverted``, ``gradual``,
``oneshot``, ``snip``, ``grasp``, ``synflow``, and the methods after RigL: ``srigl``, ``ste``,
``sr_ste``, ``topkast``, ``granet``, ``mest``, ``snfs``, ``acdc``) lists its options in its
signature, ``pattern=`` among them (``"2:4"``, ``"block:4x4"``, ``"unit"``, ``"fan_in"``);
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
    acdc,
    gradual,
    granet,
    grasp,
    make_grad_fn,
    mest,
    oneshot,
    rigl,
    rigl_inverted,
    set_training,
    snfs,
    snip,
    sparsify,
    sr_ste,
    srigl,
    static,
    ste,
    synflow,
    topkast,
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
    "acdc", "granet", "mest", "snfs", "sr_ste", "srigl", "ste", "topkast",
]
