"""What a dataset is and whether it is here, without reading it.

:func:`dataset_info` gives a registered dataset's input shape, classes and split sizes from
what is known of it (no file is read, nothing is generated), so that the cost of a run can be
estimated before its data exist. :func:`dataset_status` says whether a dataset can be loaded
now: its files are in a searched folder, it ships with an installed package or is generated,
or it is missing (and would be downloaded, or cannot be). :func:`ensure_dataset` makes it so
before anything else runs: it finds the files, downloads the missing ones when downloading is
on (the same lookup and download as :func:`~sparseflow.data.load_dataset`), and otherwise
raises the loader's one-line :class:`DataError` (the dataset, the folders searched, how to
provide the files).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseflow.factories import is_reference

from .cifar import LAYOUTS
from .dataset import heldout_sizes
from .download import DEFAULT_TIMEOUT, mirrors_for
from .errors import DataError
from .paths import candidate_dirs, download_dir
from .registry import IDX_FILES, _cifar_present, _how_to_get, _idx_present, _locate, _Request

#: registered datasets' input shape, classes, training and test examples (before held-out
#: batches are carved), as the loaders produce them (docs/data.md)
KNOWN: dict[str, tuple[tuple[int, ...], int, int, int]] = {
    "fashion_mnist": ((1, 28, 28), 10, 60000, 10000),
    "mnist": ((1, 28, 28), 10, 60000, 10000),
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
    "cifar100": ((3, 32, 32), 100, 50000, 10000),
}
#: datasets generated or shipped with a package: the package to import (None: built in)
PACKAGED: dict[str, str | None] = {"digits": "sklearn", "mnist1d": "mnist1d",
                                   "synthetic": None}


@dataclass(frozen=True)
class DatasetInfo:
    """What a run sees of a dataset: ``input_shape``, ``num_classes``, ``n_train`` (training
    examples after the held-out batches are carved out) and ``n_test``."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    n_train: int
    n_test: int


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be loaded now: ``state`` is ``present`` (its files were found
    in ``where``), ``packaged`` (generated, or shipped with an installed package), ``download``
    (missing; would be downloaded into ``where``), ``missing`` (cannot be loaded: ``message``
    says why and how to provide it) or ``own`` (a dataset of one's own, not checked beyond
    its module being importable); ``message`` is one line."""

    name: str
    state: str
    where: str
    message: str

    @property
    def ok(self) -> bool:
        """Whether the dataset is here (or generated) without a download."""
        return self.state in ("present", "packaged", "own")


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def dataset_info(name: str, *, heldout: Sequence[int] | int = (1000,),
                 **kw: Any) -> DatasetInfo | None:
    """The shape and sizes of registered dataset ``name`` as :func:`load_dataset` with the
    same ``heldout`` and options would give them, known without reading a file; None when
    they cannot be known without loading (a dataset of one's own, mnist1d with options). Held-
    out batches that take the whole training set are the loader's :class:`DataError`."""
    key, sizes = _key(name), heldout_sizes(heldout)
    carved = sum(sizes)
    if is_reference(str(name)):
        return None
    whole: tuple[tuple[int, ...], int, int, int] | None = None
    if key in KNOWN:
        whole = KNOWN[key]
    elif key == "digits":
        n_test = int(kw.get("n_test", 297))
        whole = ((1, 8, 8), 10, 1797 - n_test, n_test)
    elif key == "mnist1d" and not kw:
        whole = ((40,), 10, 4000, 1000)
    if whole is not None:
        shape, classes, n_train, n_test = whole
        if carved >= n_train:  # the loader's own check (carve_heldout)
            raise DataError(f"held-out batches {sizes} need {carved} examples but {key} has "
                            f"only {n_train} training examples")
        return DatasetInfo(key, shape, classes, n_train - carved, n_test)
    if key == "synthetic":
        shape = tuple(int(s) for s in kw.get("input_shape", (20,)))
        return DatasetInfo(key, shape, int(kw.get("num_classes", 4)),
                           int(kw.get("n_train", 512)),
                           int(kw.get("n_test", 256)))
    return None


def _files(key: str) -> tuple[Sequence[str], Callable[[Path, str], Path | None]]:
    if key in LAYOUTS:
        return (LAYOUTS[key].archive,), _cifar_present
    return IDX_FILES, _idx_present


def _found(key: str, root: str | os.PathLike | None) -> Path | None:
    """The first searched folder holding every file of ``key``, or None."""
    files, present = _files(key)
    for folder in candidate_dirs(key, root):
        if all(present(folder, f) for f in files):
            return folder
    return None


def dataset_status(name: str, *, root: str | os.PathLike | None = None,
                   download: bool = True) -> DatasetStatus:
    """Whether dataset ``name`` can be loaded with ``root`` and ``download`` as
    :func:`load_dataset` takes them; reads and writes nothing (no download is tried)."""
    key = _key(name)
    if is_reference(str(name)):
        module = str(name).split(":", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return DatasetStatus(str(name), "missing", module, f"dataset {name}: module "
                                 f"{module} is not importable")
        return DatasetStatus(str(name), "own", module, f"dataset {name}: a dataset of one's "
                             "own (its module imports; the data it reads is not checked)")
    if key in PACKAGED:
        package = PACKAGED[key]
        if package is None or importlib.util.find_spec(package) is not None:
            return DatasetStatus(key, "packaged", package or "sparseflow",
                                 f"{key}: " + (f"from the installed {package} package"
                                               if package else "generated"))
        return DatasetStatus(key, "missing", package, f"dataset {key} needs the {package} "
                             "package: pip install 'sparseflow[datasets]'")
    if key not in KNOWN:
        return DatasetStatus(key, "missing", "", f"unknown dataset {name!r}")
    folder = _found(key, root)
    if folder is not None:
        return DatasetStatus(key, "present", str(folder), f"{key}: files in {folder}")
    files, _ = _files(key)
    looked = ", ".join(map(str, candidate_dirs(key, root)))
    how = _how_to_get(key, files, root)
    if download:
        dest = download_dir(key, root)
        return DatasetStatus(key, "download", str(dest), f"{key} not found (looked in "
                             f"{looked}); would be downloaded from "
                             f"{' or '.join(mirrors_for(key))} into {dest} before any run "
                             f"starts; or {how}")
    return DatasetStatus(key, "missing", looked, f"{key} not found (looked in {looked}); "
                         f"downloading is off (data.download=false); {how}")


def ensure_dataset(name: str, *, root: str | os.PathLike | None = None,
                   download: bool = True, timeout: float = DEFAULT_TIMEOUT) -> DatasetStatus:
    """Make dataset ``name`` loadable now: find its files, download the missing ones when
    ``download`` (checksums verified, as :func:`load_dataset` does), else raise the one-line
    :class:`DataError` naming the dataset, where it looked and how to provide it. Decodes
    nothing."""
    status = dataset_status(name, root=root, download=download)
    if status.ok:
        return status
    if status.state == "missing":
        raise DataError(status.message)
    key = _key(name)
    files, present = _files(key)
    try:
        _locate(_Request(key, root, True, 0), files, present, None, timeout)
    except DataError as e:
        raise DataError(" ".join(str(e).split())) from None
    return dataset_status(key, root=root, download=False)
