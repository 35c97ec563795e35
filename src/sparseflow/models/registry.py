"""The model registry: names -> specs, option checking and ``build_model``."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from .activations import ACTIVATIONS, activation_names
from .errors import ModelError
from .lenet import LENET5_WIDTHS, LeNet5
from .mlp import MLP
from .resnet import RESNET_WIDTHS, CifarResNet, WideResNet, wrn_widths
from .vgg import VGG, VGG_STAGE_DEPTHS, VGG_WIDTHS

__all__ = ["MODELS", "ModelSpec", "Options", "build_model", "default_widths", "model_names"]

MLP_DEPTH = 2
MLP_WIDTH = 256
LENET300_WIDTHS = (300, 100)
WRN_DEPTH = 16
WRN_WIDTH = 4


@dataclass(frozen=True)
class Options:
    """Resolved build options (model defaults filled in, already checked against the spec)."""

    widths: tuple[int, ...] | None = None
    depth: int | None = None
    width: int | None = None
    activation: str = "relu"
    batchnorm: bool = False
    skip: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture.

    ``options`` lists the free sizing options it accepts (``widths``, ``depth``, ``width``);
    ``activation`` is accepted by every model. ``batchnorm`` is the default BatchNorm setting
    and ``batchnorm_fixed`` says it cannot be changed; ``skip`` is ``None`` when skip
    connections are optional (default off), else the only allowed value.
    Calling a spec builds the model like ``build_model(spec.name, ...)``.
    """

    name: str
    summary: str
    build: Callable[[tuple[int, ...], int, Options], nn.Module]
    widths: Callable[[tuple[int, ...], int, Options], list[int]]
    options: tuple[str, ...] = ("widths",)
    batchnorm: bool = False
    batchnorm_fixed: bool = False
    skip: bool | None = False

    def option_names(self) -> list[str]:
        """All option names this model accepts with a value of the caller's choice."""
        names = [*self.options, "activation"]
        if not self.batchnorm_fixed:
            names.append("batchnorm")
        if self.skip is None:
            names.append("skip")
        return names

    def __call__(self, input_shape: Sequence[int], num_classes: int, **options) -> nn.Module:
        """Build this model; see ``build_model`` for the options."""
        return build_model(self.name, input_shape, num_classes, **options)


# --- per-model widths and builders ---------------------------------------------------------


def _mlp_widths(shape: tuple[int, ...], classes: int, o: Options) -> list[int]:
    if o.widths is not None:
        if o.width is not None:
            raise ModelError("mlp: give either widths or width (with depth), not both")
        if o.depth is not None and o.depth != len(o.widths):
            raise ModelError(f"mlp: depth={o.depth} disagrees with {len(o.widths)} widths")
        return list(o.widths)
    depth = MLP_DEPTH if o.depth is None else o.depth
    return [MLP_WIDTH if o.width is None else o.width] * depth


def _build_mlp(shape: tuple[int, ...], classes: int, o: Options) -> nn.Module:
    widths = _mlp_widths(shape, classes, o)
    return MLP(shape, widths, classes, activation=o.activation, batchnorm=o.batchnorm, skip=o.skip)


def _fixed_widths(default: Sequence[int], n: int | None) -> Callable:
    def widths(shape: tuple[int, ...], classes: int, o: Options) -> list[int]:
        if o.widths is None:
            return list(default)
        if n is not None and len(o.widths) != n:
            raise ModelError(f"widths must have {n} entries, got {len(o.widths)}: {list(o.widths)}")
        return list(o.widths)

    return widths


_lenet300_widths = _fixed_widths(LENET300_WIDTHS, None)
_lenet5_widths = _fixed_widths(LENET5_WIDTHS, 4)
_vgg_widths = _fixed_widths(VGG_WIDTHS, 5)
_resnet_widths = _fixed_widths(RESNET_WIDTHS, 3)


def _build_lenet300(shape: tuple[int, ...], classes: int, o: Options) -> nn.Module:
    widths = _lenet300_widths(shape, classes, o)
    return MLP(shape, widths, classes, activation=o.activation, batchnorm=o.batchnorm)


def _build_lenet5(shape: tuple[int, ...], classes: int, o: Options) -> nn.Module:
    widths = _lenet5_widths(shape, classes, o)
    return LeNet5(shape, classes, widths, activation=o.activation, batchnorm=o.batchnorm)


def _vgg_builder(name: str) -> Callable:
    def build(shape: tuple[int, ...], classes: int, o: Options) -> nn.Module:
        widths = _vgg_widths(shape, classes, o)
        return VGG(
            shape,
            classes,
            VGG_STAGE_DEPTHS[name],
            widths,
            activation=o.activation,
            batchnorm=o.batchnorm,
        )

    return build


def _resnet_builder(blocks_per_stage: int) -> Callable:
    def build(shape: tuple[int, ...], classes: int, o: Options) -> nn.Module:
        widths = _resnet_widths(shape, classes, o)
        return CifarResNet(shape, classes, blocks_per_stage, widths, activation=o.activation)

    return build


def _wrn_widths(shape: tuple[int, ...], classes: int, o: Options) -> list[int]:
    if o.widths is not None:
        if o.width is not None:
            raise ModelError("wrn: give either widths or width (the factor k), not both")
        return _fixed_widths((), 4)(shape, classes, o)
    return wrn_widths(WRN_WIDTH if o.width is None else o.width)


def _build_wrn(shape: tuple[int, ...], classes: int, o: Options) -> nn.Module:
    widths = _wrn_widths(shape, classes, o)
    depth = WRN_DEPTH if o.depth is None else o.depth
    return WideResNet(shape, classes, depth, widths, activation=o.activation)


