"""Fetching dataset files over HTTP(S) with checksum verification (stdlib urllib only).

A file is streamed into a temporary file next to its destination, its checksum compared
with :data:`CHECKSUMS`, and only then renamed into place; on any failure nothing is left.
Mirrors come from the ``mirror=`` argument, else ``$SPARSEFLOW_MIRROR``, else :data:`MIRRORS`.
A mirror may contain ``{name}``, replaced by the dataset name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

MIRROR_ENV = "SPARSEFLOW_MIRROR"
DEFAULT_TIMEOUT = 30.0

MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/",),
}

# dataset -> file -> hex digest of the file as published (32 hex digits: MD5, 64: SHA-256).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}


class DownloadError(Exception):
    """A download failed; the loader turns it into a :class:`DataError` with context."""


def _algorithm(checksum: str) -> str:
    return {32: "md5", 64: "sha256"}.get(len(checksum), "")


def _progress(total: int | None, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a core dependency, but a progress bar is never essential
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=None, leave=False)


def download_file(url: str, dest: Path, checksum: str, *, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download ``url`` to ``dest`` if its MD5/SHA-256 equals ``checksum``; else leave nothing.

    Raises :class:`DownloadError` on network errors, timeouts and checksum mismatches.
    """
    algorithm = _algorithm(checksum)
    if not algorithm:
        raise DownloadError(f"checksum for {dest.name} is neither MD5 nor SHA-256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.new(algorithm)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            bar = _progress(int(length) if length and length.isdigit() else None, dest.name)
            try:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if h.hexdigest() != checksum.lower():
            raise DownloadError(
                f"checksum mismatch for {url} (expected {checksum}, got {h.hexdigest()})"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{url}: {reason}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def mirrors_for(name: str, mirror: str | Sequence[str] | None = None) -> list[str]:
    """Base URLs to try for ``name``: ``mirror``, else ``$SPARSEFLOW_MIRROR``, else defaults."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV, "").strip() or None
    if mirror is None:
        bases = MIRRORS.get(name, ())
    else:
        bases = [mirror] if isinstance(mirror, str) else list(mirror)
    return [b.replace("{name}", name) for b in bases]


def fetch(
    name: str,
    filename: str,
    dest_dir: Path,
    *,
    mirror: str | Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download ``filename`` of dataset ``name`` into ``dest_dir``, trying each mirror in turn."""
    checksum = CHECKSUMS.get(name, {}).get(filename)
    if checksum is None:
        raise DownloadError(f"no known checksum for {name}/{filename}; refusing to download")
    bases = mirrors_for(name, mirror)
    if not bases:
        raise DownloadError(f"no download address known for {name}")
    errors = []
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        try:
            return download_file(url, dest_dir / filename, checksum, timeout=timeout)
        except DownloadError as e:
            errors.append(str(e))
    raise DownloadError("; ".join(errors))
