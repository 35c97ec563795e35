"""Grids of numbers written as text: ``START:STOP:N`` or ``A,B,C`` (command-line options).

Used for the sparsities of the signal-propagation study (``--sparsities``) and the alphas of a
linear path (``--alphas``). Imports only the standard library; errors are one-line
``ValueError``s that the callers turn into user errors.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_grid"]

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_COUNT = re.compile(r"\+?\d+")


def _number(text: str, name: str, whole: str) -> float:
    t = text.strip()
    if not _NUMBER.fullmatch(t):
        raise ValueError(f"{name}: bad number {t!r} in {whole!r}; use START:STOP:N or A,B,C")
    value = float(t)
    if not math.isfinite(value):  # e.g. 1e999
        raise ValueError(f"{name}: {t!r} in {whole!r} is not finite")
    return value


MAX_POINTS = 100_000
"""The most points a grid may have (each point is a model evaluation or more)."""


def parse_grid(text: str, name: str, *, increasing: bool = False) -> list[float]:
    """Parse ``"START:STOP:N"`` or ``"A,B,C"`` (one number is a list of one) into floats.

    ``START:STOP:N``: N evenly spaced values from START to STOP, both included:
    v_i = START + (STOP - START) * i / (N - 1), i = 0 .. N - 1, the inner ones rounded to 12
    decimals (so ``"0:0.5:6"`` gives 0.1, not 0.1000000000000001, and ``"-0.2:1.2:29"`` holds
    0.0 and 1.0 exactly); v_0 = START and v_{N-1} = STOP as written. N = 1 needs
    START == STOP. ``increasing=True`` (the alphas of a path) also needs START < STOP when
    N >= 2. ``A,B,C``: the numbers as written.

    Numbers are decimal literals (``0.5``, ``.5``, ``5e-1``; no ``nan``/``inf``); a -0.0 is
    returned as 0.0. Anything else raises a one-line ValueError that starts with ``name``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}: empty grid {text!r}; use START:STOP:N or A,B,C")
    whole = text.strip()
    if ":" not in whole:
        return [_number(t, name, whole) + 0.0 for t in whole.split(",")]
    parts = whole.split(":")
    if len(parts) != 3:
        raise ValueError(f"{name}: {whole!r} must be START:STOP:N (or a list A,B,C)")
    start, stop = _number(parts[0], name, whole), _number(parts[1], name, whole)
    n_text = parts[2].strip()
    if not _COUNT.fullmatch(n_text) or int(n_text) < 1:
        raise ValueError(f"{name}: N in {whole!r} must be a positive integer, got {n_text!r}")
    n = int(n_text)
    if n > MAX_POINTS:
        raise ValueError(f"{name}: N in {whole!r} is {n}; at most {MAX_POINTS} points")
    if n == 1:
        if start != stop:
            raise ValueError(f"{name}: {whole!r} has N = 1 but START != STOP")
        return [start + 0.0]
    if increasing and not start < stop:
        raise ValueError(f"{name}: {whole!r} must have START < STOP")
    inner = [round(start + (stop - start) * i / (n - 1), 12) for i in range(1, n - 1)]
    return [v + 0.0 for v in (start, *inner, stop)]
