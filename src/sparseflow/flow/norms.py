"""Gradient norms and Effective Gradient Flow (docs/science.md section 4).

All measures are taken on a fixed batch, with the mean cross-entropy and no regularisation term,
in the model's current mode (train mode by default in the loop) without moving BatchNorm's
running statistics and without touching any ``.grad``.

- ``grad_l{1,2}``: ||g||_p over all trainable parameters, g = dL/dW * M (masked gradient; weights
  without a mask and all biases / normalisation parameters count in full).
- ``grad_unmasked_l{1,2}``: the same without the masks (what masking changes).
- ``grad_l{1,2}/<name>``: the masked norm of each sparsified-or-sparsifiable weight.
- ``egf_l{1,2}`` (Tessera et al. 2021): EGF_p = (1/L) sum_l ||dL/dW_l * M_l||_p over the L
  Linear/Conv weight tensors (a layer without a mask has M_l = 1, so for a dense network EGF_1 =
  ||g_weights||_1 / L); with ``per_active=True`` each layer's norm is divided by its active count
  (layers with none are skipped) and reported as ``egf_l{1,2}_per_active``.

The two families above cover different parameters (``grad`` all of them, ``egf`` the weights
only), so for comparing them (claim 6 of docs/science.md section 7) each also exists over the
other family's set:

- ``grad_w_l{1,2}``: ||g||_p over the same L weight tensors as ``egf`` (masked), so that
  ``grad_w_l1 = L * egf_l1`` exactly and ``grad_w_l2 = sqrt(sum_l ||g_l * M_l||_2^2)``.
- ``egf_all_l{1,2}``: EGF over every trainable parameter tensor, ``(1/T) sum_t ||g_t * M_t||_p``
  over the T tensors that ``grad_l{1,2}`` covers (weights, biases, normalisation and learnable
  activation parameters; ``M_t = 1`` for a tensor without a mask).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.sparsity import check_masks, select_weights

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def frozen_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics, counters) after the block."""
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])


def dense_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None = None
) -> tuple[dict[str, torch.Tensor], float]:
    """({name: dL/dp} for every trainable parameter, loss) on (x, y); ``.grad`` untouched."""
    fn = loss_fn or F.cross_entropy
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    dev = named[0][1].device
    with frozen_buffers(model), torch.enable_grad():
        loss = fn(model(x.to(dev)), y.to(dev))
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    out = {n: (torch.zeros_like(p) if g is None else g.detach())
           for (n, p), g in zip(named, grads, strict=True)}
    return out, float(loss.detach())


def norms_from_gradients(
    grads: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None,
    weight_names: list[str],
    *,
    per_layer: bool = True,
    per_active: bool = False,
) -> dict[str, float]:
    """The measures of this module from precomputed dense gradients (see module docstring).

    Per-tensor norms come from ``torch._foreach_norm`` (one pass per norm, accumulated in the
    gradients' dtype by torch's reduction), combined in float64.
    """
    masks = masks or {}
    names = list(grads)
    raw = [grads[n] for n in names]
    masked = [g * masks[n] if n in masks else g for n, g in zip(names, raw, strict=True)]
    with torch.no_grad():
        norms = torch.stack([torch.stack(torch._foreach_norm(t, o)).double()
                             for t in (raw, masked) for o in (1, 2)]).tolist()
    u1, u2, m1, m2 = norms
    out: dict[str, float] = {
        "grad_l1": sum(m1), "grad_l2": sum(v * v for v in m2) ** 0.5,
        "grad_unmasked_l1": sum(u1), "grad_unmasked_l2": sum(v * v for v in u2) ** 0.5,
    }
    layer_l1, layer_l2, act_l1, act_l2 = [], [], [], []
    weights = set(weight_names)
    for i, name in enumerate(names):
        if name not in weights:
            continue
        layer_l1.append(m1[i])
        layer_l2.append(m2[i])
        if per_layer:
            out[f"grad_l1/{name}"] = m1[i]
            out[f"grad_l2/{name}"] = m2[i]
        if per_active:
            m = masks.get(name)
            active = int(m.sum()) if m is not None else raw[i].numel()
            if active:
                act_l1.append(m1[i] / active)
                act_l2.append(m2[i] / active)
    out["egf_l1"] = sum(layer_l1) / max(1, len(layer_l1))
    out["egf_l2"] = sum(layer_l2) / max(1, len(layer_l2))
    out["grad_w_l1"] = sum(layer_l1)
    out["grad_w_l2"] = sum(v * v for v in layer_l2) ** 0.5
    out["egf_all_l1"] = sum(m1) / max(1, len(m1))
    out["egf_all_l2"] = sum(m2) / max(1, len(m2))
    if per_active:
        out["egf_l1_per_active"] = sum(act_l1) / max(1, len(act_l1))
        out["egf_l2_per_active"] = sum(act_l2) / max(1, len(act_l2))
    return out


def gradient_flow(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn | None = None,
    per_layer: bool = True,
    per_active: bool = False,
) -> dict[str, float]:
    """Gradient norms, EGF and the loss on (x, y) for ``model`` under ``masks``.

    ``masks`` maps parameter names to bool tensors (a ``MaskSet.masks`` dict, or None for a dense
    model). Returns ``grad_l1``, ``grad_l2``, ``grad_unmasked_l{1,2}``, ``egf_l{1,2}``,
    ``grad_w_l{1,2}`` (weights only), ``egf_all_l{1,2}`` (every parameter tensor), per-layer
    ``grad_l{1,2}/<name>`` and ``loss``.
    """
    grads, loss = dense_gradients(model, x, y, loss_fn)
    weight_names = list(select_weights(model))
    if masks:
        masks = check_masks(masks, grads, "gradient_flow: masks", subset=True,
                            against="trainable parameter")
        weight_names += [n for n in masks if n not in weight_names]
    out = norms_from_gradients(grads, masks, weight_names, per_layer=per_layer,
                               per_active=per_active)
    out["loss"] = loss
    return out
