"""The one check that masks fit the weights they mask: names and shapes (one-line errors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def check_masks(
    masks: Mapping[str, torch.Tensor] | Any,  # or a MaskSet (mapping-like)
    params: Mapping[str, torch.Tensor],
    what: str,
    *,
    subset: bool = False,
    against: str = "parameter",
) -> dict[str, torch.Tensor]:
    """Check that ``masks`` fit ``params``; return them as bool tensors on the params' devices.

    ``masks``: ``{name: tensor}`` or a ``MaskSet``. The names must equal those of ``params``
    (``subset=True``: be among them), every mask must be a tensor of its parameter's shape;
    a non-bool mask is read as ``mask != 0``. Returns ``{name: detached bool mask}`` in the
    order of ``params``. Raises a one-line ValueError that starts with ``what`` and names the
    layer (and both shapes); ``against`` is the word for the tensors of ``params`` in it.
    """
    names = list(masks)
    given = set(names)
    if subset:
        for name in names:
            if name not in params:
                raise ValueError(f"{what}: mask {name!r} names no {against}")
    else:
        missing = [n for n in params if n not in given]
        extra = [n for n in names if n not in params]
        if missing or extra:
            raise ValueError(
                f"{what}: mask names do not match the {against} names: missing {missing}, "
                f"extra {extra}"
            )
    out: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        if name not in given:
            continue
        m = masks[name]
        if not isinstance(m, torch.Tensor):
            raise ValueError(f"{what}: mask for {name!r} is not a tensor but {type(m).__name__}")
        if m.shape != p.shape:
            raise ValueError(
                f"{what}: mask for {name!r} has shape {tuple(m.shape)} but the {against} has "
                f"shape {tuple(p.shape)}"
            )
        out[name] = m.detach().to(device=p.device, dtype=torch.bool)
    return out


def check_names(names: Any, params: Mapping[str, torch.Tensor], what: str) -> None:
    """One-line ValueError naming ``what`` unless ``names`` are exactly the keys of ``params``."""
    missing = [n for n in params if n not in names]
    extra = [n for n in names if n not in params]
    if missing or extra:
        raise ValueError(f"{what} do not match the parameters: missing {missing}, extra {extra}")
