"""The loss restricted to the active weights and its Hessian-vector products.

docs/science.md sections 4 and 11.

Restricted space
----------------
The coordinates are the *active* weights: the entries with mask True of every masked weight,
every entry of a Linear/Conv weight without a mask (``masks=None`` means dense), and, with
``include_biases=True``, the biases of those layers (dense). Let P be the 0/1 diagonal
projection onto them (P = diag(M) on full-shape tensors). The operator studied is

    A = P H P,        H = d^2 L / dtheta^2,   L(theta) = (1/N) sum_i loss(f(x_i; theta), y_i),

evaluated at theta = W * M (masked entries are read as zero, which they are under the
MaskSet invariant, so values stored at masked positions never matter). Inside this module
vectors of the restricted space are *packed*: the n_active active entries, concatenated in
model order, so that the Lanczos basis lives in R^{n_active} and the zero eigenvalues of A on
the inactive coordinates can never appear as Ritz values. ``hvp_fn`` exposes the same
operator on dicts of full-shape tensors (zero outside the active set): v -> M * H (M * v).

Hessian-vector products use double backward, Hv = d/dtheta (g(theta) . v) with
g = dL/dtheta built with ``create_graph=True``; a dense Hessian is never formed. With one
batch the gradient graph is built once and reused by every product; with ``batch_size`` it
is rebuilt per mini-batch and per product (memory of one mini-batch), and the loss is
weighted by the batch fraction, L = sum_c (n_c / N) L_c, which equals the full-batch mean
for a mean-reduced loss (not with BatchNorm in train mode, whose batch statistics depend
on the chunking).

The model is evaluated in its current mode (train/eval) through
``torch.func.functional_call`` on copies of its parameters and buffers: BatchNorm running
statistics, ``.grad`` fields and ``requires_grad`` flags of the model are untouched, and the
global RNG is not advanced (random layers such as dropout run under a forked RNG with a
fixed seed, so the operator is the same on every product and stays symmetric).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from sparseflow.sparsity import check_masks, default_weight_names

__all__ = ["hvp_fn"]

LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# The loss as a function of the restricted parameters
# ---------------------------------------------------------------------------------------------


class Objective:
    """L(theta) at theta = W * M, its masked gradient and its masked Hessian-vector products."""

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, Tensor],
        masks: Mapping[str, Tensor | None],
        x: Tensor,
        y: Tensor,
        loss_fn: LossFn,
        batch_size: int | None,
        seed: int = 0,
    ) -> None:
        named = dict(model.named_parameters())
        unknown = [n for n in params if n not in named]
        if unknown:
            raise ValueError(f"not parameters of the model: {unknown}")
        given = {n: m for n, m in masks.items() if m is not None}
        checked = check_masks(given, params, "masks", subset=True, against="entry of params")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.model = model
        self.loss_fn = loss_fn
        self.names = list(params)
        self.masks: dict[str, Tensor | None] = {}
        self.point: dict[str, Tensor] = {}
        for n, p in params.items():
            m = self.masks[n] = checked.get(n)
            t = p.detach().clone() if m is None else p.detach() * m
            self.point[n] = t.requires_grad_(True)
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.point}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        n_ex = x.shape[0]
        if batch_size is None or batch_size >= n_ex:
            self.chunks = [(x, y, 1.0)]
        else:
            self.chunks = [
                (xc, yc, xc.shape[0] / n_ex)
                for xc, yc in zip(x.split(batch_size), y.split(batch_size), strict=True)
            ]
        self.seed = int(seed)
        self.device = x.device
        self._graph: dict[str, Tensor] | None = None
        self._grad: dict[str, Tensor] | None = None

    @property
    def cached(self) -> bool:
        return len(self.chunks) == 1

    def _mask(self, name: str, t: Tensor) -> Tensor:
        m = self.masks[name]
        return t if m is None else t * m

    def _loss(self, i: int) -> Tensor:
        xc, yc, weight = self.chunks[i]
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.default_generator.manual_seed(self.seed + i)
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(self.seed + i)
            out = functional_call(self.model, (self.point, self.fixed, self.buffers), (xc,))
        loss = self.loss_fn(out, yc)
        return loss * weight if weight != 1.0 else loss

    def _grads(self, i: int, create_graph: bool) -> dict[str, Tensor]:
        with torch.enable_grad():
            loss = self._loss(i)
            gs = torch.autograd.grad(
                loss,
                [self.point[n] for n in self.names],
                create_graph=create_graph,
                allow_unused=True,
            )
        return {
            n: torch.zeros_like(self.point[n]) if g is None else g
            for n, g in zip(self.names, gs, strict=True)
        }

    def _graph_grads(self, i: int) -> dict[str, Tensor]:
        if not self.cached:
            return self._grads(i, create_graph=True)
        if self._graph is None:
            self._graph = self._grads(0, create_graph=True)
        return self._graph

    def gradient(self) -> dict[str, Tensor]:
        """g = M * dL/dtheta, full-shape (zero outside the active set)."""
        if self._grad is None:
            if self.cached:
                g = {n: t.detach() for n, t in self._graph_grads(0).items()}
            else:
                g = {n: torch.zeros_like(t) for n, t in self.point.items()}
                for i in range(len(self.chunks)):
                    for n, t in self._grads(i, create_graph=False).items():
                        g[n] += t
            self._grad = {n: self._mask(n, t.detach()) for n, t in g.items()}
        return self._grad

    def hvp(self, v: Mapping[str, Tensor], names: list[str] | None = None) -> dict[str, Tensor]:
        """(M H M v) on ``names`` (all by default): the block H[names, names] applied to v.

        Entries of v missing from ``v`` are zero; its values at masked positions are ignored.
        """
        names = self.names if names is None else names
        unknown = [n for n in v if n not in names]
        if unknown:
            raise ValueError(f"vector entries outside the operator's parameters: {unknown}")
        vin = {n: self._mask(n, v[n].to(self.point[n])) for n in names if n in v}
        out = {n: torch.zeros_like(self.point[n]) for n in names}
        if vin:
            inputs = [self.point[n] for n in names]
            for i in range(len(self.chunks)):
                with torch.enable_grad():
                    grads = self._graph_grads(i)
                    pairs = [(grads[n], u) for n, u in vin.items() if grads[n].requires_grad]
                    if not pairs:
                        continue
                    hv = torch.autograd.grad(
                        [g for g, _ in pairs],
                        inputs,
                        grad_outputs=[u for _, u in pairs],
                        retain_graph=self.cached,
                        allow_unused=True,
                    )
                for n, h in zip(names, hv, strict=True):
                    if h is not None:
                        out[n] += h.detach()
        return {n: self._mask(n, t) for n, t in out.items()}


def hvp_fn(
    model: nn.Module,
    params: Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int | None = None,
) -> Callable[[Mapping[str, Tensor]], dict[str, Tensor]]:
    """The masked Hessian-vector product v -> M * H (M * v) on dicts of full-shape tensors.

    ``params`` names the model parameters theta to differentiate (``{name: tensor}``; the
    values give the point, masked: theta = W * M); the other parameters and the buffers are
    held fixed at copies of the model's. ``masks`` maps some of those names to masks
    (bool, or 0/1); names without one are fully active. H = d^2 L/dtheta^2 with
    L = mean loss over (x, y); with ``batch_size`` the products are accumulated over
    mini-batches, weighted by n_c / N. Keys missing from v count as zero; the result has every
    key of ``params`` and is zero at masked positions.
    """
    obj = Objective(model, params, dict(masks or {}), x, y, loss_fn, batch_size)
    return obj.hvp


# ---------------------------------------------------------------------------------------------
# Packed restricted space
# ---------------------------------------------------------------------------------------------


class Space:
    """Active coordinates of some parameters, packed into one flat vector (model order)."""

    def __init__(self, names: list[str], point: Mapping[str, Tensor], masks: Mapping) -> None:
        self.names = names
        self.shapes = {n: point[n].shape for n in names}
        self.dtypes = {n: point[n].dtype for n in names}
        self.index: dict[str, Tensor | None] = {}
        self.sizes: list[int] = []
        for n in names:
            m = masks.get(n)
            idx = None if m is None else m.reshape(-1).nonzero().squeeze(1)
            self.index[n] = idx
            self.sizes.append(point[n].numel() if idx is None else int(idx.numel()))
        self.n = sum(self.sizes)
        first = point[names[0]]
        self.template = torch.empty(self.n, dtype=first.dtype, device=first.device)

    def pack(self, d: Mapping[str, Tensor]) -> Tensor:
        parts = []
        for n in self.names:
            flat = d[n].reshape(-1)
            idx = self.index[n]
            parts.append(flat if idx is None else flat.index_select(0, idx))
        return torch.cat([p.to(self.template.dtype) for p in parts])

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        out = {}
        for n, seg in zip(self.names, flat.split(self.sizes), strict=True):
            seg = seg.to(self.dtypes[n])
            idx = self.index[n]
            if idx is None:
                out[n] = seg.reshape(self.shapes[n])
            else:
                full = torch.zeros(math.prod(self.shapes[n]), dtype=seg.dtype, device=seg.device)
                out[n] = full.index_copy_(0, idx, seg).view(self.shapes[n])
        return out


def restricted(
    model: nn.Module, masks: Mapping[str, Tensor] | None, include_biases: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor | None], dict[str, list[str]]]:
    """(params, masks, layer groups) of the restricted space, in model order."""
    named = dict(model.named_parameters())
    mask_in = {} if masks is None else {n: masks[n] for n in masks}
    bool_masks: dict[str, Tensor | None] = dict(
        check_masks(mask_in, named, "masks", subset=True, against="parameter of the model"))
    chosen = set(default_weight_names(model)) | set(mask_in)
    weights = [n for n in named if n in chosen]
    if not weights:
        raise ValueError("the model has no sparsifiable (Linear/Conv) weight and no mask")
    ids = {id(p): n for n, p in named.items()}
    groups: dict[str, list[str]] = {w: [w] for w in weights}
    taken = set(weights)
    if include_biases:
        for w in weights:
            owner = w.rpartition(".")[0]
            try:
                module = model.get_submodule(owner)
            except AttributeError:
                continue
            bias = getattr(module, "bias", None)
            bname = ids.get(id(bias)) if isinstance(bias, nn.Parameter) else None
            if bname is not None and bname not in taken:
                groups[w].append(bname)
                taken.add(bname)
    order = [n for n in named if n in taken]
    return {n: named[n] for n in order}, {n: bool_masks.get(n) for n in order}, groups
