"""Signal propagation at initialisation: output std of a sparse net vs sparsity.

docs/science.md section 4 (last bullet), section 7 claim 1 and section 12; the
signal-propagation check of Evci, Ioannou, Keskin, Dauphin, "Gradient Flow in Sparse Neural
Networks and How Lottery Tickets Win", AAAI 2022, Fig. 3 of the accompanying blog post,
colab ``MnistProp.ipynb``).

The experiment. Build a network, draw a random mask at sparsity s, initialise the active
weights with one of three inits (``sparsity.initialize_``):

- ``dense``: the model's own (PyTorch default) init, masked: Var(w) = v_dense;
- ``liu`` (Liu et al. 2019): Var(w) = v_dense / d_l, d_l the layer density;
- ``sparse`` (Evci et al. 2022): Var(w_ij) = gain2 / max(1, f_j), f_j the active fan-in of
  output unit j (He: gain2 = 2),

feed x ~ N(0, I) and read sigma = std(f(x)) over every entry of the (batch, classes) output.
For a ReLU net the second moment of layer l's pre-activation is
E[z_l^2] = f_j Var(w) E[a_{l-1}^2] with E[a^2] = E[z^2] / 2, so the per-layer factor is
f_j Var(w) / 2: d_l * (dense factor) for the dense init (the signal decays as prod_l d_l),
about 1 for ``sparse`` with gain2 = 2 whatever the mask, and the dense factor for ``liu``
only when every unit has the layer's mean fan-in.

The paper's masks give units very different fan-ins (``heterogeneous_masks``), which is
where ``liu`` (one scale per layer) and ``sparse`` (one per unit) differ. Claim 1: with the
dense init the output signal vanishes as s grows; the sparsity-aware init keeps it near its
dense value up to about s = 0.8.

Departures from the colab, all options: the colab is Keras with zero biases (Keras'
default); PyTorch's default biases are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and would put a
floor under the output std (the last layer's biases differ across classes), so
``signal_propagation`` zeroes the biases by default (``zero_bias=True``). The colab's dense
init is Keras' Glorot-uniform, Var = 2 / (fan_in + fan_out); ours is PyTorch's, Var =
1 / (3 fan_in). The colab's input is 28x28x3; the default here is (1, 28, 28).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from sparseflow.models import build_model
from sparseflow.sparsity import (
    MaskSet,
    initialize_,
    kept_count,
    layer_counts,
    select_weights,
    topk_mask,
)

__all__ = [
    "BASE_INITS",
    "INITS",
    "MASK_KINDS",
    "SCOPES",
    "heterogeneous_masks",
    "output_std",
    "signal_propagation",
]

INITS = ("dense", "liu", "sparse")
BASE_INITS = ("model", "he")
MASK_KINDS = ("heterogeneous", "uniform")
SCOPES = ("layer", "global")


def _unit_scores(shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    """s[j, ...] = u * (j + 1), u ~ U(0, 1) i.i.d.: scores of output unit j ~ U(0, j + 1)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    scale = torch.arange(1, shape[0] + 1, device=device, dtype=torch.float64)
    return u * scale.view(-1, *([1] * (len(shape) - 1)))


