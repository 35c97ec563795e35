"""Same Capacity Sparse vs Dense Comparison (Tessera et al. 2021; docs/science.md section 5).

The sparse network of a pair is the wide MLP (``arch.width`` = W_s) trained statically with
``distribution=scsdc``: each layer keeps exactly as many weights as the narrow dense MLP of
width ``sparse.dense_width`` (W_d) has in the same layer (``models.sizing.scsdc_layer_counts``).
With ``init=matched`` its active weights and biases are drawn from the dense network's own
per-layer distribution, PyTorch's default U(-1/sqrt(f), 1/sqrt(f)) with f the *dense* layer's
fan-in (``in_features`` for the first layer, W_d after), so both networks of a pair start from
the same per-layer distribution.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config
from sparseflow.errors import ConfigError
from sparseflow.models.sizing import scsdc_layer_counts
from sparseflow.sparsity import MaskSet, select_weights


def scsdc_masks(cfg: Config, model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random masks with the SC-SDC per-layer counts; with ``init=matched`` the active weights
    and biases are re-drawn from the dense partner's per-layer distribution."""
    if cfg.model != "mlp" or cfg.arch.depth is None or cfg.arch.width is None:
        raise ConfigError("distribution=scsdc needs model=mlp with arch.depth and arch.width")
    w_d = cfg.sparse.dense_width
    if w_d is None or w_d > cfg.arch.width:
        raise ConfigError("distribution=scsdc needs sparse.dense_width <= arch.width")
    params = select_weights(model)
    in_features = math.prod(input_shape)
    counts = scsdc_layer_counts(cfg.arch.depth, cfg.arch.width, w_d, in_features, num_classes)
    if len(counts) != len(params):
        raise ConfigError(f"distribution=scsdc: the model has {len(params)} weight layers, "
                          f"expected {len(counts)}")
    masks = MaskSet.random(params, dict(zip(params, counts, strict=True)), generator)
    if cfg.init == "matched":
        modules = dict(model.named_modules())
        with torch.no_grad():
            for i, (name, w) in enumerate(params.items()):
                fan_in = in_features if i == 0 else w_d
                bound = 1.0 / math.sqrt(fan_in)
                w.copy_(_uniform(w.shape, bound, generator) * masks[name])
                bias = getattr(modules[name.rsplit(".", 1)[0]], "bias", None)
                if bias is not None:
                    bias.copy_(_uniform(bias.shape, bound, generator))
    return masks.masks


def _uniform(shape: Any, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