_RESNET = {"batchnorm": True, "batchnorm_fixed": True, "skip": True}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "mlp",
            f"MLP, depth x width hidden layers (default {MLP_DEPTH} x {MLP_WIDTH})",
            _build_mlp,
            _mlp_widths,
            options=("widths", "depth", "width"),
            skip=None,
        ),
        ModelSpec("lenet300", "LeNet-300-100 MLP", _build_lenet300, _lenet300_widths),
        ModelSpec("lenet5", "LeNet5 convnet (6, 16, 120, 84)", _build_lenet5, _lenet5_widths),
        ModelSpec("vgg11", "VGG-11 for CIFAR, one Linear head", _vgg_builder("vgg11"), _vgg_widths),
        ModelSpec("vgg16", "VGG-16 for CIFAR, one Linear head", _vgg_builder("vgg16"), _vgg_widths),
        ModelSpec(
            "resnet20", "CIFAR ResNet-20 (option A)", _resnet_builder(3), _resnet_widths, **_RESNET
        ),
        ModelSpec(
            "resnet32", "CIFAR ResNet-32 (option A)", _resnet_builder(5), _resnet_widths, **_RESNET
        ),
        ModelSpec(
            "wrn",
            f"Wide ResNet WRN-depth-width (default {WRN_DEPTH}-{WRN_WIDTH})",
            _build_wrn,
            _wrn_widths,
            options=("widths", "depth", "width"),
            **_RESNET,
        ),
    )
}
"""Registered architectures by name."""


def model_names() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(MODELS)


# --- option checking -----------------------------------------------------------------------


def _spec(name: str) -> ModelSpec:
    if not isinstance(name, str) or name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    return MODELS[name]


def _positive_int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _unsupported(spec: ModelSpec, what: str) -> ModelError:
    return ModelError(
        f"model {spec.name!r} does not support {what}; "
        f"its options: {', '.join(spec.option_names())}"
    )


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ModelError(
            f"input_shape must be a tuple of positive ints, got {input_shape!r}"
        ) from None
    if not shape:
        raise ModelError("input_shape must not be empty")
    return tuple(_positive_int("each input_shape entry", d) for d in shape)


def resolve_options(
    name: str,
    *,
    widths: Sequence[int] | None = None,
    depth: int | None = None,
    width: int | None = None,
    activation: str = "relu",
    batchnorm: bool | None = None,
    skip: bool | None = None,
) -> tuple[ModelSpec, Options]:
    """Check options against model ``name``'s spec and fill in its defaults."""
    spec = _spec(name)
    given = {"widths": widths, "depth": depth, "width": width}
    for opt, value in given.items():
        if value is not None and opt not in spec.options:
            raise _unsupported(spec, f"option {opt!r}")
    if widths is not None:
        bad = ModelError(f"widths must be a non-empty sequence of ints, got {widths!r}")
        if isinstance(widths, (str, bytes)):
            raise bad
        try:
            widths = tuple(widths)
        except TypeError:
            raise bad from None
        if not widths:
            raise bad
        widths = tuple(_positive_int("each width", w) for w in widths)
    if depth is not None:
        depth = _positive_int("depth", depth)
    if width is not None:
        width = _positive_int("width", width)
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ModelError(
            f"unknown activation {activation!r}; valid activations: {', '.join(activation_names())}"
        )
    if batchnorm is None:
        batchnorm = spec.batchnorm
    elif spec.batchnorm_fixed and bool(batchnorm) != spec.batchnorm:
        raise _unsupported(spec, f"batchnorm={batchnorm} (BatchNorm is built in)")
    if skip is None:
        skip = bool(spec.skip)
    elif spec.skip is not None and bool(skip) != spec.skip:
        reason = "skip connections are built in" if spec.skip else "it has no skip connections"
        raise _unsupported(spec, f"skip={skip} ({reason})")
    opts = Options(widths, depth, width, activation.lower(), bool(batchnorm), bool(skip))
    return spec, opts


# --- public entry points -------------------------------------------------------------------


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    widths: Sequence[int] | None = None,
    depth: int | None = None,
    width: int | None = None,
    activation: str = "relu",
    batchnorm: bool | None = None,
    skip: bool | None = None,
) -> nn.Module:
    """Build registered model ``name`` for inputs of shape ``input_shape`` (no batch dim).

    ``widths`` overrides the model's hidden widths/channels (see ``docs/models.md``);
    ``depth`` and ``width`` size ``mlp`` (hidden layers, units) and ``wrn`` (d, k).
    ``batchnorm=None`` and ``skip=None`` mean the model's default. Anything a model does not
    support raises ``ModelError``.
    """
    shape = _check_shape(input_shape)
    _positive_int("num_classes", num_classes)
    spec, opts = resolve_options(
        name,
        widths=widths,
        depth=depth,
        width=width,
        activation=activation,
        batchnorm=batchnorm,
        skip=skip,
    )
    return spec.build(shape, num_classes, opts)


def default_widths(name: str, input_shape: Sequence[int], num_classes: int, **options) -> list[int]:
    """The widths ``build_model(name, input_shape, num_classes, **options)`` would use."""
    shape = _check_shape(input_shape)
    spec, opts = resolve_options(name, **options)
    return spec.widths(shape, num_classes, opts)


def with_widths(options: dict, widths: Sequence[int]) -> dict:
    """Return ``options`` with ``widths`` set and the conflicting ``width`` removed."""
    out = {k: v for k, v in options.items() if k != "width"}
    out["widths"] = list(widths)
    return out
