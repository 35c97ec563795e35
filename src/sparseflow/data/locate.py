"""Where a dataset's files are: the first searched folder that holds all of them, or the
download folder once the missing ones are fetched (checksum-verified, ``data/download.py``).

:func:`_locate` is shared by the loaders of ``data/registry.py`` and by
``data/availability.py``; ``_Request`` is a loader's request (name, root, download, held-out
total). ``data/registry.py`` imports these names from here and re-exports them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cifar import LAYOUTS
from .download import DownloadError, fetch
from .errors import DataError
from .paths import candidate_dirs, download_dir


@dataclass(frozen=True)
class _Request:
    name: str
    root: str | os.PathLike | None
    download: bool
    heldout_total: int


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _idx_present(folder: Path, filename: str) -> Path | None:
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if _exists(candidate):
            return candidate
    return None


def _cifar_present(folder: Path, filename: str) -> Path | None:
    layout = next(lay for lay in LAYOUTS.values() if lay.archive == filename)
    for candidate in (folder / filename, folder / layout.folder):
        if _exists(candidate):
            return candidate
    return None


def _how_to_get(name: str, files: Sequence[str], root: str | os.PathLike | None) -> str:
    if root is not None:
        return f"put {', '.join(files)} into {Path(root).expanduser()}"
    how = f"put {', '.join(files)} into $SPARSEFLOW_DATA/{name}/ (or pass root=)"
    if name == "fashion_mnist":
        how = f"apt-get install dataset-fashion-mnist, or {how}"
    return how


def _locate(
    req: _Request,
    files: Sequence[str],
    present: Callable[[Path, str], Path | None],
    mirror: str | Sequence[str] | None,
    timeout: float,
) -> list[Path]:
    """Paths of ``files`` from the first folder holding all of them, downloading if allowed."""
    if req.root is not None:
        root = Path(req.root).expanduser()
        if _exists(root) and not root.is_dir():
            raise DataError(f"{req.name}: data root {root} is a file, not a folder")
        if not req.download and not _exists(root):
            raise DataError(f"{req.name}: data root {root} does not exist (downloading is off)")
    dirs = candidate_dirs(req.name, req.root)
    for folder in dirs:
        found = [present(folder, f) for f in files]
        if all(found):
            return found
    looked = f"{req.name} not found (looked in {', '.join(map(str, dirs))})"
    how = _how_to_get(req.name, files, req.root)
    if not req.download:
        raise DataError(f"{looked}; downloading is off; {how}")
    dest = download_dir(req.name, req.root)
    created = not _exists(dest)
    try:
        for f in files:
            if present(dest, f) is None:
                fetch(req.name, f, dest, mirror=mirror, timeout=timeout)
    except DownloadError as e:
        if created and _exists(dest) and not any(dest.iterdir()):
            dest.rmdir()  # leave no empty folder behind
        raise DataError(f"{looked}; download into {dest} failed: {e}; {how}") from e
    return [present(dest, f) for f in files]
