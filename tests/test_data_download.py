"""Download, lookup-failure and CIFAR tests against a local HTTP server with synthetic files."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseflow.data import NORMALISATION, DataError, RandomCrop, load_dataset
from sparseflow.data import download as data_download
from sparseflow.data import paths as data_paths
from sparseflow.data.idx import write_idx

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the user's cache, data folder or mirror."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPARSEFLOW_DATA", raising=False)
    monkeypatch.delenv("SPARSEFLOW_MIRROR", raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/srv`` over HTTP on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "srv"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def dead_url():
    """An address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_mnist_like(
    folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0
) -> tuple[dict, dict]:
    """Write small valid IDX .gz files; returns ({filename: md5}, {filename: array})."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return {name: _md5(folder / name) for name in arrays}, arrays


def _pixels(x: torch.Tensor, name: str) -> np.ndarray:
    """Undo the normalisation back to uint8 pixels."""
    mean, std = (torch.tensor(v).reshape(1, -1, 1, 1) for v in NORMALISATION[name])
    return ((x * std + mean) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------- MNIST-format downloads


def test_download_lands_in_data_dir_and_loads(server, tmp_path, monkeypatch):
    folder, url = server
    md5s, arrays = _write_mnist_like(folder)
    monkeypatch.setitem(data_download.CHECKSUMS, "mnist", md5s)
    monkeypatch.setenv("SPARSEFLOW_DATA", str(tmp_path / "data"))
    ds = load_dataset("mnist", mirror=url, heldout=(10,))
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert len(ds.heldout[0][0]) == 10
    np.testing.assert_array_equal(_pixels(ds.x_test, "mnist")[:, 0], arrays[IDX_NAMES[2]])
    assert torch.equal(ds.y_test, torch.from_numpy(arrays[IDX_NAMES[3]].astype(np.int64)))
    dest = tmp_path / "data" / "mnist"
    assert sorted(os.listdir(dest)) == sorted(IDX_NAMES)  # no temporary files left
    assert {n: _md5(dest / n) for n in IDX_NAMES} == md5s
    # the second load finds the files without the network
    again = load_dataset("mnist", download=False, mirror="http://127.0.0.1:9/", heldout=(10,))
    assert torch.equal(again.x_train, ds.x_train)


def test_download_to_home_cache_with_env_mirror(server, tmp_path, monkeypatch):
    folder, url = server
    md5s, _ = _write_mnist_like(folder / "mnist")
    monkeypatch.setitem(data_download.CHECKSUMS, "mnist", md5s)
    monkeypatch.setenv("SPARSEFLOW_MIRROR", url + "{name}/")
    ds = load_dataset("mnist", heldout=())
    assert ds.x_train.shape == (60, 1, 28, 28)
    cache = tmp_path / "home" / ".cache" / "sparseflow" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(IDX_NAMES)


def test_download_falls_back_to_next_mirror(server, dead_url, tmp_path, monkeypatch):
    folder, url = server
    md5s, _ = _write_mnist_like(folder)
    monkeypatch.setitem(data_download.CHECKSUMS, "mnist", md5s)
    monkeypatch.setitem(data_download.MIRRORS, "mnist", (dead_url, url))
    ds = load_dataset("mnist", root=tmp_path / "r", heldout=(5,), augment=True)
    assert ds.x_train.shape == (55, 1, 28, 28)
    assert isinstance(ds.augment, RandomCrop) and ds.augment.pad == 2 and not ds.augment.flip
    assert sorted(os.listdir(tmp_path / "r")) == sorted(IDX_NAMES)


def test_only_missing_files_are_downloaded(server, tmp_path, monkeypatch):
    folder, url = server
    md5s, _ = _write_mnist_like(folder)
    monkeypatch.setitem(data_download.CHECKSUMS, "mnist", md5s)
    dest = tmp_path / "r"
    dest.mkdir()
    # a user-placed, uncompressed file counts as present and is not fetched again
    (dest / "t10k-labels-idx1-ubyte").write_bytes(
        gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    )
    load_dataset("mnist", root=dest, mirror=url, heldout=())
    assert "t10k-labels-idx1-ubyte.gz" not in os.listdir(dest)


def test_wrong_checksum_leaves_nothing(server, tmp_path, monkeypatch):
    folder, url = server
    md5s, _ = _write_mnist_like(folder)
    bad = dict(md5s, **{"train-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setitem(data_download.CHECKSUMS, "mnist", bad)
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", root=dest, mirror=url)
    assert "\n" not in str(info.value)
    assert not dest.exists()


def test_sha256_checksums_are_accepted(server, tmp_path, monkeypatch):
    folder, url = server
    _write_mnist_like(folder)
    sha = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in IDX_NAMES}
    monkeypatch.setitem(data_download.CHECKSUMS, "mnist", sha)
    assert load_dataset("mnist", root=tmp_path / "r", mirror=url, heldout=()).x_test.shape[0] == 20


def test_no_server_lists_every_place_looked(dead_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFLOW_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=tmp_path / "root", mirror=dead_url, timeout=5)
    message = str(info.value)
    for folder in data_paths.candidate_dirs("mnist", tmp_path / "root"):
        assert str(folder) in message
    assert "download into" in message and str(tmp_path / "env") not in message  # root alone
    assert "\n" not in message
    with pytest.raises(DataError) as info:
        load_dataset("mnist", mirror=dead_url, timeout=5)
    message = str(info.value)
    for folder in data_paths.candidate_dirs("mnist"):
        assert str(folder) in message
    assert "download into" in message and "SPARSEFLOW_DATA/mnist/" in message
    assert "\n" not in message


def test_download_off_names_paths_and_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setitem(data_paths.SYSTEM_DIRS, "fashion_mnist", (str(tmp_path / "sys"),))
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", download=False)
    message = str(info.value)
    assert "downloading is off" in message
    assert str(tmp_path / "sys") in message
    assert str(tmp_path / "home" / ".cache" / "sparseflow" / "fashion_mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert not (tmp_path / "home").exists()  # looking creates nothing


def test_corrupt_local_file_is_reported(tmp_path):
    _write_mnist_like(tmp_path / "r")
    path = tmp_path / "r" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=str(path)):
        load_dataset("mnist", root=tmp_path / "r", download=False)


def test_wrong_image_size_is_reported(tmp_path):
    folder = tmp_path / "r"
    _write_mnist_like(folder)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(DataError, match="28 x 28"):
        load_dataset("mnist", root=folder, download=False)


# ---------------------------------------------------------------- CIFAR


def _py2_str(data: bytes) -> bytes:
    return b"T" + struct.pack("<I", len(data)) + data  # BINSTRING: a Python 2 str


def _py2_array(a: np.ndarray) -> bytes:
    """A uint8 matrix the way Python 2 + numpy 1.x pickled it (protocol 2)."""
    rows, cols = a.shape
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R(K\x01J"
        + struct.pack("<i", rows)
        + b"J"
        + struct.pack("<i", cols)
        + b"\x86cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + _py2_str(a.tobytes())
        + b"tb"
    )


def _py2_pickle(batch: dict) -> bytes:
    """Hand-write a CIFAR batch as Python 2's cPickle did: bytes keys, list of int labels."""
    out = b"\x80\x02}("
    for key, value in batch.items():
        out += _py2_str(key)
        if isinstance(value, np.ndarray):
            out += _py2_array(value)
        elif isinstance(value, list):
            out += b"](" + b"".join(b"J" + struct.pack("<i", v) for v in value) + b"e"
        else:
            out += _py2_str(value)
    return out + b"u."


