"""The base of every sparse-training method: a mask set kept exact under any torch optimiser.

A method says *when* the topology changes (:meth:`Sparsifier.due`) and *how* (:meth:`update`);
this base does the bookkeeping: choosing the layers, the per-layer counts of the distribution,
the initial mask and init, keeping masked weights zero through the optimiser's step hooks,
resetting optimiser state of grown or dropped positions, topology telemetry and checkpoint state.

Use from any training loop::

    sparsifier = sparseflow.rigl(model, optimizer, sparsity=0.9, t_end=10_000)
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        sparsifier.step()          # one call per step: topology updates when due

The dense gradient on a fixed batch that gradient-grown methods take (:func:`make_grad_fn`,
:data:`GradFn`) lives in ``methods/grad_fn.py`` and is re-exported here. (Kept whole past ~400
lines: :class:`Sparsifier` is one class over one state, its masks, counters, execution and
optimiser hooks, ~345 lines; the rest are the argument checks and ``keep_top`` the methods
share.)
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sparseflow.methods.calls import fill_doc, named_errors
from sparseflow.methods.grad_fn import GradFn, make_grad_fn  # noqa: F401 (re-exported)
from sparseflow.sparsity import (
    EXECUTIONS,
    MaskSet,
    Pattern,
    SparseExecution,
    achievable_count,
    check_masks,
    grads_only_is_exact,
    initialize_,
    parse_pattern,
    pattern_counts,
    pattern_violations,
    random_pattern_mask,
    reset_optimizer_state,
    select_weights,
    topk_mask,
)

INITS = ("dense", "liu", "sparse", "keep")
MASKING = ("auto", "grads", "weights", "both")


def as_pattern(pattern: str | Pattern) -> Pattern:
    """A :class:`~sparseflow.sparsity.Pattern` from its name (``2:4``, ``block:4x4``, ...)."""
    if isinstance(pattern, Pattern):
        return pattern
    try:
        return parse_pattern(pattern)
    except ValueError as e:
        raise ValueError(f"pattern: {e}") from None


def check_int(field: str, value: Any, low: int = 1, meaning: str = "") -> int:
    """``value`` as an int >= ``low`` (any integer type; not a bool or a float), else a one-line
    ``ValueError`` naming ``field``: "expected [meaning, ]an int >= low, got ..."."""
    what = f"{meaning}, an int >= {low}" if meaning else f"an int >= {low}"
    try:
        if isinstance(value, bool):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{field}: expected {what}, got {value!r}") from None
    if out < low:
        raise ValueError(f"{field}: expected {what}, got {out}")
    return out


def check_choice(field: str, value: str, valid: Sequence[str]) -> None:
    """One-line ``ValueError`` naming ``field`` when ``value`` is not one of ``valid``."""
    if value not in valid:
        raise ValueError(f"{field}: unknown {value!r}; valid: {', '.join(valid)}")


def keep_top(scores: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest ``scores`` among ``eligible`` positions.

    Selection runs on the eligible scores only (compressed in flat order, so ties still go to
    the lower flat index, as in ``sparsity.topk_mask``): deterministic, and cheap when few
    positions are eligible (e.g. the active 10% of a 90%-sparse layer).
    """
    flat = eligible.reshape(-1)
    n_eligible = int(torch.count_nonzero(flat))
    if 4 * n_eligible > flat.numel():  # mostly eligible: mask the rest with -inf instead
        s = scores.detach().reshape(-1).float().masked_fill(~flat, float("-inf"))
        return topk_mask(s, k).view(eligible.shape)
    idx = flat.nonzero().squeeze(1)
    chosen = topk_mask(scores.detach().reshape(-1)[idx], k)
    out = torch.zeros(eligible.numel(), dtype=torch.bool, device=eligible.device)
    out[idx[chosen]] = True
    return out.view(eligible.shape)


