"""The layer of sparse execution: :class:`CSRLinear`, an ``nn.Linear`` whose weight may be held
as its non-zero values and run on the CSR kernels (:mod:`sparseflow.sparsity.csr`), and
:func:`linear_layers`, the sparsified weights that may become one.

:class:`~sparseflow.sparsity.execution.SparseExecution` makes and settles these layers and keeps
the optimiser consistent with them; ``sparsity/execution.py`` imports both names from here and
re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparseflow.sparsity.csr import CSRPattern, sparse_linear


class CSRLinear(nn.Linear):
    """An ``nn.Linear`` whose weight may be held as its non-zero values (sparse execution).

    While sparse, the registered ``weight`` is a 1-d Parameter of the active entries of W in
    row-major order, laid out by ``csr`` (a :class:`~sparseflow.sparsity.csr.CSRPattern`), and
    forward is :func:`~sparseflow.sparsity.csr.sparse_linear`; the layer's original weight
    Parameter (``dense_weight``) then holds no data. While dense, ``weight`` is that original
    Parameter and the layer is an ``nn.Linear``. ``state_dict()`` always holds the dense weight,
    so checkpoints load in plain PyTorch.

    A Parameter never changes shape while autograd may know it (a graph still alive keeps the
    shape it saw): the values live in a new Parameter whenever the pattern changes, and the
    original one is only used, dense, inside dense blocks. Made by :class:`SparseExecution` from
    an existing ``nn.Linear`` (its class is swapped in place).
    """

    csr: CSRPattern | None
    dense_weight: nn.Parameter
    loaded_dense: torch.Tensor | None  # a dense weight loaded while sparse, until re-laid out
    capture_dense_grad: bool
    dense_grad: torch.Tensor | None

    @classmethod
    def convert_(cls, module: nn.Linear) -> CSRLinear:
        """Turn ``module`` (exactly an ``nn.Linear``) into a dense CSRLinear in place."""
        if type(module) is not nn.Linear:
            raise TypeError(f"CSRLinear.convert_: expected nn.Linear, got {type(module).__name__}")
        module.__class__ = cls
        assert isinstance(module, CSRLinear)
        module.csr, module.capture_dense_grad, module.dense_grad = None, False, None
        module.loaded_dense = None
        module.__dict__["dense_weight"] = module.weight  # a plain attribute, not registered
        return module

    def revert_(self) -> nn.Linear:
        """Back to a plain dense ``nn.Linear`` over the original weight Parameter."""
        self.hold_dense_()
        for attr in ("csr", "capture_dense_grad", "dense_grad", "dense_weight", "loaded_dense"):
            self.__dict__.pop(attr, None)
        self.__class__ = nn.Linear
        return self

    @property
    def is_sparse(self) -> bool:
        """Whether the weight is held as its non-zero values."""
        return self.weight is not self.dense_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight  # by its shape: torch.func.functional_call may substitute a dense one
        if w.dim() == 1:
            assert self.csr is not None
            return sparse_linear(x, w, self.csr, self.bias, self)
        return F.linear(x, w, self.bias)

    def hold_values_(self, pattern: CSRPattern, values: torch.Tensor | None = None
                     ) -> nn.Parameter:
        """Hold the weight (dense now) as a new Parameter of its entries at ``pattern`` (or of
        the given ``values``, in row-major order of the pattern; the gradient likewise); the
        original Parameter gives up its data. Returns the new one."""
        dense = self.dense_weight
        if self.is_sparse:
            raise RuntimeError("CSRLinear.hold_values_: the weight is already sparse")
        pattern = pattern.to(dense.device)
        if values is None:
            values = pattern.gather(dense.detach())
        elif values.shape != (pattern.nnz,):
            raise ValueError(f"CSRLinear.hold_values_: expected {pattern.nnz} values, got "
                             f"shape {tuple(values.shape)}")
        values = nn.Parameter(values.to(device=dense.device, dtype=dense.dtype),
                              requires_grad=dense.requires_grad)
        if dense.grad is not None:
            values.grad = pattern.gather(dense.grad)
        self._parameters["weight"] = values
        self.csr = pattern
        dense.grad = None
        dense.data = dense.data.new_empty(0)
        return values

    def hold_dense_(self) -> nn.Parameter | None:
        """Hold the weight as the original dense Parameter again (zeros at inactive positions;
        the gradient likewise). Returns the values Parameter it held (None if dense)."""
        values = self.weight
        if values is self.dense_weight:
            return None
        assert self.csr is not None
        dense = self.dense_weight
        loaded, self.loaded_dense = self.loaded_dense, None
        dense.data = loaded if loaded is not None else self.csr.dense(values.detach())
        dense.grad = None if values.grad is None else self.csr.dense(values.grad)
        self._parameters["weight"] = dense
        return values

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.is_sparse:
            assert self.csr is not None
            destination[prefix + "weight"] = self.csr.dense(self.weight.detach())

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any
                              ) -> None:
        incoming = state_dict.get(prefix + "weight")
        if (self.is_sparse and isinstance(incoming, torch.Tensor) and self.csr is not None
                and tuple(incoming.shape) == self.csr.shape):
            # load into the dense Parameter; the values follow at the current pattern, and the
            # layer is rebuilt from the dense weight at the next settling (masks may change)
            values = self.weight
            self.hold_dense_()
            try:
                super()._load_from_state_dict(state_dict, prefix, *args)
            finally:
                dense = self.dense_weight
                with torch.no_grad():
                    values.copy_(self.csr.gather(dense.detach()))
                self._parameters["weight"] = values
                self.loaded_dense = dense.detach().clone()
                dense.grad = None
                dense.data = dense.data.new_empty(0)
            return
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        if self.is_sparse and self.csr is not None:
            return f"{base}, execution=sparse, density={self.csr.density:.4f}"
        return f"{base}, execution=dense"


def linear_layers(model: nn.Module, params: Mapping[str, torch.Tensor]) -> dict[str, nn.Linear]:
    """``{name: module}`` for the weights in ``params`` that are the ``weight`` of exactly an
    ``nn.Linear`` (not a subclass, which may not call its own forward) used nowhere else in
    ``model`` (a weight shared by two modules stays masked)."""
    uses: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    out: dict[str, nn.Linear] = {}
    for name, p in params.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if (attr == "weight" and type(module) in (nn.Linear, CSRLinear)
                and module.weight is p and uses.get(id(p), 0) == 1):
            out[name] = module
    return out