def _cifar_batches(name: str, sizes: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    classes, key = (10, b"labels") if name == "cifar10" else (100, b"fine_labels")
    return {
        member: {
            b"batch_label": member.encode(),
            key: rng.integers(0, classes, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        for member, n in sizes.items()
    }


def _write_tar(path: Path, folder: str, blobs: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for member, blob in blobs.items():
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _cifar10_archive(path: Path) -> dict:
    sizes = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 6}
    batches = _cifar_batches("cifar10", sizes)
    blobs = {}
    for i, (member, batch) in enumerate(batches.items()):
        if i % 3 == 0:
            blobs[member] = _py2_pickle(batch)  # as the real files
        elif i % 3 == 1:
            blobs[member] = pickle.dumps(batch, protocol=2)  # Python 3, protocol 2
        else:  # Python 3, protocol 5 and str keys
            blobs[member] = pickle.dumps({k.decode(): v for k, v in batch.items()}, protocol=5)
    blobs["batches.meta"] = pickle.dumps({b"label_names": [b"a"] * 10}, protocol=2)
    _write_tar(path, "cifar-10-batches-py", blobs)
    return batches


def test_cifar10_download_and_load(server, tmp_path, monkeypatch):
    folder, url = server
    batches = _cifar10_archive(folder / "cifar-10-python.tar.gz")
    monkeypatch.setitem(
        data_download.CHECKSUMS,
        "cifar10",
        {"cifar-10-python.tar.gz": _md5(folder / "cifar-10-python.tar.gz")},
    )
    ds = load_dataset("cifar10", mirror=url, heldout=(5,), augment=True)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.augment.pad == 4 and ds.augment.flip
    test = batches["test_batch"]
    np.testing.assert_array_equal(
        _pixels(ds.x_test, "cifar10"), test[b"data"].reshape(-1, 3, 32, 32)
    )
    assert ds.y_test.tolist() == test[b"labels"]
    all_train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    held = _pixels(ds.heldout[0][0], "cifar10").reshape(5, -1)
    assert all(any((row == t).all() for t in all_train) for row in held)
    assert (tmp_path / "home/.cache/sparseflow/cifar10/cifar-10-python.tar.gz").is_file()
    out = ds.augment(ds.x_train, torch.Generator().manual_seed(0))
    assert out.shape == ds.x_train.shape and not torch.equal(out, ds.x_train)


def test_cifar100_from_extracted_folder(tmp_path):
    batches = _cifar_batches("cifar100", {"train": 12, "test": 5})
    folder = tmp_path / "r" / "cifar-100-python"
    folder.mkdir(parents=True)
    for member, batch in batches.items():
        (folder / member).write_bytes(_py2_pickle(batch))
    ds = load_dataset("cifar100", root=tmp_path / "r", download=False, heldout=(2,))
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.num_classes == 100
    assert ds.y_test.tolist() == batches["test"][b"fine_labels"]


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    target = tmp_path / "pwned"
    batches = _cifar_batches("cifar100", {"train": 3, "test": 3})
    blobs = {m: _py2_pickle(b) for m, b in batches.items()}
    blobs["test"] = pickle.dumps({b"data": _Evil(target)}, protocol=2)
    _write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", blobs)
    with pytest.raises(DataError, match="refusing to load global") as info:
        load_dataset("cifar100", root=tmp_path, download=False, heldout=())
    assert "cifar-100-python.tar.gz:test" in str(info.value)
    assert not target.exists()


def test_cifar_object_arrays_refused(tmp_path):
    batches = _cifar_batches("cifar100", {"train": 3, "test": 3})
    blobs = {m: pickle.dumps(b, protocol=2) for m, b in batches.items()}
    blobs["train"] = pickle.dumps({b"data": np.array([1, "x"], dtype=object)}, protocol=2)
    _write_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", blobs)
    with pytest.raises(DataError, match="object arrays"):
        load_dataset("cifar100", root=tmp_path, download=False, heldout=())


def test_cifar_truncated_or_incomplete_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    _cifar10_archive(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        load_dataset("cifar10", root=tmp_path, download=False)
    _write_tar(path, "cifar-10-batches-py", {"test_batch": b""})
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_1"):
        load_dataset("cifar10", root=tmp_path, download=False)
