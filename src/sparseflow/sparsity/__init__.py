"""Layer 1: the one mask abstraction (masks, distributions, inits, optimiser-state reset).

Imports only torch, numpy and the standard library.
"""

from .checks import check_masks
from .counts import floor_count, kept_count, round_half_even, round_half_up, snap, step_at
from .csr import CSRPattern, sparse_linear
from .distributions import DISTRIBUTIONS, layer_counts, layer_densities, raw_density
from .execution import EXECUTIONS, CSRLinear, SparseExecution, sparse_pays
from .init import initialize_, liu_scale_, sparse_init_, sparse_variance, unit_fans
from .masks import MaskSet
from .optim_state import GRADS_ONLY_EXACT, INITIAL_STATE, grads_only_is_exact, reset_optimizer_state
from .pattern_updates import drop_and_grow, pattern_counts, schedule_pattern
from .patterns import (
    Pattern,
    achievable_count,
    parse_pattern,
    pattern_topk,
    pattern_violations,
    random_pattern_mask,
)
from .selection import SPARSIFIABLE_TYPES, default_weight_names, select_weights
from .topk import kth_largest, topk_indices, topk_mask

__all__ = [
    "CSRLinear",
    "CSRPattern",
    "EXECUTIONS",
    "SparseExecution",
    "sparse_linear",
    "sparse_pays",
    "GRADS_ONLY_EXACT",
    "grads_only_is_exact",
    "DISTRIBUTIONS",
    "INITIAL_STATE",
    "SPARSIFIABLE_TYPES",
    "MaskSet",
    "Pattern",
    "achievable_count",
    "drop_and_grow",
    "parse_pattern",
    "pattern_counts",
    "pattern_topk",
    "pattern_violations",
    "random_pattern_mask",
    "schedule_pattern",
    "check_masks",
    "default_weight_names",
    "floor_count",
    "initialize_",
    "kept_count",
    "layer_counts",
    "layer_densities",
    "liu_scale_",
    "raw_density",
    "reset_optimizer_state",
    "round_half_even",
    "round_half_up",
    "select_weights",
    "snap",
    "sparse_init_",
    "sparse_variance",
    "step_at",
    "kth_largest",
    "topk_indices",
    "topk_mask",
    "unit_fans",
]
