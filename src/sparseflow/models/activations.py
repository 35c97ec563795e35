"""Activation functions by name, including the learnable PReLU and SReLU.

Every activation works on 2-D ``(N, F)`` and 4-D ``(N, C, H, W)`` inputs; learnable ones keep
one parameter per feature/channel (dimension 1) when ``num_features`` is given, else one
shared parameter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import ModelError

__all__ = ["ACTIVATIONS", "SReLU", "activation_names", "make_activation"]

PRELU_INIT = 0.25
"""Initial negative slope of PReLU (He et al. 2015; also what the Tessera et al. slides show)."""


class SReLU(nn.Module):
    """S-shaped ReLU (Jin et al. 2016) with learnable per-feature thresholds and slopes.

    ``y = t_r + a_r (x - t_r)`` for ``x >= t_r``; ``y = x`` for ``t_l < x < t_r``;
    ``y = t_l + a_l (x - t_l)`` for ``x <= t_l``. The right branch is checked first, so the
    function stays defined if training pushes ``t_l`` above ``t_r``.

    The default init (``t_l=-0.4, a_l=0.4, t_r=0.4, a_r=2.0``) is read off the SReLU plot in
    the Tessera et al. (2021) talk; the paper's exact init is unconfirmed. Pass other values
    to change it.
    """

    def __init__(
        self,
        num_features: int | None = None,
        *,
        t_left: float = -0.4,
        a_left: float = 0.4,
        t_right: float = 0.4,
        a_right: float = 2.0,
    ) -> None:
        super().__init__()
        if num_features is not None and num_features < 1:
            raise ModelError(f"SReLU num_features must be >= 1, got {num_features}")
        self.num_features = num_features
        n = 1 if num_features is None else num_features
        self.t_left = nn.Parameter(torch.full((n,), float(t_left)))
        self.a_left = nn.Parameter(torch.full((n,), float(a_left)))
        self.t_right = nn.Parameter(torch.full((n,), float(t_right)))
        self.a_right = nn.Parameter(torch.full((n,), float(a_right)))

    def _shaped(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.num_features is None or x.dim() < 2:
            return p
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the piecewise-linear S-shaped function elementwise (per channel on dim 1)."""
        tl, al = self._shaped(self.t_left, x), self._shaped(self.a_left, x)
        tr, ar = self._shaped(self.t_right, x), self._shaped(self.a_right, x)
        left = tl + al * (x - tl)
        right = tr + ar * (x - tr)
        return torch.where(x >= tr, right, torch.where(x <= tl, left, x))

    def extra_repr(self) -> str:
        """Show the number of per-feature parameter sets in ``repr``."""
        return f"num_features={self.num_features}"


def _prelu(num_features: int | None) -> nn.Module:
    return nn.PReLU(num_parameters=num_features or 1, init=PRELU_INIT)


ACTIVATIONS: dict[str, Callable[[int | None], nn.Module]] = {
    "relu": lambda n: nn.ReLU(),
    "prelu": _prelu,
    "elu": lambda n: nn.ELU(),
    "silu": lambda n: nn.SiLU(),
    "swish": lambda n: nn.SiLU(),
    "srelu": lambda n: SReLU(n),
    "sigmoid": lambda n: nn.Sigmoid(),
    "tanh": lambda n: nn.Tanh(),
}
"""Activation factories by name (``swish`` is an alias of ``silu``); each takes ``num_features``."""


def activation_names() -> list[str]:
    """Return the valid activation names (aliases included), sorted."""
    return sorted(ACTIVATIONS)


def make_activation(name: str, num_features: int | None = None) -> nn.Module:
    """Build a fresh activation module by (case-insensitive) name.

    ``num_features`` gives learnable activations (``prelu``, ``srelu``) one parameter per
    feature/channel; ``None`` means one shared parameter. Other activations ignore it.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in ACTIVATIONS:
        raise ModelError(
            f"unknown activation {name!r}; valid activations: {', '.join(activation_names())}"
        )
    return ACTIVATIONS[key](num_features)
