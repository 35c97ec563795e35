"""Architectures by name: MLPs, LeNet-300-100, LeNet5, VGG, CIFAR ResNets and WRNs.

``build_model("lenet5", (1, 28, 28), 10)`` builds a plain ``nn.Module``; ``MODELS`` holds the
registered specs, ``sizing`` the same-capacity helpers. See ``docs/models.md``.
"""

from .activations import ACTIVATIONS, SReLU, activation_names, make_activation
from .errors import ModelError
from .lenet import LeNet5
from .mlp import MLP, DenseBlock
from .registry import MODELS, ModelSpec, build_model, default_widths, model_names
from .resnet import CifarResNet, WideResNet
from .sizing import (
    dense_weight_count,
    scsdc_layer_counts,
    scsdc_layer_densities,
    small_dense_widths,
    weight_count,
)
from .vgg import VGG

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODELS",
    "VGG",
    "CifarResNet",
    "DenseBlock",
    "LeNet5",
    "ModelError",
    "ModelSpec",
    "SReLU",
    "WideResNet",
    "activation_names",
    "build_model",
    "default_widths",
    "dense_weight_count",
    "make_activation",
    "model_names",
    "scsdc_layer_counts",
    "scsdc_layer_densities",
    "small_dense_widths",
    "weight_count",
]
