"""Checkpoint files: atomic, checksummed, weights_only loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from sparseflow.errors import CheckpointError
from sparseflow.store.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip(tmp_path):
    obj = {"step": 3, "w": torch.arange(6.0).reshape(2, 3), "m": torch.ones(4, dtype=torch.bool)}
    p = save_checkpoint(tmp_path / "step-00000003.pt", obj)
    back = load_checkpoint(p)
    assert back["step"] == 3 and torch.equal(back["w"], obj["w"])
    assert torch.equal(back["m"], obj["m"])
    assert [x.name for x in tmp_path.iterdir()] == ["step-00000003.pt"]  # no temp files left


def test_truncated_and_corrupt_are_detected(tmp_path):
    p = save_checkpoint(tmp_path / "step-00000001.pt", {"w": torch.randn(100)})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(p)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    p.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(p)
    p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a sparseflow checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused_even_with_valid_checksum(tmp_path):
    import hashlib
    import io

    buf = io.BytesIO()
    torch.save({"x": _Evil()}, buf, pickle_module=pickle)
    payload = buf.getvalue()
    p = tmp_path / "step-00000001.pt"
    p.write_bytes(b"SFCKPT1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(p)


def test_listing_ignores_temp_files(tmp_path):
    for s in (0, 10, 5):
        save_checkpoint(tmp_path / f"step-{s:08d}.pt", {"s": s})
    (tmp_path / ".step-00000020.pt.tmp-1").write_bytes(b"partial")
    assert list(list_checkpoints(tmp_path)) == [0, 5, 10]
    assert latest_checkpoint(tmp_path)[0] == 10
    assert latest_checkpoint(tmp_path / "none") is None
