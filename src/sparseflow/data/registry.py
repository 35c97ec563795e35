"""``load_dataset``: find or fetch a dataset, normalise it, carve held-out batches.

Finding and fetching the files (``_locate`` and its helpers, the ``_Request`` of a loader) is
in ``data/locate.py``; those names are re-exported here."""

from __future__ import annotations

import inspect
import math
import os
import random
import types
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparseflow.factories import is_reference, load_factory

from .augment import RandomCrop
from .cifar import LAYOUTS, read_cifar
from .dataset import Augment, Dataset, carve_heldout, heldout_sizes
from .download import DEFAULT_TIMEOUT
from .errors import DataError
from .idx import read_idx
from .locate import (  # noqa: F401 (_how_to_get: re-exported, data/availability.py uses it)
    _cifar_present,
    _how_to_get,
    _idx_present,
    _locate,
    _Request,
)

# Per-channel (mean, std) of the training set in [0, 1] pixel units (see docs/data.md).
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "digits": ((0.3051,), (0.3750,)),
}

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_EXTRA_INSTALL = "pip install 'sparseflow[datasets]'"


@dataclass
class _Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


# ---------------------------------------------------------------- normalisation


def _normalise(images: np.ndarray, name: str, scale: float = 255.0) -> torch.Tensor:
    """``(images / scale - mean) / std`` per channel, as float32 ``(N, C, H, W)``."""
    mean, std = NORMALISATION[name]
    x = torch.from_numpy(images.astype(np.float32))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mul = torch.tensor([1.0 / (scale * s) for s in std]).reshape(shape)
    add = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).reshape(shape)
    return x.mul_(mul).add_(add)


def _labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


# ---------------------------------------------------------------- the loaders