@fill_doc
class Sparsifier:
    """Static sparse training ("scratch"): a mask fixed before training.

    The base of every method: it chooses the layers, draws or checks the masks, initialises
    the active weights and keeps masked weights exactly zero under any torch optimiser.
    Call :meth:`step` once after every ``optimizer.step()``.

    Parameters
    ----------
    model : nn.Module
        Any module; its parameters must be materialised (not on the ``meta`` device).
    optimizer : torch.optim.Optimizer
        Any torch optimiser over the model's parameters.
    %(target)s
    %(common)s

    Notes
    -----
    ``masking``: ``grads`` zeroes masked gradients before the step (exact for the optimisers
    of ``sparsity.GRADS_ONLY_EXACT``, because the state at masked positions is reset
    whenever a weight is dropped), ``weights`` zeroes masked weights after the step, ``both``
    does both, ``auto`` is ``grads`` where exact and ``both`` elsewhere. One pass per step is
    cheaper than two (benchmarks/masking.py); the trained numbers are the same. ``seed`` gives
    the same masks on every rank of a distributed run.

    ``execution``: ``masked`` keeps dense weights with zeros; ``sparse`` holds every
    sparsified ``nn.Linear`` weight as its non-zero values and trains it on CSR kernels
    (parameter, gradient and optimiser state of nnz entries; ``sparsity.execution``), ``auto``
    only where that is predicted faster (``sparsity.sparse_pays``). The same training up to
    float32 rounding. Code that needs the dense weights of a sparse model (a measurement, a
    custom update) runs inside ``with sparsifier.dense(): ...``.

    Every bad argument raises a one-line ``ValueError`` (:class:`ArgumentError`) that starts
    with the call, e.g. ``Sparsifier(): sparsity: 1.5 is out of range [0, 1)``.
    """

    name = "static"
    #: True for methods that keep masked weights zero themselves (the straight-through
    #: methods of ``methods.shadow``): the mask set is then not attached to the optimiser
    manages_weights = False

    @named_errors
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        sparsity: float = 0.9,
        distribution: str = "erk",
        masks: MaskSet | Mapping[str, torch.Tensor] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        dense_first: bool = False,
        dense_last: bool = False,
        init: str = "dense",
        init_opts: Mapping[str, Any] | None = None,
        masking: str = "auto",
        execution: str = "masked",
        pattern: str | Pattern = "unstructured",
        seed: int = 0,
    ) -> None:
        for pname, p in model.named_parameters():
            if p.device.type == "meta":
                raise ValueError(
                    f"model parameter {pname!r} is on the meta device; materialise the model "
                    "first (model.to_empty(device=...) and initialise it)"
                )
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity: {sparsity!r} is out of range [0, 1)")
        check_choice("init", init, INITS)
        check_choice("masking", masking, MASKING)
        check_choice("execution", execution, EXECUTIONS)
        self.model = model
        self.optimizer = optimizer
        self.pattern = as_pattern(pattern)
        self.sparsity_target = sparsity
        self.distribution = distribution
        self.generator = torch.Generator().manual_seed(seed)
        self.params = select_weights(model, include=include, exclude=exclude,
                                     dense_first=dense_first, dense_last=dense_last)
        self.shapes = {n: tuple(p.shape) for n, p in self.params.items()}
        self.check_pattern(sparsity)
        if masks is None:
            masks = self.initial_masks()
        else:
            checked = check_masks(masks, self.params, "masks")
            if not isinstance(masks, MaskSet):
                masks = MaskSet(self.params, checked)
            self.check_pattern_holds(masks.masks, "masks")
        self.masks = masks
        if init == "keep":
            self.masks.apply_()
        else:
            opts = dict(init_opts or {})
            if init == "sparse":
                opts.setdefault("generator", self.generator)
            initialize_(self.masks, init, **opts)
        self.ever_active = {n: m.clone() for n, m in self.masks.masks.items()}
        self.step_count = 0
        self.updates = 0
        if masking == "auto":
            masking = "grads" if grads_only_is_exact(optimizer) else "both"
        self.masking = masking
        # masked positions start with zero optimiser state (the grads-only rule relies on it)
        for name, m in self.masks.masks.items():
            reset_optimizer_state(optimizer, self.params[name], ~m)
        # only methods that look at gradients before they are masked (RigL) need this hook,
        # and only those that override needs_dense_grads ever defer gradient masking
        self._defers = type(self).needs_dense_grads is not Sparsifier.needs_dense_grads
        self._changes: dict[str, tuple[int, int]] = {}  # (grown, dropped) per layer, this update
        # step pre-hooks run in this order: the execution lays out (and averages over ranks)
        # the gradients, the method reads them unmasked (RigL), then the masks zero them
        self.execution = SparseExecution(model, self.masks, optimizer, execution)
        overridden = type(self)._pre_step is not Sparsifier._pre_step
        self._handles = [optimizer.register_step_pre_hook(self._pre_step)] if overridden else []
        if not self.manages_weights:
            self.masks.attach(optimizer, mask_grads=masking in ("grads", "both"),
                              mask_weights=masking in ("weights", "both"))
        self.execution.settle()  # layers held sparse leave the masked path here

    # -- sparsity patterns -------------------------------------------------------------------
    def check_pattern(self, sparsity: float) -> None:
        """Every sparsified layer fits the pattern (N:M: fan-in a multiple of M; blocks: both
        sides multiples of B), and an N:M pattern's sparsity 1 - N/M is the one asked for."""
        pat = self.pattern
        if not pat.structured:
            return
        for name, shape in self.shapes.items():  # name the first layer that does not fit
            try:
                achievable_count(shape, 0, pat)
            except ValueError as e:
                raise ValueError(f"pattern: layer {name!r}: {e}; keep it dense (dense_first, "
                                 "dense_last, exclude) or choose another pattern") from None
        if pat.kind == "nm" and abs(sparsity - (1.0 - pat.n / pat.m)) > 1e-9:
            raise ValueError(f"sparsity: pattern {pat} fixes the sparsity of every layer at "
                             f"{1.0 - pat.n / pat.m:g}, got {sparsity:g}")

    #: whether units may have no active input at all (SRigL's ablated units)
    empty_units = False

    def check_pattern_holds(self, masks: Mapping[str, torch.Tensor], what: str) -> None:
        """ValueError naming the first layer of ``masks`` that breaks the pattern."""
        if not self.pattern.structured:
            return
        for name, m in masks.items():
            bad = pattern_violations(m, self.pattern, empty_units=self.empty_units)
            if bad:
                raise ValueError(f"{what}: layer {name!r} breaks pattern {self.pattern}: "
                                 f"{bad[0]}")

    def layer_counts(self) -> dict[str, int]:
        """Active entries per layer: the distribution's exact counts at the target sparsity,
        rounded to what the pattern allows (``sparsity.pattern_counts``)."""
        return pattern_counts(self.shapes, self.sparsity_target, self.distribution,
                              self.pattern)

    # -- what a method overrides -----------------------------------------------------------
    def initial_masks(self) -> MaskSet:
        """Random masks with the distribution's exact per-layer counts (under a pattern:
        uniform over the masks it allows, ``sparsity.random_pattern_mask``)."""
        counts = self.layer_counts()
        if not self.pattern.structured:
            return MaskSet.random(self.params, counts, self.generator)
        masks = {n: random_pattern_mask(self.shapes[n], counts[n], self.pattern,
                                        self.generator).to(p.device)
                 for n, p in self.params.items()}
        return MaskSet(self.params, masks)

    def due(self, step: int) -> bool:
        """Whether the topology changes after optimiser step number ``step`` (1-based)."""
        return False

    def update(self, step: int) -> dict[str, float]:
        """Change the masks; returns telemetry. Static training never updates."""
        return {}

    def needs_dense_grads(self, step: int) -> bool:
        """Whether optimiser step ``step`` (1-based) must see the unmasked gradients in
        :meth:`_pre_step`; gradients are then masked at that step instead of in backward."""
        return False

    def _pre_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Runs before the optimiser step (before gradients are masked)."""

    def _sync_grad_masking(self) -> None:
        """Defer gradient masking to the step when the coming step needs dense gradients (and
        have sparse layers compute them in backward)."""
        dense = self.needs_dense_grads(self.step_count + 1)
        self.masks.defer_grad_masking = dense
        self.execution.capture(dense)

    def dense_grads(self) -> dict[str, torch.Tensor | None]:
        """dL/dW of every sparsified weight as a dense tensor (None where there is none): the
        unmasked ``.grad`` of a masked layer while gradient masking is deferred, the captured
        dense gradient of a layer held sparse."""
        return {n: self.execution.dense_grad(n) for n in self.params}

    @contextmanager
    def dense(self) -> Iterator[None]:
        """A block in which every sparsified weight is a dense tensor with zeros at masked
        positions, whatever the execution (``SparseExecution.dense``); mask updates run in
        one, and any code written for dense weights can."""
        with self.execution.dense():
            yield

    # -- the per-step call -----------------------------------------------------------------
    def step(self) -> dict[str, float] | None:
        """Call once after each ``optimizer.step()``; returns telemetry when masks changed."""
        self.step_count += 1
        if not self.due(self.step_count):
            if self._defers:
                self._sync_grad_masking()
            return None
        try:
            self._changes = {}
            with self.execution.dense():
                stats = self.update(self.step_count)
            self.updates += 1
            return {**stats, **self.telemetry(self._changes)}
        finally:
            self._sync_grad_masking()

    # -- shared bookkeeping ----------------------------------------------------------------
    def replace_mask(self, name: str, new: torch.Tensor, *, zero: torch.Tensor | None = None
                     ) -> None:
        """Install ``new`` for layer ``name``: weights leaving the mask become zero, positions in
        ``zero`` (the grown ones) are set to zero, and the optimiser state of every changed or
        zeroed position is reset (any state tensor shaped like the weight)."""
        old = self.masks[name]
        p = self.params[name]
        self.masks.set_mask(name, new)
        changed = old ^ new
        grown = int(torch.count_nonzero(changed & new))
        self._record_change(name, grown, int(torch.count_nonzero(changed)) - grown)
        if zero is not None:
            with torch.no_grad():
                p.masked_fill_(zero, 0.0)
            changed = changed | zero
        if bool(changed.any()):
            self._reset_state(name, changed)
        self.ever_active[name] |= new

    def replace_positions(self, name: str, drop: torch.Tensor, grow: torch.Tensor) -> None:
        """Drop, then grow, flat positions of layer ``name`` (1-d int64 index tensors): the
        dropped and grown weights become zero and their optimiser state is reset.

        Same result as ``replace_mask(name, (M with drop off) | grow, zero=grow)``, but every
        operation is on the indices (``MaskSet.update``), none is a pass over the layer: the
        fast path of the dynamic methods. Grow positions must be inactive after the drop (a
        just-dropped one may be regrown)."""
        regrown = int(self.masks[name].reshape(-1)[grow].sum())  # were active: dropped now
        self.masks.update(name, drop, grow)
        self._reset_state(name, torch.cat([drop, grow]))
        self.ever_active[name].view(-1)[grow] = True
        self._record_change(name, grow.numel() - regrown, drop.numel() - regrown)

    def _reset_state(self, name: str, positions: torch.Tensor) -> None:
        """Optimiser state of layer ``name`` restarts at ``positions`` (flat or bool), whether
        it is laid out densely (reset now) or as values (reset when the layer is rebuilt)."""
        if not self.execution.record_reset(name, positions):
            reset_optimizer_state(self.optimizer, self.params[name], positions)

    def _record_change(self, name: str, grown: int, dropped: int) -> None:
        """Add a layer's net grown (inactive -> active) and dropped counts to this update's."""
        g, d = self._changes.get(name, (0, 0))
        self._changes[name] = (g + grown, d + dropped)

    def telemetry(self, changes: Mapping[str, tuple[int, int]] | None = None
                  ) -> dict[str, float]:
        """Per-layer densities and ever-active fractions; with ``changes`` (``{layer: (grown,
        dropped)}`` of an update: positions that turned active / inactive) also grow/drop
        counts and churn = sum grown / sum active."""
        out: dict[str, float] = {"sparsity": self.masks.sparsity()}
        total_active = total_grown = total_ever = total = 0
        for name, m in self.masks.masks.items():
            active = int(torch.count_nonzero(m))
            out[f"density/{name}"] = active / m.numel()
            ever = int(torch.count_nonzero(self.ever_active[name]))
            out[f"ever_active/{name}"] = ever / m.numel()
            total_ever += ever
            total += m.numel()
            total_active += active
            if changes is not None:
                grown, dropped = changes.get(name, (0, 0))
                out[f"grown/{name}"] = grown
                out[f"dropped/{name}"] = dropped
                total_grown += grown
        out["ever_active"] = total_ever / max(1, total)
        if changes is not None:
            out["churn"] = total_grown / max(1, total_active)
        return out

    def summary(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Realised sparsity over the sparsified layers and over all Linear/Conv weights, the
        ITOP rate (and, off the masked execution, how each layer ran).

        ``itop_rate``: R_s = (weights ever active during training) / (weights of the sparsified
        layers), Liu et al. 2021 ("Do We Actually Need Dense Over-Parameterization? In-Time
        Over-Parameterization in Sparse Training"): 1 - sparsity for static training, up to
        1 when a dynamic method has explored every weight."""
        ever = sum(int(torch.count_nonzero(m)) for m in self.ever_active.values())
        total = sum(m.numel() for m in self.ever_active.values())
        out = {
            "sparsity": round(self.masks.sparsity(), 6),
            "itop_rate": round(ever / max(1, total), 6),
            "sparsity_all_weights": round(self.masks.global_sparsity(model or self.model), 6),
            "densities": {n: round(d, 6) for n, d in self.masks.densities().items()},
            "mask_updates": self.updates,
        }
        if self.execution.mode != "masked":
            out["execution"] = self.execution.executions()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Masks, ever-active masks, step counter and generator state (weights_only-safe)."""
        return {
            "masks": self.masks.state_dict(),
            "ever_active": {n: m.cpu().clone() for n, m in self.ever_active.items()},
            "step": self.step_count,
            "updates": self.updates,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (masks are re-applied to the weights; optimiser state of
        either execution is laid out for this one)."""
        with self.execution.dense():
            self.masks.load_state_dict(state["masks"])
            self.masks.apply_()
            self.execution.loaded()
        dev = next(iter(self.params.values())).device
        self.ever_active = {n: m.to(dev) for n, m in state["ever_active"].items()}
        self.step_count = int(state["step"])
        self.updates = int(state.get("updates", 0))
        self.generator.set_state(state["generator"])
        self._sync_grad_masking()

    def remove(self) -> None:
        """Detach every hook from the optimiser (the weights keep their zeros; layers held
        sparse become dense ``nn.Linear`` again)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.masks.detach()
        self.execution.remove()
