"""Sparse-training methods: each says when the topology changes and which scores drop and grow."""

from __future__ import annotations

METHODS: tuple[str, ...] = ("dense",)


def method_names() -> list[str]:
    """Names accepted by the ``method`` config field."""
    return list(METHODS)