def _read_mnist_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected uint8 images N x 28 x 28, got {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-D uint8 label array, got {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: labels outside 0..9")
    return images[:, None], labels


def _load_idx_dataset(
    req: _Request, *, mirror: str | Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> _Split:
    paths = _locate(req, IDX_FILES, _idx_present, mirror, timeout)
    x_train, y_train = _read_mnist_pair(paths[0], paths[1])
    x_test, y_test = _read_mnist_pair(paths[2], paths[3])
    return _Split(
        _normalise(x_train, req.name),
        _labels(y_train),
        _normalise(x_test, req.name),
        _labels(y_test),
        10,
    )


def _load_cifar(
    req: _Request, *, mirror: str | Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> _Split:
    layout = LAYOUTS[req.name]
    (path,) = _locate(req, (layout.archive,), _cifar_present, mirror, timeout)
    x_train, y_train, x_test, y_test = read_cifar(path, req.name)
    return _Split(
        _normalise(x_train, req.name),
        _labels(y_train),
        _normalise(x_test, req.name),
        _labels(y_test),
        layout.num_classes,
    )


def _load_digits(req: _Request, *, n_test: int = 297) -> _Split:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(f"dataset 'digits' needs scikit-learn: {_EXTRA_INSTALL}") from e
    digits = load_digits()
    images, labels = digits.images.reshape(-1, 1, 8, 8), digits.target
    if not 1 <= n_test < len(images):
        raise DataError(f"digits: n_test must be in 1..{len(images) - 1}, got {n_test}")
    cut = len(images) - n_test  # the last n_test examples are the test set
    return _Split(
        _normalise(images[:cut], "digits", 16.0),
        _labels(labels[:cut]),
        _normalise(images[cut:], "digits", 16.0),
        _labels(labels[cut:]),
        10,
    )


def _load_mnist1d(req: _Request, **options) -> _Split:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DataError(f"dataset 'mnist1d' needs the mnist1d package: {_EXTRA_INSTALL}") from e
    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # we only ever generate; get_dataset (which downloads) is never used
    unknown = sorted(set(options) - set(args))
    if unknown:
        valid = ", ".join(sorted(args))
        raise DataError(f"unknown option(s) {', '.join(unknown)} for mnist1d; valid: {valid}")
    args.update(options)
    states = random.getstate(), np.random.get_state()  # make_dataset reseeds the global RNGs
    try:
        data = make_dataset(types.SimpleNamespace(**args))
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    # make_dataset already standardises the whole dataset to mean 0, std 1.
    return _Split(
        torch.from_numpy(data["x"].astype(np.float32)),
        _labels(data["y"]),
        torch.from_numpy(data["x_test"].astype(np.float32)),
        _labels(data["y_test"]),
        10,
    )


def _load_synthetic(
    req: _Request,
    *,
    n_train: int = 512,
    n_test: int = 256,
    input_shape: Sequence[int] = (20,),
    num_classes: int = 4,
    seed: int = 0,
    separation: float = 4.0,
) -> _Split:
    """Gaussian blobs: unit-variance noise around random class centres ``separation`` apart.

    ``n_train`` is the size of ``x_train`` *after* the held-out batches are carved out.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise DataError(f"synthetic: input_shape must be (D,) or (C, H, W), got {input_shape}")
    if n_train < 1 or n_test < 1 or num_classes < 2:
        raise DataError("synthetic: need n_train >= 1, n_test >= 1 and num_classes >= 2")
    dim = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    # centres ~ N(0, s^2 I): the expected distance between two centres is s * sqrt(2 dim)
    centres = torch.randn(num_classes, dim, generator=gen) * (separation / math.sqrt(2 * dim))

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=gen)]
        x = centres[y] + torch.randn(n, dim, generator=gen)
        return x.reshape(n, *shape), y

    try:
        x_test, y_test = sample(n_test)  # drawn first: independent of n_train and held-out sizes
        x_train, y_train = sample(n_train + req.heldout_total)
    except RuntimeError as e:  # the allocation of the tensors failed
        n = n_test + n_train + req.heldout_total
        raise DataError(f"synthetic: {n} examples of {dim} values do not fit in memory") from e
    return _Split(x_train, y_train, x_test, y_test, num_classes)


_LOADERS: dict[str, Callable[..., _Split]] = {
    "fashion_mnist": _load_idx_dataset,
    "mnist": _load_idx_dataset,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "synthetic": _load_synthetic,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def _augmenter(name: str, input_shape: tuple[int, ...]) -> Augment:
    """The standard training augmentation of a dataset."""
    if name in NORMALISATION:
        mean, std = NORMALISATION[name]
        black = tuple(-m / s for m, s in zip(mean, std, strict=True))  # raw pixel 0, normalised
        if name in ("cifar10", "cifar100"):
            return RandomCrop(pad=4, flip=True, fill=black)
        return RandomCrop(pad=1 if name == "digits" else 2, fill=black)
    if name == "synthetic" and len(input_shape) == 3:
        return RandomCrop(pad=1)
    raise DataError(f"dataset '{name}' has no augmentation (vector data); use augment=False")


def _check_options(name: str, loader: Callable[..., _Split], options: dict) -> None:
    params = list(inspect.signature(loader).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # the loader checks its own options
    valid = [p.name for p in params]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) or "none"
        raise DataError(f"unknown option(s) {', '.join(unknown)} for {name}; valid: {allowed}")


def _own_dataset(ref: str, heldout: Sequence[int] | int, seed: int, augment: bool,
                 kw: dict) -> Dataset:
    """``function(**kw)`` of ``dataset=package.module:function``: a :class:`Dataset` without
    held-out batches, from which the held-out batches are carved as for every dataset."""
    from sparseflow.errors import UserError

    try:
        factory = load_factory(ref, "dataset")
    except UserError as e:
        raise DataError(str(e)) from None
    try:
        ds = factory(**kw)
    except Exception as e:  # noqa: BLE001 - the user's factory: report, do not trace back
        raise DataError(f"dataset: {ref}(**{kw}) failed ({type(e).__name__}: "
                        f"{' '.join(str(e).split())})") from None
    if not isinstance(ds, Dataset):
        raise DataError(f"dataset: {ref} returned {type(ds).__name__}, expected a "
                        "sparseflow.data.Dataset")
    if ds.heldout:
        raise DataError(f"dataset: {ref} returned held-out batches; return the full training "
                        "set (sparseflow carves data.heldout examples from it)")
    if augment and ds.augment is None:
        raise DataError(f"dataset: {ref} has no augment function; set data.augment=false")
    x_train, y_train, batches = carve_heldout(ds.x_train, ds.y_train, heldout_sizes(heldout),
                                              seed, ref)
    return Dataset(name=ref, x_train=x_train, y_train=y_train, x_test=ds.x_test,
                   y_test=ds.y_test, heldout=batches, num_classes=ds.num_classes,
                   input_shape=tuple(x_train.shape[1:]),
                   augment=ds.augment if augment else None)


#: the datasets of this process, newest last (a sweep's worker trains run after run on the
#: same data: decoding Fashion-MNIST and carving its held-out batches took ~0.5 s of each run)
_LOADED: OrderedDict[tuple[Any, ...], Dataset] = OrderedDict()
CACHE_SIZE = 2


def _cached(ident: tuple[Any, ...], make: Callable[[], Dataset]) -> Dataset:
    """``make()``, once per process for the same ``ident``; at most ``CACHE_SIZE`` kept."""
    found = _LOADED.get(ident)
    if found is None:
        found = _LOADED[ident] = make()
        while len(_LOADED) > CACHE_SIZE:
            _LOADED.popitem(last=False)
    else:
        _LOADED.move_to_end(ident)
    return found


def clear_dataset_cache() -> None:
    """Forget the datasets loaded in this process (the next load reads the files again)."""
    _LOADED.clear()


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    heldout: Sequence[int] | int = (1000,),
    heldout_seed: int = 0,
    augment: bool = False,
    **kw,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) as normalised tensors.

    Files are looked for in ``root`` (and ``root/<name>``) alone when it is given, else in
    ``$SPARSEFLOW_DATA[/<name>]``, ``~/.cache/sparseflow/<name>`` and system folders, and
    downloaded (checksum-verified) when missing and ``download``.
    ``heldout`` gives the sizes of fixed held-out batches removed from the training set,
    chosen by ``heldout_seed`` alone. ``augment`` attaches the dataset's standard training
    augmentation. Extra keywords go to the dataset: ``mirror``/``timeout`` for downloads;
    ``n_test`` for digits; ``get_dataset_args`` fields for mnist1d; ``n_train``, ``n_test``,
    ``input_shape``, ``num_classes``, ``seed``, ``separation`` for synthetic.
    Raises :class:`DataError` with a one-line explanation on any failure.
    """
    if is_reference(str(name)):
        return _own_dataset(str(name), heldout, heldout_seed, augment, kw)
    key = str(name).strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise DataError(f"unknown dataset '{name}'; valid names: {', '.join(DATASETS)}")
    sizes = heldout_sizes(heldout)
    loader = _LOADERS[key]
    _check_options(key, loader, kw)
    try:  # the same request in this process: the same (shared, never written) tensors
        ident = (key, None if root is None else str(Path(root).resolve()), download,
                 tuple(sizes), heldout_seed, augment, os.environ.get("SPARSEFLOW_DATA"),
                 tuple(sorted((k, repr(v)) for k, v in kw.items())))
    except (OSError, RuntimeError):
        return _load(key, loader, root, download, sizes, heldout_seed, augment, kw)
    return _cached(ident, lambda: _load(key, loader, root, download, sizes, heldout_seed,
                                        augment, kw))


def _load(key: str, loader: Callable[..., _Split], root: str | os.PathLike | None,
          download: bool, sizes: Sequence[int], heldout_seed: int, augment: bool,
          kw: dict[str, Any]) -> Dataset:
    """Read, decode and carve dataset ``key`` (see :func:`load_dataset`)."""
    split = loader(_Request(key, root, download, sum(sizes)), **kw)
    x_train, y_train, batches = carve_heldout(
        split.x_train, split.y_train, sizes, heldout_seed, key
    )
    input_shape = tuple(x_train.shape[1:])
    return Dataset(
        name=key,
        x_train=x_train,
        y_train=y_train,
        x_test=split.x_test,
        y_test=split.y_test,
        heldout=batches,
        num_classes=split.num_classes,
        input_shape=input_shape,
        augment=_augmenter(key, input_shape) if augment else None,
    )
