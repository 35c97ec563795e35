"""The ``sparseflow`` command: a thin layer that parses (:mod:`~sparseflow.cli.parser`), calls
the library and prints (:mod:`~sparseflow.cli.commands`)."""

from sparseflow.cli.commands import main
from sparseflow.cli.parser import build_parser

__all__ = ["build_parser", "main"]
