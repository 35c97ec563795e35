"""Checkpoint files: plain torch files, atomic, verified against a SHA-256 sidecar, weights_only
loading, the old SFCKPT1 format, identity checks and the clean-up of killed writes."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import time
import warnings

import pytest
import torch

from sparseflow.errors import CheckpointError, UserError
from sparseflow.store import checkpoint as ck
from sparseflow.store.checkpoint import (
    clean_stale_temps,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
)


def old_format_save(path, obj):
    """The writer of the old format (magic, hex SHA-256, newline, payload), copied as it was."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path.write_bytes(b"SFCKPT1\n" + digest + b"\n" + payload)
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_round_trip_is_a_plain_torch_file_with_a_sidecar(tmp_path):
    obj = {"step": 3, "model": {"w": torch.arange(6.0).reshape(2, 3)},
           "m": torch.ones(4, dtype=torch.bool)}
    p = save_checkpoint(tmp_path / "step-00000003.pt", obj)
    back = load_checkpoint(p)
    assert back["step"] == 3 and torch.equal(back["model"]["w"], obj["model"]["w"])
    assert torch.equal(back["m"], obj["m"])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["step-00000003.pt",
                                                          "step-00000003.pt.sha256"]
    plain = torch.load(p, weights_only=True)  # what the ecosystem does
    assert torch.equal(plain["model"]["w"], obj["model"]["w"])
    # the sidecar is in sha256sum format: `sha256sum -c` checks the pair too
    line = sidecar_path(p).read_text()
    assert line == f"{hashlib.sha256(p.read_bytes()).hexdigest()}  step-00000003.pt\n"


def test_truncated_corrupt_and_unverifiable_are_detected(tmp_path):
    p = save_checkpoint(tmp_path / "step-00000001.pt", {"model": {"w": torch.randn(100)}})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(p)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    p.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(p)
    p.write_bytes(data)
    sidecar_path(p).unlink()
    with pytest.raises(CheckpointError, match="checksum file step-00000001.pt.sha256 missing"):
        load_checkpoint(p)  # a torch file without its checksum is not trusted
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_missing_model_entry_is_one_line(tmp_path):
    p = save_checkpoint(tmp_path / "step-00000001.pt", {"step": 1, "weights": torch.ones(2)})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert str(e.value) == f"{p}: checkpoint has no 'model' entry"
    assert isinstance(e.value, UserError)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused_even_with_valid_checksum(tmp_path, capsys):
    buf = io.BytesIO()
    torch.save({"x": _Evil()}, buf, pickle_module=pickle)
    payload = buf.getvalue()
    old = tmp_path / "old" / "step-00000001.pt"
    old.parent.mkdir()
    old.write_bytes(b"SFCKPT1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n"
                    + payload)
    # a raw pickle (not torch's zip format, protocol 4) with a valid sidecar
    raw = tmp_path / "step-00000002.pt"
    raw.write_bytes(pickle.dumps({"model": _Evil()}, protocol=4))
    sidecar_path(raw).write_text(f"{hashlib.sha256(raw.read_bytes()).hexdigest()}  x\n")
    for p in (old, raw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CheckpointError, match="cannot load") as e:
                load_checkpoint(p)
        assert not caught, [str(w.message) for w in caught]  # torch's protocol warning is muted
        assert str(e.value).startswith(f"{p}: ")
    assert "pwned" not in capsys.readouterr().out


def test_old_format_files_still_load(tmp_path):
    p = old_format_save(tmp_path / "step-00000005.pt", {"step": 5, "model": {"w": torch.ones(3)}})
    assert load_checkpoint(p)["step"] == 5
    data = p.read_bytes()
    p.write_bytes(data[:-7])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(p)


