"""Checkpoint files: plain torch files, atomic, verified against a SHA-256 sidecar before use.

Format. ``step-00000200.pt`` is exactly what ``torch.save(state)`` writes, so
``torch.load(path, weights_only=True)`` opens it anywhere. Its checksum lives beside it in
``step-00000200.pt.sha256``, one line in ``sha256sum`` format (``<hex>  step-00000200.pt``), so
``sha256sum -c step-00000200.pt.sha256`` checks it too. :func:`load_checkpoint` is the verified
path: it reads the file once, checks the bytes against the sidecar, then unpickles those same
bytes with ``weights_only=True`` (tensors and plain containers only; torch's warning about the
pickle protocol of a foreign file is silenced, the error is one line). A file without a
sidecar, or whose bytes do not match it, is refused. Files of the old format (magic
``SFCKPT1\\n``, hex digest, newline, payload; checksum inside) are still read.

Writing. The payload and its sidecar are each written to a temporary file in the same folder
(``.step-00000200.pt.tmp-PID`` and ``.step-00000200.pt.sha256.tmp-PID``) and fsync'ed; then the
sidecar is renamed into place, the folder fsync'ed, the payload renamed, the folder fsync'ed.
A crash before the first rename leaves the old pair; after both, the new pair. A crash between
them leaves the new checksum beside the old file (or beside no file, which listing ignores):
a pair that fails verification, never a wrong file that passes. :func:`clean_stale_temps`,
called when a run starts, finishes such an interrupted write (the fsync'ed payload temp whose
digest is the sidecar's is renamed into place) and removes the temps of writers that are gone.
A failing write (disk full, read-only folder) is one :class:`CheckpointError` line naming the
folder and the cause; the earlier checkpoints and sidecars stay as they were.

Identity. A run's checkpoints record ``run_id`` and ``step``; loading ``RUN/checkpoints/
step-N.pt`` checks both against the folder and the name (or against what the caller says), so
a file copied from another run or step is refused. Files without these fields load as before.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sparseflow.errors import CheckpointError, UserError

MAGIC = b"SFCKPT1\n"  # the old self-checksummed format, still read
_HEADER = len(MAGIC) + 65
SIDECAR = ".sha256"
STALE_SECONDS = 6 * 3600  # a temp file this old is stale whoever wrote it
_NAME = re.compile(r"^step-(\d{8,})\.pt$")
_TMP = re.compile(r"^\.(step-\d{8,}\.pt(?:\.sha256)?)\.tmp-(\d+)$")
_WRITING: set[Path] = set()  # temp files this process is writing right now


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step``."""
    return f"step-{step:08d}.pt"


def sidecar_path(path: str | Path) -> Path:
    """The checksum file that goes with the checkpoint ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def step_of(path: str | Path) -> int | None:
    """The step in a checkpoint's file name (``step-00000200.pt`` -> 200), or None."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def _cause(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _fsync_dir(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (fsync) before returning."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sidecar_line(digest: str, name: str) -> bytes:
    return f"{digest}  {name}\n".encode()


def _read_sidecar(side: Path) -> str | None:
    """The hex digest in a sidecar, or None when it is missing or unreadable."""
    try:
        text = side.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    parts = text.split()
    if parts and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
        return parts[0]
    return None


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> Path:
    """Write ``obj`` with ``torch.save`` atomically, with its SHA-256 sidecar; returns the path.

    Disk full, a read-only or missing-permission folder: a one-line CheckpointError naming the
    folder and the cause; nothing earlier is lost (temp files are removed).
    """
    path = Path(path)
    folder = path.parent
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    side = sidecar_path(path)
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    side_tmp = folder / f".{side.name}.tmp-{os.getpid()}"
    old_side: bytes | None = None
    side_replaced = False
    _WRITING.update((tmp, side_tmp))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if side.exists():
            old_side = side.read_bytes()
        write_synced(tmp, payload)
        write_synced(side_tmp, _sidecar_line(digest, path.name))
        os.replace(side_tmp, side)  # 1: the new checksum (the old file now fails verification)
        side_replaced = True
        _fsync_dir(folder)
        os.replace(tmp, path)  # 2: the new file (the pair verifies)
    except OSError as e:
        if side_replaced:  # put the old checksum back (or none), so the old file still verifies
            _restore_sidecar(side, old_side)
        raise CheckpointError(f"{folder}: cannot write checkpoint ({_cause(e)})") from None
    finally:
        for t in (tmp, side_tmp):
            try:
                t.unlink()
            except OSError:
                pass
        _WRITING.difference_update((tmp, side_tmp))
    _fsync_dir(folder)
    return path


def _restore_sidecar(side: Path, old: bytes | None) -> None:
    try:
        if old is None:
            side.unlink()
        else:
            tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
            write_synced(tmp, old)
            os.replace(tmp, side)
    except OSError:
        pass  # still safe: the pair fails verification


def load_plain(data: bytes, path: Path, map_location: str | torch.device = "cpu", *,
               error: type[UserError] | None = None, what: str = "cannot load checkpoint"
               ) -> Any:
    """``torch.load(weights_only=True)`` of the bytes of file ``path``: only tensors and plain
    containers load; any failure is one line ``error(f"{path}: {what} (why)")`` (default
    CheckpointError)."""
    error = error or CheckpointError
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols first
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise error(f"{path}: {what} (it holds more than tensors and plain containers; "
                    "refused with weights_only=True)") from None
    except Exception as e:  # noqa: BLE001 - any other unpickling failure is a bad file too
        raise error(f"{path}: {what} ({type(e).__name__})") from None


