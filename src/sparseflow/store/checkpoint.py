"""Checkpoint files: atomic, checksummed, and loaded with ``torch.load(weights_only=True)``.

File layout: the 8-byte magic ``SFCKPT1\\n``, the 64-char hex SHA-256 of the payload and a
newline, then the payload written by ``torch.save``. Writing goes to a temporary file in the same
directory, is fsync'ed and renamed over the target, so a crash leaves either the old file or the
new one, never half of one. Reading checks the magic, the length and the checksum before
unpickling anything, and unpickles with ``weights_only=True`` (tensors and plain containers only).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from sparseflow.errors import CheckpointError

MAGIC = b"SFCKPT1\n"
_HEADER = len(MAGIC) + 65
_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step``."""
    return f"step-{step:08d}.pt"


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """Write ``obj`` atomically with a checksum header; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + digest + b"\n")
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify and load a checkpoint; a missing, truncated or corrupt file is a CheckpointError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    if len(data) < _HEADER or not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a sparseflow checkpoint (bad header or truncated)")
    digest = data[len(MAGIC) : len(MAGIC) + 64].decode("ascii", "replace")
    payload = data[_HEADER:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated (checksum mismatch)")
    try:
        obj = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: checkpoint does not hold a dict")
    return obj


def list_checkpoints(directory: str | Path) -> dict[int, Path]:
    """Checkpoints in ``directory`` by step (temporary files are ignored)."""
    directory = Path(directory)
    out: dict[int, Path] = {}
    if directory.is_dir():
        for p in directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def latest_checkpoint(directory: str | Path) -> tuple[int, Path] | None:
    """(step, path) of the newest checkpoint, or None."""
    ckpts = list_checkpoints(directory)
    if not ckpts:
        return None
    step = max(ckpts)
    return step, ckpts[step]
