"""Gradient flow: norms, EGF, Hessian spectra restricted to active weights, signal propagation.

Pure functions of (model, masks, batch); nothing here knows about the training loop.
"""

from sparseflow.flow.hessian import HessianReport, hessian_eigenvalues, hessian_report
from sparseflow.flow.hvp import hvp_fn
from sparseflow.flow.norms import dense_gradients, gradient_flow, norms_from_gradients
from sparseflow.flow.signal import heterogeneous_masks, output_std, signal_propagation

__all__ = [
    "HessianReport", "dense_gradients", "gradient_flow", "hessian_eigenvalues", "hessian_report",
    "heterogeneous_masks", "hvp_fn", "norms_from_gradients", "output_std", "signal_propagation",
]