def heterogeneous_masks(
    params: Mapping[str, Tensor],
    sparsity: float,
    generator: torch.Generator | None = None,
    *,
    scope: str = "layer",
) -> dict[str, Tensor]:
    """Random masks whose per-unit fan-in grows with the unit index (the paper's masks).

    Per weight W (out, in, *kernel) the scores are s[j, ...] = u[j, ...] * (j + 1) with
    u ~ U(0, 1) i.i.d., i.e. the scores of output unit j are U(0, j + 1) (docs/science.md
    section 12: per output unit k the values are rand ~ U(0, k + 1), then thresholded). Keeping the
    scores above a threshold t keeps a weight of unit j with probability
    max(0, 1 - t / (j + 1)): low units get few inputs (none once j + 1 <= t), high units
    many, so fan-ins differ strongly inside a layer. For a layer with many units and
    density d = 1 - s, a fraction r of the units has no input at all, where
    1 - r + r ln r = d (from d = (1/n) integral_t^n (1 - t/x) dx, r = t / n): r = 0.19 at
    s = 0.5, 0.44 at s = 0.8, 0.59 at s = 0.9. A dead unit feeds zeros to the next layer,
    which the fan-in count f_j of the sparsity-aware init does not see, so even that init
    loses signal on these masks (about a factor 1 - r in second moment per layer).

    scope="layer" (default): per layer keep the top ``kept_count(1 - s, numel_l)`` =
    round((1 - s) * numel_l) scores (halves up, ``sparsity.counts``), so each
    layer has exactly sparsity s (up to rounding). scope="global": one threshold over the
    scores of all layers together (the colab's "thresholded globally"), keeping
    round((1 - s) * sum_l numel_l) weights; then the per-layer sparsity is not controlled:
    a layer with few output units (scores at most its unit count) loses far more than a
    layer with many, and may lose every weight.

    Ties go to the lower flat index (``sparsity.topk_mask``; for "global", in the order of
    ``params`` with each layer flattened row-major). Returns ``{name: bool mask}``.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    if not 0.0 <= sparsity <= 1.0 or math.isnan(sparsity):
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    for name, p in params.items():
        if p.dim() < 2:
            raise ValueError(f"{name!r} has shape {tuple(p.shape)}; masks need (out, in, ...)")
    scores = {name: _unit_scores(p.shape, generator) for name, p in params.items()}
    if scope == "layer":
        masks = {n: topk_mask(s, kept_count(1.0 - sparsity, s.numel())) for n, s in scores.items()}
    else:
        flat = torch.cat([s.reshape(-1) for s in scores.values()]) if scores else torch.empty(0)
        keep = topk_mask(flat, kept_count(1.0 - sparsity, flat.numel()))
        masks, start = {}, 0
        for name, s in scores.items():
            masks[name] = keep[start : start + s.numel()].view(s.shape)
            start += s.numel()
    return {n: m.to(params[n].device) for n, m in masks.items()}


def _model_place(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def output_std(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch: int = 500,
    generator: torch.Generator | None = None,
    relu_last: bool = False,
) -> float:
    """sigma = std(f(x)) over every output entry; x ~ N(0, I), shape (batch, *input_shape).

    Population std (np.std's convention): sigma^2 = mean((y - mean(y))^2) over every entry
    of y = f(x), the pre-softmax logits. ``relu_last`` reads std(max(0, y)) instead (the
    colab's ReLU after the last dense layer). The model runs in eval mode under no_grad;
    its training flag is restored afterwards. Inputs are drawn on the CPU from
    ``generator`` (so the same seed gives the same inputs on every device) and moved to the
    model's device and dtype.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    device, dtype = _model_place(model)
    x = torch.randn((batch, *input_shape), generator=generator, dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        model.train(was_training)
    if relu_last:
        y = torch.relu(y)
    y = y.detach().to(torch.float64)
    return float(y.std(correction=0)) if y.numel() else 0.0


def _check_sparsity(s: float) -> float:
    s = float(s)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {s}")
    return s


def _he_normal_(model: nn.Module, gain2: float) -> None:
    """W ~ N(0, gain2 / fan_in) for every Linear/Conv weight, fan_in = numel / out (global RNG)."""
    with torch.no_grad():
        for w in select_weights(model).values():
            fan_in = w[0].numel()
            w.normal_(0.0, math.sqrt(gain2 / fan_in))


def _draw_masks(
    params: dict[str, nn.Parameter],
    sparsity: float,
    kind: str,
    distribution: str,
    scope: str,
    generator: torch.Generator,
) -> MaskSet:
    if kind == "heterogeneous":
        return MaskSet(params, heterogeneous_masks(params, sparsity, generator, scope=scope))
    counts = layer_counts({n: p.shape for n, p in params.items()}, sparsity, distribution)
    return MaskSet.random(params, counts, generator)


def signal_propagation(
    model_name: str,
    sparsities: Sequence[float],
    inits: Sequence[str] = INITS,
    *,
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    masks: str = "heterogeneous",
    distribution: str = "uniform",
    scope: str = "layer",
    repeats: int = 3,
    batch: int = 500,
    seed: int = 0,
    gain2: float = 2.0,
    relu_last: bool = True,
    zero_bias: bool = True,
    base_init: str = "model",
    model_options: Mapping[str, object] | None = None,
) -> list[dict]:
    """Output std at init vs sparsity for each init (docs/science.md section 7, claim 1).

    For every init, sparsity s and repeat r = 0 .. repeats - 1:

    1. ``torch.manual_seed(seed + r)``; a fresh ``build_model(model_name, input_shape,
       num_classes, **model_options)`` with its own default init (``base_init="model"``)
       or, with ``base_init="he"``, every Linear/Conv weight redrawn as N(0, gain2 / fan_in)
       (dense fan-in = numel / out); biases zeroed if ``zero_bias`` (the colab's Keras
       default; see the module docstring). The base init is what ``dense`` masks and
       ``liu`` rescales; ``sparse`` redraws the active weights anyway;
    2. masks over ``select_weights(model)`` (all Linear/Conv weights): ``"heterogeneous"``
       = ``heterogeneous_masks(..., scope=scope)`` (the paper's), ``"uniform"`` = uniformly
       random positions with per-layer counts from ``layer_counts(shapes, s,
       distribution)`` (uniform / er / erk);
    3. the init: ``initialize_(masks, "dense" | "liu")`` or ``initialize_(masks, "sparse",
       mode="fan_in", distribution="normal", gain2=gain2)``, i.e. Var = gain2 / f_j;
    4. sigma = ``output_std`` on ``batch`` inputs x ~ N(0, I). With ``relu_last`` the
       model is wrapped as ``nn.Sequential(model, nn.ReLU())``, the colab's ReLU after the
       last dense layer, so sigma = std(max(0, logits)).

    Masks, sparse-init draws and inputs come from three generators seeded from
    ``seed + r`` alone, so at a given (s, r) every init sees the same mask and the same
    inputs, and ``dense`` and ``liu`` the same underlying weights (common random numbers).
    Returns one row per (init, s), in that order: ``{"init", "sparsity", "std_mean",
    "std_min", "std_max", "repeats", "stds"}`` with mean / min / max of sigma over the repeats
    and ``stds`` the sigma of each repeat (in repeat order).
    """
    if masks not in MASK_KINDS:
        raise ValueError(f"unknown masks {masks!r}; valid: {', '.join(MASK_KINDS)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    bad = [i for i in inits if i not in INITS]
    if bad:
        raise ValueError(f"unknown inits {bad}; valid: {', '.join(INITS)}")
    if base_init not in BASE_INITS:
        raise ValueError(f"unknown base_init {base_init!r}; valid: {', '.join(BASE_INITS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    levels = [_check_sparsity(s) for s in sparsities]
    options = dict(model_options or {})
    rows = []
    for init in inits:
        for s in levels:
            stds = []
            for r in range(repeats):
                torch.manual_seed(seed + r)
                model = build_model(model_name, input_shape, num_classes, **options)
                if base_init == "he":
                    _he_normal_(model, gain2)
                if zero_bias:
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if name.endswith("bias"):
                                p.zero_()
                base = torch.Generator().manual_seed(seed + r)
                g_mask, g_init, g_input = (
                    torch.Generator().manual_seed(int(v))
                    for v in torch.randint(0, 2**62, (3,), generator=base)
                )
                params = select_weights(model)
                maskset = _draw_masks(params, s, masks, distribution, scope, g_mask)
                if init == "sparse":
                    initialize_(
                        maskset,
                        "sparse",
                        mode="fan_in",
                        distribution="normal",
                        gain2=gain2,
                        generator=g_init,
                    )
                else:
                    initialize_(maskset, init)
                net = nn.Sequential(model, nn.ReLU()) if relu_last else model
                stds.append(output_std(net, input_shape, batch=batch, generator=g_input))
            rows.append(
                {
                    "init": init,
                    "sparsity": s,
                    "std_mean": sum(stds) / len(stds),
                    "std_min": min(stds),
                    "std_max": max(stds),
                    "repeats": repeats,
                    "stds": stds,
                }
            )
    return rows


def by_init(rows: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    groups: dict[str, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(str(row["init"]), []).append(row)
    for group in groups.values():
        group.sort(key=lambda r: float(r["sparsity"]))
    return groups
