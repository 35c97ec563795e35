"""What can be checked of a command's paths and environment before it writes anything: the
run store's folder (``--root`` or the default), the ``--out`` file or folder, and the
``SPARSEFLOW_KERNELS`` setting of the commands that train or analyse. Each failure is a one-line
:class:`~sparseflow.errors.UserError`. :func:`sparseflow.cli.commands.main` calls
:func:`_check_args` before it runs a command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sparseflow.errors import UserError


def _check_path(path: Path, what: str, *, folder: bool) -> None:
    """``path`` can become a folder (``folder``) or a file: it is not the other kind, and no
    folder above it is a file. Checked before anything is written."""
    if path.exists() and path.is_dir() != folder:
        kind = "a file, not a folder" if folder else "a folder, expected a file"
        raise UserError(f"{what}: {path} is {kind}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{what}: {path}: {parent} is a file, not a folder")
            return


def _check_args(args: argparse.Namespace) -> None:
    """What can be checked of the paths and the environment before a command writes."""
    if "root" in vars(args):
        if args.root:
            _check_path(Path(args.root), "--root", folder=True)
        else:
            from sparseflow.store.paths import default_root

            home = os.environ.get("SPARSEFLOW_HOME")
            _check_path(default_root(), "$SPARSEFLOW_HOME" if home else
                        "--root (default ./sparseflow-runs)", folder=True)
    out = getattr(args, "out", None)
    if out and out != "-":
        # the analyses and the report write a folder, the others a file
        is_folder = args.command in ("analyze", "report")
        _check_path(Path(out), "--out", folder=is_folder)
    if args.command in ("run", "sweep", "scsdc", "demo", "reproduce", "analyze"):
        from sparseflow.sparsity.kernels import kernel_name

        try:
            kernel_name()  # SPARSEFLOW_KERNELS: a bad value is an error now, not mid-run
        except ValueError as e:
            raise UserError(str(e)) from None
