"""Where datasets are looked for, and where downloads go.

Lookup order for dataset ``name``:

1. ``root`` (the explicit argument), then ``root/<name>``; when ``root`` is given, nothing
   else is searched (the folder a user names is the one that is read);
2. ``$SPARSEFLOW_DATA/<name>``, then ``$SPARSEFLOW_DATA``;
3. ``~/.cache/sparseflow/<name>``;
4. system folders from :data:`SYSTEM_DIRS` (Debian's ``dataset-fashion-mnist``).

Downloads go to ``root`` if given, else ``$SPARSEFLOW_DATA/<name>`` if set, else the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SPARSEFLOW_DATA"

# Read-only folders filled by operating-system packages.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


def cache_dir(name: str) -> Path:
    """The per-user download cache for dataset ``name``: ``~/.cache/sparseflow/<name>``."""
    return Path.home() / ".cache" / "sparseflow" / name


def _env_dir() -> Path | None:
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def candidate_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """All folders searched for dataset ``name``, in lookup order, without duplicates
    (only ``root`` and ``root/<name>`` when ``root`` is given)."""
    dirs: list[Path] = []
    if root is not None:
        root = Path(root).expanduser()
        return [root, root / name]
    env = _env_dir()
    if env is not None:
        dirs += [env / name, env]
    dirs.append(cache_dir(name))
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def download_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder a download of dataset ``name`` is written to."""
    if root is not None:
        return Path(root).expanduser()
    env = _env_dir()
    return env / name if env is not None else cache_dir(name)
