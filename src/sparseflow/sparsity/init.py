"""Initialisations of masked weights (docs/science.md section 2).

- dense: keep the model's own init, then mask.
- Liu et al. (2019): W_l <- W_l / sqrt(d_l), i.e. the dense init's variance divided by the
  layer density d_l, then masked.
- sparsity-aware (Evci et al. 2022): every active weight gets its own variance from the
  fan of its unit under the mask, Var = gain2 / max(1, f).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .masks import MaskSet

MODES = ("fan_in", "fan_out", "fan_avg")
SAMPLERS = ("normal", "uniform")
METHODS = ("dense", "liu", "sparse")


def liu_scale_(params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """W_l <- W_l * M_l / sqrt(d_l), d_l = |M_l|_0 / numel(M_l), for every masked layer.

    Applied to a dense init of variance v this gives active weights of variance v / d_l.
    A layer with d_l = 0 is just zeroed.
    """
    with torch.no_grad():
        for name, w in params.items():
            m = masks[name].to(device=w.device)
            d = int(m.sum()) / m.numel()
            scale = 1.0 / math.sqrt(d) if d > 0 else 0.0
            w.mul_(m.to(w.dtype) * scale)


def unit_fans(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Active fan-in per output unit and fan-out per input unit of a mask (out, in, *k).

    f_in[j]  = sum_{i, kernel positions} M[j, i, ...]   (shape (out,))
    f_out[i] = sum_{j, kernel positions} M[j, i, ...]   (shape (in,))
    """
    if mask.dim() < 2:
        raise ValueError(f"fans need a weight of >= 2 dims (out, in, ...), got {tuple(mask.shape)}")
    m2 = mask.to(torch.float64)
    if m2.dim() > 2:
        m2 = m2.sum(dim=tuple(range(2, m2.dim())))
    return m2.sum(dim=1), m2.sum(dim=0)


def sparse_variance(mask: torch.Tensor, mode: str = "fan_in", gain2: float = 2.0) -> torch.Tensor:
    """Per-entry variance gain2 / max(1, f) of the sparsity-aware init (shape of ``mask``).

    f = f_in[j] (fan_in), f_out[i] (fan_out) or (f_in[j] + f_out[i]) / 2 (fan_avg) for
    the entry joining input unit i to output unit j (see ``unit_fans``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    f_in, f_out = unit_fans(mask)
    extra = (1,) * (mask.dim() - 2)
    f_in = f_in.view(-1, 1, *extra)
    f_out = f_out.view(1, -1, *extra)
    if mode == "fan_in":
        fan = f_in.expand(mask.shape)
    elif mode == "fan_out":
        fan = f_out.expand(mask.shape)
    else:
        fan = (f_in + f_out) / 2
    return gain2 / fan.clamp(min=1.0)


def sparse_init_(
    weight: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: str = "fan_in",
    distribution: str = "normal",
    gain2: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sparsity-aware init in place: W = Z * sqrt(var) * M, var = gain2 / max(1, f).

    normal: Z ~ N(0, 1), so W ~ N(0, var) (var is the VARIANCE, std = sqrt(var));
    uniform: W ~ U(-sqrt(3 var), sqrt(3 var)), which has variance var.
    f per entry as in ``sparse_variance``; masked entries are 0, and so is every weight of
    a unit with no active input. Defaults: fan_in, normal, gain2 = 2 (He, ReLU).
    Returns ``weight``.
    """
    if distribution not in SAMPLERS:
        raise ValueError(f"unknown distribution {distribution!r}; valid: {', '.join(SAMPLERS)}")
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
    mask = mask.to(device=weight.device, dtype=torch.bool)
    std = sparse_variance(mask, mode, gain2).sqrt()
    device = generator.device if generator is not None else weight.device
    if distribution == "normal":
        z = torch.randn(weight.shape, generator=generator, device=device, dtype=torch.float64)
    else:
        u = torch.rand(weight.shape, generator=generator, device=device, dtype=torch.float64)
        z = (2.0 * u - 1.0) * math.sqrt(3.0)
    values = z.to(weight.device) * std.to(weight.device) * mask
    with torch.no_grad():
        weight.copy_(values)
    return weight


def initialize_(masks: MaskSet, method: str = "sparse", **opts: object) -> MaskSet:
    """Initialise the masked weights of ``masks`` in place; returns ``masks``.

    "dense":  keep the current (dense) init, W <- W * M.
    "liu":    W <- W * M / sqrt(d_l) (``liu_scale_``).
    "sparse": ``sparse_init_`` per layer with ``opts`` (mode, distribution, gain2, generator).
    """
    if method not in METHODS:
        raise ValueError(f"unknown init method {method!r}; valid: {', '.join(METHODS)}")
    if method != "sparse" and opts:
        raise ValueError(f"init {method!r} takes no options, got {sorted(opts)}")
    if method == "dense":
        masks.apply_()
    elif method == "liu":
        liu_scale_(masks.params, masks.masks)
    else:
        for name, w in masks.params.items():
            sparse_init_(w, masks[name], **opts)  # type: ignore[arg-type]
    return masks