def read_bytes(path: Path, noun: str = "checkpoint", error: type[UserError] | None = None
               ) -> bytes:
    """The bytes of the file ``path``; a missing or unreadable one is one line
    ``error(f"{path}: {noun} not found")`` / ``"cannot read {noun} (why)"`` (default
    CheckpointError)."""
    error = error or CheckpointError
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {noun} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read {noun} ({_cause(e)})") from None


def verified_bytes(path: str | Path) -> bytes:
    """The torch payload of the checkpoint at ``path`` after its checksum matched (sidecar, or
    the header of an old-format file); a CheckpointError otherwise."""
    path = Path(path)
    data = read_bytes(path)
    if data.startswith(MAGIC):  # the old format: the checksum is in the header
        if len(data) < _HEADER:
            raise CheckpointError(f"{path}: checkpoint is corrupt or truncated (short header)")
        digest = data[len(MAGIC) : len(MAGIC) + 64].decode("ascii", "replace")
        payload = data[_HEADER:]
        if hashlib.sha256(payload).hexdigest() != digest:
            raise CheckpointError(f"{path}: checkpoint is corrupt or truncated (checksum "
                                  "mismatch)")
        return payload
    side = sidecar_path(path)
    digest = _read_sidecar(side)
    if digest is None:
        what = "missing" if not side.exists() else "unreadable"
        raise CheckpointError(f"{path}: not a verifiable sparseflow checkpoint (checksum file "
                              f"{side.name} {what})")
    if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(f"{path}: checkpoint is corrupt or truncated (checksum mismatch "
                              f"with {side.name})")
    return data


def check_identity(path: str | Path, ckpt: dict[str, Any], *, run_id: str | None,
                   step: int | None) -> None:
    """Refuse a checkpoint that records another run or step than expected (fields it does not
    record are not checked): ``FILE: holds step 150 of run B, not step 200 of run A``."""
    have_run, have_step = ckpt.get("run_id"), ckpt.get("step")
    bad_run = run_id is not None and have_run is not None and str(have_run) != run_id
    try:
        bad_step = step is not None and have_step is not None and int(have_step) != step
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: checkpoint has a bad 'step' entry "
                              f"({have_step!r})") from None
    if bad_run or bad_step:
        held = f"step {have_step}" + (f" of run {have_run}" if have_run is not None else "")
        want = f"step {step if step is not None else have_step}" + (
            f" of run {run_id}" if run_id is not None else "")
        raise CheckpointError(f"{path}: holds {held}, not {want}")


def _run_of(path: Path) -> str | None:
    """The run a checkpoint file belongs to by where it lies (``RUN/checkpoints/step-N.pt``)."""
    parent = path.absolute().parent
    if parent.name != "checkpoints" or not parent.parent.name:
        return None
    return parent.parent.name


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    run_id: str | None = None,
    step: int | None = None,
    require: Sequence[str] = ("model",),
) -> dict[str, Any]:
    """Verify and load a checkpoint (``weights_only=True``); every problem is one
    CheckpointError line naming the file: missing, truncated or corrupt, no checksum, not
    loadable without pickled code, not a dict, a ``require``'d key missing, or a recorded
    run id / step other than ``run_id`` / ``step`` (default: the run folder and the step of
    the file name, when the file lies in ``RUN/checkpoints/step-N.pt``)."""
    path = Path(path)
    obj = load_plain(verified_bytes(path), path, map_location)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: checkpoint does not hold a dict")
    for key in require:
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    check_identity(path, obj, run_id=run_id if run_id is not None else _run_of(path),
                   step=step if step is not None else step_of(path))
    return obj


def list_checkpoints(directory: str | Path) -> dict[int, Path]:
    """Checkpoints in ``directory`` by step (temporary and checksum files are ignored)."""
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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


def _is_stale(tmp: Path, pid: int, now: float) -> bool:
    if tmp in _WRITING:
        return False  # this process is writing it now
    try:
        age = now - tmp.stat().st_mtime
    except OSError:
        return False
    return age > STALE_SECONDS or pid == os.getpid() or not _pid_alive(pid)


def _digest_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def clean_stale_temps(directory: str | Path) -> list[Path]:
    """Finish or remove the temp files of killed checkpoint writes in ``directory``; returns
    the temps removed or renamed into place.

    A temp is stale when the process named by its ``-PID`` suffix is gone (or is this process,
    which is not writing it), or when it is older than :data:`STALE_SECONDS`; temps of live
    writers are left alone. A stale payload temp whose digest is its sidecar's, beside a
    target that does not verify, is a write killed between its two renames and is renamed
    into place; every other stale temp is deleted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time()
    done: list[Path] = []
    for tmp in sorted(directory.iterdir()):
        m = _TMP.match(tmp.name)
        if not m or not _is_stale(tmp, int(m.group(2)), now):
            continue
        target = directory / m.group(1)
        try:
            if not target.name.endswith(SIDECAR):
                want = _read_sidecar(sidecar_path(target))
                if want is not None and _digest_of(target) != want and _digest_of(tmp) == want:
                    os.replace(tmp, target)
                    _fsync_dir(directory)
                    done.append(tmp)
                    continue
            tmp.unlink()
            done.append(tmp)
        except OSError:
            pass  # a read-only folder: nothing can be cleaned, nothing is lost
    return done
