"""Sparse execution: sparsified Linear layers train on their non-zero values with CSR kernels.

``execution="masked"`` (the default) keeps every weight dense and its masked entries at zero
(:class:`~sparseflow.sparsity.masks.MaskSet`). ``"sparse"`` turns every sparsified
``nn.Linear`` with at least one zero (an ERK layer may be fully dense) into a
:class:`CSRLinear` whose ``weight`` parameter *is* the vector of its active entries (row-major
order), so the parameter, its gradient and the optimiser state hold nnz numbers, and forward
and backward run on sparse kernels (:mod:`sparseflow.sparsity.csr`).
``"auto"`` does so only for the layers where :func:`sparse_pays` predicts a gain from the
layer's size and density (a deterministic rule measured on CPU, so a run's numbers do not depend
on timing noise); the others stay masked. docs/science.md section 16.

The user's optimiser keeps working: a layer held sparse trains a new values Parameter that
takes the original weight's place in the optimiser's ``param_groups`` and in the module (a
Parameter never changes shape: a graph still alive would keep the shape it saw), so a list of
parameters taken *before* the sparsifier was built holds the original weights, now empty, for
those layers (take ``model.parameters()`` afresh, e.g. for gradient clipping).
:class:`SparseExecution` keeps everything consistent:

- **settling** (before every optimiser step, after a dense block, after loading): each layer is
  made sparse or dense as it should be, its gradient converted, and every optimiser state
  tensor moved to the layer's current positions (kept positions keep their state, grown ones
  and those a method reset start from the state's initial value, as in the masked path);
- **dense blocks** (:meth:`SparseExecution.dense`): the weights are dense tensors again
  (zeros at masked positions) for mask updates, gradient-flow measurement, the Hessian, or any
  code written for dense weights; on exit the layers are rebuilt from the masks then current;
- **checkpoints**: ``state_dict()`` always holds the dense weight under its usual name, and a
  dense weight loads into a sparse layer (the layer is dense until the next settling);
- **RigL's dense gradient**: while ``capture_dense_grad`` is set (only before an update step),
  backward also computes the full dL/dW of each sparse layer;
- **data parallel**: the value gradients (and captured dense gradients) are averaged over ranks
  here, DistributedDataParallel being told to leave those parameters alone (their size changes
  when a pattern does).

Convolutions stay masked: an unfold + CSR convolution lost 2-4x to the dense (oneDNN)
convolution on LeNet-5's second layer and a VGG 64->64 layer, tied on a 256->256 3x3 layer at
90%, and won only on that layer at 98% and on LeNet-5's single-channel first layer with one
thread (benchmarks/sparse_execution.py --conv; docs/results/sparse-execution.md).

The layer itself (:class:`CSRLinear`, and :func:`linear_layers`: the weights that may become
one) lives in ``sparsity/csr_linear.py``; both names are re-exported here. This module keeps
the rule of ``auto`` (:func:`sparse_pays` and its measured tables) and :class:`SparseExecution`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from sparseflow.sparsity.csr import CSRPattern, compiled_kernels
from sparseflow.sparsity.csr_linear import CSRLinear, linear_layers
from sparseflow.sparsity.masks import MaskSet
from sparseflow.sparsity.optim_state import flat_indices, initial_state_value

EXECUTIONS = ("masked", "sparse", "auto")

# sparse_pays: (smallest out * in, {torch threads: crossover density}) -- the densest layer of
# that size for which the CSR step (forward, input and weight gradients, batch 128) measured at
# least as fast as the masked one on torch's (MKL) CSR kernels (benchmarks/sparse_execution.py
# --crossover with SPARSEFLOW_KERNELS=torch on this 2-core CPU; docs/results/sparse-execution.md).
# Larger layers gain more; below 2**14 weights the fixed cost of the sparse calls always loses;
# more threads speed the dense kernel up more than MKL's sparse one. A thread count beyond the
# table uses its largest entry.
CROSSOVER: tuple[tuple[int, dict[int, float]], ...] = (
    (2**20, {1: 0.15, 2: 0.15}),
    (2**17, {1: 0.15, 2: 0.10}),
    (2**14, {1: 0.02, 2: 0.0}),
)
# The same for the compiled kernels (sparsity/_numba_csr.py), which run with one thread: CSR
# was faster at density 0.2 on every layer of 2**14 weights or more (1.2x on 100x300 to 1.5x on
# 1024x1024) and at 0.3 about as fast (0.94-1.05x); 10x100 lost at every density (0.72-0.78x).
CROSSOVER_COMPILED: tuple[tuple[int, float], ...] = ((2**14, 0.25),)


def sparse_pays(shape: tuple[int, ...], density: float, threads: int | None = None,
                device: torch.device | str = "cpu") -> bool:
    """Whether the CSR kernels are predicted faster than the masked layer for a Linear weight.

    ``density <= d*(out * in)`` from the measured table of the kernels that run with
    ``threads`` torch threads (default: now): ``CROSSOVER_COMPILED`` where the compiled loops
    run (one thread, numba installed), else ``CROSSOVER`` by thread count; 0 for layers below a
    table's smallest size (never). A rule rather than a timing probe, so that a config and seed
    always run the same kernels and give the same numbers on one installation.

    Only CPU layers are measured: on any other ``device`` (a GPU, where cuBLAS's dense product
    is fast and cuSPARSE's CSR product unmeasured here) it says no, so that ``auto`` never picks
    a path slower than the masked one it has not timed; ``execution="sparse"`` still runs CSR.
    """
    if len(shape) != 2 or torch.device(device).type != "cpu":
        return False
    threads = threads or torch.get_num_threads()
    numel = int(shape[0]) * int(shape[1])
    if compiled_kernels(torch.float32, threads) is not None:
        limit = next((d for size, d in CROSSOVER_COMPILED if numel >= size), 0.0)
        return 0.0 < density <= limit
    for size, by_threads in CROSSOVER:
        if numel >= size:
            known = sorted(by_threads)
            limit = by_threads[max([t for t in known if t <= threads] or known[:1])]
            return 0.0 < density <= limit
    return False


def _remap(old: torch.Tensor, old_index: torch.Tensor, new_index: torch.Tensor,
           reset: torch.Tensor | None, v0: float) -> torch.Tensor:
    """Values at ``new_index`` from ``old`` (laid out at ``old_index``, sorted): a position in
    both keeps its value unless it is in ``reset``; every other starts at ``v0``."""
    out = torch.full((new_index.numel(),), v0, dtype=old.dtype, device=old.device)
    if old_index.numel() == 0 or new_index.numel() == 0:
        return out
    pos = torch.searchsorted(old_index, new_index).clamp_(max=old_index.numel() - 1)
    found = old_index[pos] == new_index
    if reset is not None and reset.numel():
        found &= ~torch.isin(new_index, reset)
    out[found] = old[pos[found]]
    return out


class SparseExecution:
    """Runs a sparsifier's Linear layers on their non-zero values (see the module docstring).

    ``mode``: ``masked`` (no layer changes; only the optimiser state of a checkpoint written
    in sparse mode is laid out densely when loaded), ``sparse`` (every sparsified
    ``nn.Linear``), ``auto`` (those where :func:`sparse_pays`). The optimiser's entry for a
    layer held sparse is its values Parameter (swapped into ``param_groups`` with its state laid
    out to match); ``masks.exempt`` names those layers so the masked path's hooks skip them.
    Call :meth:`settle` once the caller's own optimiser hooks are in place.
    """

    def __init__(self, model: nn.Module, masks: MaskSet, optimizer: torch.optim.Optimizer,
                 mode: str = "masked") -> None:
        if mode not in EXECUTIONS:
            raise ValueError(f"execution: unknown {mode!r}; valid: {', '.join(EXECUTIONS)}")
        self.mode, self.masks, self.optimizer = mode, masks, optimizer
        self.params: dict[str, torch.Tensor] = masks.params  # the original weight Parameters
        self.modules: dict[str, CSRLinear] = {}
        if mode != "masked":
            for name, module in linear_layers(model, self.params).items():
                self.modules[name] = (module if isinstance(module, CSRLinear)
                                      else CSRLinear.convert_(module))
        self._slot: dict[str, torch.Tensor] = dict(self.params)  # the optimiser's entry
        # flat positions a values-shaped optimiser state of the slot stands for (None: dense)
        self._state_index: dict[str, torch.Tensor | None] = {}
        self._resets: dict[str, list[torch.Tensor]] = {}
        self._plans: dict[str, tuple[torch.Tensor, CSRPattern | None]] = {}
        self._depth = 0
        self._handles: list[Any] = []
        if self.modules:
            self._handles.append(optimizer.register_step_pre_hook(self._before_step))
            self._ignore_in_ddp(model)

    # -- what is where ---------------------------------------------------------------------
    def plan(self, name: str) -> CSRPattern | None:
        """The pattern layer ``name`` runs on for its current mask (None: masked/dense): in
        ``sparse`` mode every layer with a zero (a fully dense one gains nothing), in ``auto``
        those where :func:`sparse_pays`."""
        mask = self.masks[name]
        seen = self._plans.get(name)
        if seen is not None and seen[0] is mask:
            return seen[1]
        pattern = None
        if name in self.modules and mask.dim() == 2:
            density = float(torch.count_nonzero(mask)) / max(1, mask.numel())
            if (density < 1.0 and self.mode == "sparse"
                    or sparse_pays(tuple(mask.shape), density, device=mask.device)):
                pattern = CSRPattern.from_mask(mask)
        self._plans[name] = (mask, pattern)
        return pattern

    def holds_values(self, name: str) -> bool:
        """Whether layer ``name`` is held as its non-zero values now."""
        module = self.modules.get(name)
        return module is not None and module.is_sparse

    def parameter(self, name: str) -> torch.Tensor:
        """The Parameter holding weight ``name`` now: the values Parameter of a layer held
        sparse (1-d, the active entries in row-major order), else the original weight."""
        module = self.modules.get(name)
        return module.weight if module is not None else self.params[name]

    def executions(self) -> dict[str, str]:
        """``{name: "sparse" | "masked"}`` for every sparsified weight, as they run now."""
        return {n: "sparse" if self.holds_values(n) else "masked" for n in self.params}

    # -- keeping things consistent ------------------------------------------------------
    def settle(self) -> None:
        """Make every layer sparse or dense as its current mask says, with its gradient and
        optimiser state laid out to match (cheap when nothing changed: identity checks)."""
        if self._depth:
            return
        for name, module in self.modules.items():
            pattern = self.plan(name)
            slot, dense = self._slot[name], self.params[name]
            resets = bool(self._resets.get(name))
            if pattern is None:
                module.hold_dense_()
                if slot is not dense or resets:
                    self._move(name, dense, None)
                continue
            if (module.is_sparse and module.csr is pattern and slot is module.weight
                    and not resets and module.loaded_dense is None):
                continue
            module.hold_dense_()
            if (slot is not dense and module.csr is pattern and not resets
                    and slot.shape == (pattern.nnz,)):
                self._refill(module, slot)  # back from a dense block: same pattern, same slot
            else:
                self._move(name, module.hold_values_(pattern), pattern.index)
        held = {n for n, m in self.modules.items() if m.is_sparse}
        if held != self.masks.exempt:  # settled at every step: usually nothing to tell
            self.masks.exempt = held

    @staticmethod
    def _refill(module: CSRLinear, values: torch.Tensor) -> None:
        """Hold ``module`` (dense now) on its existing values Parameter again, refreshed from the
        dense weight (a method may have changed weights inside a dense block)."""
        dense = module.dense_weight
        assert module.csr is not None
        with torch.no_grad():
            values.copy_(module.csr.gather(dense.detach()))
        module._parameters["weight"] = values
        dense.grad = None
        dense.data = dense.data.new_empty(0)

    def _move(self, name: str, new: torch.Tensor, index: torch.Tensor | None) -> None:
        """Make ``new`` the optimiser's entry for layer ``name`` (in place of the current one),
        its state laid out at ``index`` (None: dense): a position held before keeps its state
        unless it was reset; every other starts at the state's initial value."""
        old = self._slot[name]
        layout = self._state_index.get(name)
        resets = self._resets.pop(name, [])
        reset = torch.cat(resets) if resets else None
        shape = tuple(self.masks[name].shape)
        opt = self.optimizer
        group = next((g for g in opt.param_groups if any(q is old for q in g["params"])), None)
        state = opt.state.get(old) if old in opt.state else None
        if state is not None and new is not old:
            del opt.state[old]
        if group is not None and new is not old:
            group["params"] = [new if q is old else q for q in group["params"]]
        self._slot[name], self._state_index[name] = new, index
        if not state or group is None:
            return
        out: dict[str, Any] = {}
        for key, s in state.items():
            if key == "step" or not isinstance(s, torch.Tensor) or s.dim() == 0:
                out[key] = s
                continue
            v0 = initial_state_value(opt, key, group)
            dev = s.device
            if tuple(s.shape) == shape:  # dense (its resets were applied directly)
                out[key] = s if index is None else s.reshape(-1)[index.to(dev)]
            elif s.dim() == 1 and layout is not None and s.numel() == layout.numel():
                r = None if reset is None else reset.to(dev)
                if index is None:
                    flat = torch.full((self.masks[name].numel(),), v0, dtype=s.dtype, device=dev)
                    flat[layout.to(dev)] = s
                    if r is not None:
                        flat[r] = v0
                    out[key] = flat.view(shape)
                elif layout is index and r is None:
                    out[key] = s
                else:
                    out[key] = _remap(s, layout.to(dev), index.to(dev), r, v0)
            else:
                out[key] = s
        opt.state[new] = out

    def record_reset(self, name: str, positions: torch.Tensor) -> bool:
        """Remember that the optimiser state at ``positions`` (flat indices or a bool mask) of
        layer ``name`` restarts, where that state is laid out as values (its layer is held
        sparse, or was before this dense block); then True. False where the state is dense and
        the caller resets it in place (``reset_optimizer_state``)."""
        if self._slot[name] is self.params[name]:
            return False
        self._resets.setdefault(name, []).append(flat_indices(positions, self.masks[name]))
        return True

    def loaded(self) -> None:
        """After masks were loaded from a checkpoint: a values-shaped optimiser state (from a
        sparse-execution checkpoint) stands for the loaded masks' positions; lay every state
        out for this execution (at the next settling for the layers held sparse)."""
        for name in self.params:
            self._state_index[name] = self.masks[name].reshape(-1).nonzero().squeeze(1)
            self._resets.pop(name, None)
            if name not in self.modules:
                self._move(name, self.params[name], None)
        self.settle()

    @contextmanager
    def dense(self) -> Iterator[None]:
        """A block in which every sparsified weight is its original dense Parameter (zeros at
        masked positions) and the layers run dense; on exit each layer is rebuilt from its
        mask as it is then (masks may change inside: mask updates run here). Re-entrant. The
        optimiser is not to be stepped inside."""
        if not self._depth:
            for module in self.modules.values():
                module.hold_dense_()
            self.masks.exempt = set()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.settle()

    # -- RigL's dense gradient ------------------------------------------------------------
    def capture(self, on: bool) -> None:
        """Whether the coming backward passes also compute dense dL/dW of the sparse layers
        (accumulated over them like ``.grad``; any captured one is dropped here)."""
        for module in self.modules.values():
            module.capture_dense_grad = on
            module.dense_grad = None

    def dense_grad(self, name: str) -> torch.Tensor | None:
        """dL/dW of layer ``name`` as a dense tensor: the captured one of a layer held sparse,
        the ``.grad`` of a masked one (None when there is none)."""
        module = self.modules.get(name)
        if module is not None and module.is_sparse:
            return module.dense_grad
        return self.params[name].grad

    # -- hooks --------------------------------------------------------------------------
    def _before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.settle()
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for module in self.modules.values():
                if not module.is_sparse:
                    continue
                for t in (module.weight.grad, module.dense_grad):
                    if t is not None:
                        dist.all_reduce(t)
                        t.div_(world)

    def _ignore_in_ddp(self, model: nn.Module) -> None:
        """Tell a later ``DistributedDataParallel(model)`` to leave the sparse-capable weights
        to :meth:`_before_step` (their Parameter changes with the pattern)."""
        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, list(self.modules))

    def remove(self) -> None:
        """Every layer a plain ``nn.Linear`` on its original Parameter again, that Parameter
        back in the optimiser with its state laid out densely; hooks removed."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._depth = 0
        for name, module in self.modules.items():
            module.revert_()
            self._move(name, self.params[name], None)
        self.modules.clear()
        self.masks.exempt = set()
