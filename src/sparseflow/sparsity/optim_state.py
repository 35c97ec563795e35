"""Reset the optimiser state of chosen weight positions, for any torch optimiser.

Every tensor in ``optimizer.state[param]`` that has the parameter's shape (momentum_buffer,
exp_avg, exp_avg_sq, max_exp_avg_sq, square_avg, acc_delta, sum, exp_inf, ax, prev,
step_size, ...) is reset at the given positions to the value it starts from. That value is
0, except for the few state tensors in ``INITIAL_STATE`` that torch starts elsewhere:
Adagrad's ``sum`` starts at the group's ``initial_accumulator_value`` and Rprop's
``step_size`` at the group's ``lr``. Scalar state (``step``, ``eta``, ``mu``, ...) and flat
state not shaped like the parameter (LBFGS history) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# (optimizer class, state key) -> initial value read from the param group
INITIAL_STATE: dict[tuple[type[torch.optim.Optimizer], str], Callable[[dict[str, Any]], float]] = {
    (torch.optim.Adagrad, "sum"): lambda group: float(group["initial_accumulator_value"]),
    (torch.optim.Rprop, "step_size"): lambda group: float(group["lr"]),
}

Positions = torch.Tensor | Sequence[int]


def _find(optimizer: torch.optim.Optimizer, name_or_param: str | torch.Tensor):
    for group in optimizer.param_groups:
        names = group.get("param_names")
        for i, p in enumerate(group["params"]):
            if isinstance(name_or_param, str):
                if names is not None and names[i] == name_or_param:
                    return p, group
            elif p is name_or_param:
                return p, group
    if isinstance(name_or_param, str):
        if not any("param_names" in g for g in optimizer.param_groups):
            raise ValueError(
                "optimizer has no parameter names (build it from model.named_parameters()); "
                "pass the parameter itself"
            )
        raise ValueError(f"parameter {name_or_param!r} is not in the optimizer")
    raise ValueError("parameter is not in the optimizer")


def positions_mask(positions: Positions, param: torch.Tensor) -> torch.Tensor:
    """A bool tensor of ``param``'s shape, True at ``positions`` (flat indices or bool)."""
    pos = torch.as_tensor(positions, device=param.device)
    if pos.dtype == torch.bool:
        if pos.shape != param.shape:
            raise ValueError(
                f"bool positions have shape {tuple(pos.shape)}, parameter {tuple(param.shape)}"
            )
        return pos
    idx = pos.reshape(-1).long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= param.numel()):
        raise ValueError(f"positions must be flat indices in [0, {param.numel()})")
    flat = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
    flat[idx] = True
    return flat.view(param.shape)


def flat_indices(positions: Positions, param: torch.Tensor) -> torch.Tensor:
    """1-d int64 flat indices into ``param`` from flat indices or a bool tensor of its shape."""
    pos = torch.as_tensor(positions, device=param.device)
    if pos.dtype == torch.bool:
        return positions_mask(pos, param).reshape(-1).nonzero().squeeze(1)
    idx = pos.reshape(-1).long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= param.numel()):
        raise ValueError(f"positions must be flat indices in [0, {param.numel()})")
    return idx


def initial_state_value(optimizer: torch.optim.Optimizer, key: str, group: dict) -> float:
    """The value the state tensor ``key`` starts from: INITIAL_STATE entry or 0."""
    for (cls, k), value in INITIAL_STATE.items():
        if k == key and isinstance(optimizer, cls):
            return value(group)
    return 0.0


def reset_optimizer_state(
    optimizer: torch.optim.Optimizer,
    name_or_param: str | torch.Tensor,
    positions: Positions,
) -> list[str]:
    """Reset the per-weight optimiser state at ``positions`` of one parameter.

    For each state tensor S of the parameter's shape: S.flat[positions] = v0, with v0 the
    tensor's initial value (``initial_state_value``: 0, Adagrad ``sum`` ->
    initial_accumulator_value, Rprop ``step_size`` -> lr). ``positions`` are flat indices
    into the flattened parameter, or a bool tensor of the parameter's shape. A string names
    the parameter through the optimizer's ``param_names`` (torch >= 2.6, when it was built
    from ``named_parameters()``). Returns the state keys that were reset (none when the
    optimiser has not stepped yet).
    """
    param, group = _find(optimizer, name_or_param)
    state = optimizer.state.get(param)
    if not state:
        return []
    pos = torch.as_tensor(positions, device=param.device)
    by_index = pos.dtype != torch.bool  # indices: index fills, no pass over the layer
    where = flat_indices(pos, param) if by_index else positions_mask(pos, param)
    reset: list[str] = []
    with torch.no_grad():
        for key, value in state.items():
            if key == "step" or not isinstance(value, torch.Tensor):
                continue
            if value.shape != param.shape:
                continue
            v0 = initial_state_value(optimizer, key, group)
            if not by_index:
                value.masked_fill_(where.to(value.device), v0)
            elif value.is_contiguous():
                value.view(-1).index_fill_(0, where.to(value.device), v0)
            else:
                value.masked_fill_(positions_mask(where, param).to(value.device), v0)
            reset.append(key)
    return reset


# Optimisers whose update is exactly zero for a weight whose gradient, value and state are zero
# (their rules: every term is a product with g, w or a state that stays 0).
GRADS_ONLY_EXACT = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
    torch.optim.Adagrad, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam,
)


def grads_only_is_exact(optimizer: torch.optim.Optimizer) -> bool:
    """Whether masking gradients alone keeps masked weights exactly zero under ``optimizer``.

    True only for the torch optimisers listed in ``GRADS_ONLY_EXACT`` themselves (a subclass
    may change the rule). For each of them, with every option (momentum, Nesterov, coupled
    weight decay, ``maximize``, amsgrad, centred RMSprop, Adagrad's lr decay), the update of a
    weight whose value, gradient and state are zero is zero: every term is a multiple of g, w
    or a zero state (Adamax divides a zero moment by eps). Anything else gets both passes.
    """
    return type(optimizer) in GRADS_ONLY_EXACT
