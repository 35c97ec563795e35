"""Loss landscape: linear paths, Bezier / polygonal-chain curves, comparisons of solutions.

Pure functions over ``torch.func.functional_call``: any ``nn.Module`` works, no hand-written
curve copies of layers.
"""

from sparseflow.landscape.compare import Comparison, compare_models
from sparseflow.landscape.curve_fit import CurveResult, fit_curve
from sparseflow.landscape.paths import PathResult, combine_masks, linear_path

__all__ = [
    "Comparison", "CurveResult", "PathResult", "combine_masks", "compare_models",
    "fit_curve", "linear_path",
]