def test_identity_is_checked_against_the_run_folder_and_file_name(tmp_path):
    ckdir = tmp_path / "runs" / "aaaa" / "checkpoints"
    other = tmp_path / "runs" / "bbbb" / "checkpoints"
    src = save_checkpoint(other / "step-00000150.pt",
                          {"run_id": "bbbb", "step": 150, "model": {}})
    dst = ckdir / "step-00000200.pt"
    ckdir.mkdir(parents=True)
    dst.write_bytes(src.read_bytes())
    sidecar_path(dst).write_bytes(sidecar_path(src).read_bytes())
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(dst)
    assert str(e.value) == f"{dst}: holds step 150 of run bbbb, not step 200 of run aaaa"
    assert load_checkpoint(src)["step"] == 150  # in its own place it is fine
    with pytest.raises(CheckpointError, match="not step 150 of run cccc"):
        load_checkpoint(src, run_id="cccc")
    # an old checkpoint without run_id: only the step is checked, and it matches
    old_format_save(ckdir / "step-00000100.pt", {"step": 100, "model": {}})
    assert load_checkpoint(ckdir / "step-00000100.pt")["step"] == 100


def test_listing_ignores_temp_and_checksum_files(tmp_path):
    for s in (0, 10, 5):
        save_checkpoint(tmp_path / f"step-{s:08d}.pt", {"s": s})
    (tmp_path / ".step-00000020.pt.tmp-1").write_bytes(b"partial")
    (tmp_path / "step-00000030.pt.sha256").write_text("0" * 64 + "  step-00000030.pt\n")
    assert list(list_checkpoints(tmp_path)) == [0, 5, 10]
    assert latest_checkpoint(tmp_path)[0] == 10
    assert latest_checkpoint(tmp_path / "none") is None


def test_stale_temps_of_gone_or_old_writers_are_removed(tmp_path):
    gone = dead_pid()
    alive = os.getppid()  # a live process that is not this one
    stale = [tmp_path / f".step-00000010.pt.tmp-{gone}",
             tmp_path / f".step-00000010.pt.sha256.tmp-{gone}",
             tmp_path / f".step-00000011.pt.tmp-{os.getpid()}",  # this process is not writing
             tmp_path / f".step-00000012.pt.tmp-{alive}"]  # live pid, but 7 hours old
    live = [tmp_path / f".step-00000013.pt.tmp-{alive}",
            tmp_path / f".step-00000013.pt.sha256.tmp-{alive}"]
    others = [tmp_path / ".lock", tmp_path / "notes.tmp-1"]
    for p in stale + live + others:
        p.write_bytes(b"partial")
    old = time.time() - 7 * 3600
    os.utime(stale[3], (old, old))
    kept = save_checkpoint(tmp_path / "step-00000005.pt", {"model": {}})
    assert sorted(clean_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in live + others] + [kept.name, kept.name + ".sha256"])
    assert clean_stale_temps(tmp_path / "missing") == []


def test_a_write_killed_between_its_renames_fails_verification_then_is_finished(tmp_path):
    """The sidecar is renamed first: killed before the payload's rename, the pair fails
    verification (never a wrong file that passes); the run's start renames the fsync'ed
    payload temp into place."""
    target = save_checkpoint(tmp_path / "step-00000200.pt", {"step": 200, "model": {"v": 1}})
    new = {"step": 200, "model": {"v": 2}}
    buf = io.BytesIO()
    torch.save(new, buf)
    pid = dead_pid()
    tmp = tmp_path / f".step-00000200.pt.tmp-{pid}"
    tmp.write_bytes(buf.getvalue())
    # what save_checkpoint does before its second rename
    sidecar_path(target).write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  x\n")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(target)
    assert clean_stale_temps(tmp_path) == [tmp]
    assert load_checkpoint(target)["model"] == {"v": 2} and not tmp.exists()


def test_failed_write_is_one_line_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    import errno

    ckdir = tmp_path / "checkpoints"
    first = save_checkpoint(ckdir / "step-00000001.pt", {"model": {"v": 1}})
    before = {p.name: p.read_bytes() for p in ckdir.iterdir()}
    real_replace = os.replace

    def full(src, dst):
        if str(dst).endswith(".pt"):  # the sidecar went in; the payload's rename fails
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", full)
    for step in (1, 2):  # overwrite an existing step, write a new one
        with pytest.raises(CheckpointError) as e:
            save_checkpoint(ckdir / f"step-{step:08d}.pt", {"model": {"v": 9}})
        assert str(e.value) == f"{ckdir}: cannot write checkpoint (No space left on device)"
    monkeypatch.setattr(ck.os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in ckdir.iterdir()} == before  # no temps, intact
    assert load_checkpoint(first)["model"] == {"v": 1}
