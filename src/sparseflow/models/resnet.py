"""CIFAR ResNets (He et al. 2016, option-A shortcuts) and Wide ResNets (Zagoruyko & Komodakis)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .activations import make_activation
from .errors import ModelError

__all__ = ["RESNET_WIDTHS", "BasicBlock", "CifarResNet", "WideBlock", "WideResNet", "wrn_widths"]

RESNET_WIDTHS = (16, 32, 64)
"""Default channels of the three stages (the stem conv has ``widths[0]`` channels)."""


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _check_image(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ModelError(f"{name} needs input_shape (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


class BasicBlock(nn.Module):
    """Post-activation block ``act(bn(conv(act(bn(conv(x))))) + shortcut(x))``.

    Option-A shortcut (parameter-free): the identity, or, when the block changes shape,
    ``x[:, :, ::2, ::2]`` (for stride 2) zero-padded to the new channel count.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str) -> None:
        super().__init__()
        if c_out < c_in:
            raise ModelError(f"option-A shortcuts need non-decreasing widths, got {c_in}->{c_out}")
        self.stride = stride
        self.pad = c_out - c_in
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = make_activation(activation, c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = make_activation(activation, c_out)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The option-A shortcut: subsample spatially and zero-pad channels as needed."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual block."""
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR: ``conv3x3(w0)-BN-act``, three stages of ``n`` BasicBlocks with
    ``widths`` channels (stride 2 at the start of stages 2 and 3), global average pool, Linear.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        blocks_per_stage: int,
        widths: Sequence[int] = RESNET_WIDTHS,
        *,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c_in, _, _ = _check_image("resnet", input_shape)
        if len(widths) != 3:
            raise ModelError(f"resnet widths must have 3 entries (one per stage), got {widths}")
        self.widths = [int(c) for c in widths]
        self.conv1 = _conv3x3(c_in, self.widths[0])
        self.bn1 = nn.BatchNorm2d(self.widths[0])
        self.act1 = make_activation(activation, self.widths[0])
        blocks = []
        prev = self.widths[0]
        for stage, c in enumerate(self.widths):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(prev, c, stride, activation))
                prev = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to logits ``(N, num_classes)``."""
        x = self.blocks(self.act1(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def wrn_widths(width: int) -> list[int]:
    """Default WRN channels ``[16, 16k, 32k, 64k]`` (stem, then the three groups) for ``k``."""
    return [16, 16 * width, 32 * width, 64 * width]


class WideBlock(nn.Module):
    """Pre-activation block: ``o = act(bn(x))``; ``conv(act(bn(conv(o)))) + shortcut``.

    The shortcut is ``x`` when the shape is unchanged, else a 1x1 conv (stride ``stride``) of
    ``o``, as in the WRN paper's code.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = make_activation(activation, c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = make_activation(activation, c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        needs_proj = stride != 1 or c_in != c_out
        self.proj = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if needs_proj else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the pre-activation residual block."""
        o = self.act1(self.bn1(x))
        y = self.conv2(self.act2(self.bn2(self.conv1(o))))
        return y + (x if self.proj is None else self.proj(o))


class WideResNet(nn.Module):
    """WRN-d-k: ``conv3x3(16)``, three groups of ``(d - 4) / 6`` WideBlocks with 16k, 32k, 64k
    channels (stride 1, 2, 2), then ``BN-act``, global average pool, Linear. No dropout.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int,
        widths: Sequence[int],
        *,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c_in, _, _ = _check_image("wrn", input_shape)
        if depth < 10 or (depth - 4) % 6:
            raise ModelError(f"wrn depth must satisfy (depth - 4) % 6 == 0 and >= 10, got {depth}")
        if len(widths) != 4:
            raise ModelError(f"wrn widths must have 4 entries (stem, 3 groups), got {widths}")
        n = (depth - 4) // 6
        self.depth = depth
        self.widths = [int(c) for c in widths]
        self.conv1 = _conv3x3(c_in, self.widths[0])
        blocks = []
        prev = self.widths[0]
        for group, c in enumerate(self.widths[1:]):
            for i in range(n):
                stride = 2 if group > 0 and i == 0 else 1
                blocks.append(WideBlock(prev, c, stride, activation))
                prev = c
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(prev)
        self.act = make_activation(activation, prev)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` images to logits ``(N, num_classes)``."""
        x = self.act(self.bn(self.blocks(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))
