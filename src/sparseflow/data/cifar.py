"""Reading CIFAR-10/100 from the "python version" archives without trusting pickle.

The archives hold Python pickles (dicts of a uint8 ``data`` array and label lists). Plain
``pickle.load`` can run arbitrary code, so :class:`RestrictedUnpickler` resolves only the
few numpy names needed to rebuild plain arrays; any other global is refused. Members are
read straight from the ``.tar.gz`` (nothing is extracted to disk); an already extracted
folder works too.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    """Names inside one CIFAR archive."""

    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
    ),
    "cifar100": CifarLayout(
        "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), "fine_labels", 100
    ),
}


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays may be unpickled")
    return np.ndarray.__new__(np.ndarray, shape, _dtype(dtype))


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays may not be unpickled")
    return dtype


def _frombuffer(buf, dtype, shape, order):
    return np.frombuffer(buf, _dtype(dtype)).reshape(shape, order=order).copy()


def _latin1_encode(text, encoding="utf-8"):
    if encoding != "latin1":
        raise pickle.UnpicklingError("only latin1 byte strings may be unpickled")
    return text.encode("latin1")


# (module, name) -> the safe callable it resolves to; nothing else can be loaded.
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,  # how Python 3 writes bytes at protocol 2
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for dicts/lists/bytes/str/numbers and plain numpy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        """Resolve only the allow-listed numpy names; refuse every other global."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def restricted_loads(data: bytes, source: str = "<bytes>") -> object:
    """Unpickle ``data`` (Python 2 strings become bytes) with :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any malformed stream: report it against the file
        raise DataError(f"{source}: not a valid CIFAR pickle ({e})") from e


def _get(batch: dict, key: str):
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _parse_batch(blob: bytes, layout: CifarLayout, source: str) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_loads(blob, source)
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict, got {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, layout.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{source}: 'data' is not a 2-D uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{source}: rows of {data.shape[1]} values, expected 3072")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: labels '{layout.label_key}' are not integers") from e
    if labels.shape != (len(data),):
        raise DataError(f"{source}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(f"{source}: labels outside 0..{layout.num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_members(path: Path, layout: CifarLayout) -> dict[str, bytes]:
    wanted = {f"{layout.folder}/{m}": m for m in layout.train + layout.test}
    if path.is_dir():
        blobs = {}
        for m in wanted.values():
            try:
                blobs[m] = (path / m).read_bytes()
            except OSError as e:
                raise DataError(f"cannot read {path / m}: {e.strerror or e}") from e
        return blobs
    blobs = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                key = member.name.removeprefix("./")
                if key in wanted and member.isfile():
                    blobs[wanted[key]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated archive ({e})") from e
    missing = [f"{layout.folder}/{m}" for m in wanted.values() if m not in blobs]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return blobs


def read_cifar(
    path: str | Path, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read ``cifar10``/``cifar100`` from its archive or extracted folder.

    Returns ``(x_train, y_train, x_test, y_test)``: uint8 images ``(N, 3, 32, 32)`` and
    int64 labels (CIFAR-100: the 100 fine labels).
    """
    layout = LAYOUTS[name]
    path = Path(path)
    blobs = _read_members(path, layout)

    def split(members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_parse_batch(blobs[m], layout, f"{path}:{m}") for m in members]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return (*split(layout.train), *split(layout.test))
