"""A run store that can only be read: every read-only command works on it and changes nothing.

As root, chmod does not stop writes, so a copy of a store is read through the read-only path and
checked byte for byte and mtime for mtime; where user namespaces allow it, the same commands run
on a real read-only bind mount (``unshare -rm``), and a run whose checkpoint folder is on one
fails with one line."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparseflow.cli import main
from sparseflow.errors import StoreError
from sparseflow.store.checkpoint import list_checkpoints, load_checkpoint, sidecar_path
from sparseflow.store.database import Store
from sparseflow.sweep.client import run_sweep

SWEEP = """
base:
  dataset: synthetic
  model: mlp
  arch: {depth: 1, width: 8}
  train.batch_size: 64
  train.duration: 1ep
  data.heldout: 32
seeds: 2
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A quiet store of a finished two-run sweep: (root, sweep file, run ids)."""
    tmp = tmp_path_factory.mktemp("ro")
    sweep = tmp / "tiny.yaml"
    sweep.write_text(textwrap.dedent(SWEEP))
    out = run_sweep(sweep, tmp / "root", workers=0, progress=False, echo=lambda s: None)
    return tmp / "root", sweep, [s["run_id"] for s in out]


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and folder below ``folder`` with its size, mtime and (files) content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns,
                                           p.read_bytes() if p.is_file() else b"")
    out["."] = (0, folder.stat().st_mtime_ns, b"")
    return out


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_read_only_commands_create_and_change_nothing(capsys, stored, tmp_path):
    root, sweep, rids = stored
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert not list(copy.glob("sparseflow.db-*"))  # no writer: all of it in the database
    before = snapshot(copy)
    r = ["--root", str(copy)]
    code, out, err = cli(capsys, "runs", "list", *r)
    assert code == 0 and all(rid in out for rid in rids), err
    code, out, err = cli(capsys, "runs", "show", rids[0][:6], "--json", *r)
    assert code == 0 and json.loads(out)["run_id"] == rids[0], err
    code, out, err = cli(capsys, "runs", "export", "--out", "-", *r)
    assert code == 0 and out.count("\n") == 3, err
    code, _, err = cli(capsys, "runs", "export", "--format", "csv", "--table", "metrics",
                       "--out", str(tmp_path / "m.csv"), *r)
    assert code == 0 and (tmp_path / "m.csv").stat().st_size > 0, err
    code, out, err = cli(capsys, "sweep", "status", str(sweep), *r)
    assert code == 0 and "2 runs (2 done)" in out, err
    pytest.importorskip("jinja2")
    code, out, err = cli(capsys, "report", "--out", str(tmp_path / "rep"), *r)
    assert code == 0 and (tmp_path / "rep" / "index.html").is_file(), err
    assert snapshot(copy) == before


def test_read_only_store_follows_writers_and_refuses_to_write(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    ro = Store(path, readonly=True)  # no -wal: an immutable connection, checked at each read
    assert ro.list_runs() == [] and not list(tmp_path.glob("s.db-*"))
    with Store(path) as w:  # a writer comes, commits, and checkpoints into the file on close
        w.start_run("a", {"seed": 1})
        assert [r["run_id"] for r in ro.list_runs()] == ["a"]  # its WAL: read live
        w.start_run("b", {"seed": 2})
        assert [r["run_id"] for r in ro.list_runs()] == ["a", "b"]
        with Store(path, readonly=True) as ro2:  # opened while the writer is live
            w.log_metrics("b", 3, {"x": 1.0})
            assert ro2.series("b", "x") == [(3, 1.0)]
    with Store(path) as w:
        w.start_run("c", {})
    assert [r["run_id"] for r in Store(path, readonly=True).list_runs()] == ["a", "b", "c"]
    with pytest.raises(StoreError, match="read-only"):
        ro.start_run("d", {})
    ro.close()


def test_read_only_open_of_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(StoreError, match="no run store here"):
        Store(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()
    notes = tmp_path / "notes.db"
    notes.write_text("my precious notes\n")
    with pytest.raises(StoreError, match="not a SQLite database"):
        Store(notes, readonly=True)
    assert notes.read_text() == "my precious notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


# -- a real read-only file system ---------------------------------------------------------------
def _ro_script(folder: Path, commands: list[str]) -> list[str]:
    mount = (f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(folder))} && "
             f"mount -o remount,bind,ro {shlex.quote(str(folder))}")
    return ["unshare", "-rm", "sh", "-c", " && ".join([mount, *commands])]


def _ro_mount_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(_ro_script(probe, [f"! touch {shlex.quote(str(probe / 'x'))}"]),
                          capture_output=True)
    return done.returncode == 0


def _sf(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "sparseflow.cli", *args])


def test_read_only_mount_can_be_read(stored, tmp_path):
    if not _ro_mount_works(tmp_path):
        pytest.skip("no read-only bind mounts here (unshare -rm not permitted)")
    root, sweep, rids = stored
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    out = tmp_path / "out"
    out.mkdir()
    r = ("--root", str(copy))
    q = shlex.quote
    cmds = [f"{_sf('runs', 'list', *r)} > {q(str(out / 'list'))}",
            f"{_sf('runs', 'show', rids[1], *r)} > {q(str(out / 'show'))}",
            f"{_sf('runs', 'export', '--out', '-', *r)} > {q(str(out / 'export'))}",
            f"{_sf('sweep', 'status', str(sweep), *r)} > {q(str(out / 'status'))}",
            # the writable open of before fails there: the mount is really read-only
            f"! {_sf('run', '--no-progress', *r, '--set', 'seed=7')} 2> {q(str(out / 'w'))}"]
    if _has_jinja():
        cmds.append(_sf("report", "--out", str(out / "rep"), *r))
    done = subprocess.run(_ro_script(copy, cmds), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert all(rid in (out / "list").read_text() for rid in rids)
    assert rids[1] in (out / "show").read_text()
    assert (out / "export").read_text().count("\n") == 3
    assert "2 runs (2 done)" in (out / "status").read_text()
    assert "sparseflow: error:" in (out / "w").read_text()
    assert not list(copy.glob("sparseflow.db-*"))


def _has_jinja() -> bool:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return False
    return True


def test_read_only_checkpoint_folder_is_one_line(tmp_path):
    """A run whose checkpoint folder is a read-only mount: exit 2, one line naming the folder
    and the cause; its earlier checkpoints stay."""
    if not _ro_mount_works(tmp_path):
        pytest.skip("no read-only bind mounts here (unshare -rm not permitted)")
    root = tmp_path / "root"
    argv = ("run", "--root", str(root), "--json", "--no-progress", "--set", "dataset=synthetic",
            "model=mlp", "arch.depth=1", "arch.width=8", "train.batch_size=32",
            "train.duration=2ep", "data.heldout=32")
    first = subprocess.run(shlex.split(_sf(*argv)), capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    final = Path(summary["checkpoint"])
    final.unlink()
    sidecar_path(final).unlink()
    with Store(root / "sparseflow.db") as st:
        st.set_status(summary["run_id"], "interrupted")
    ckdir = final.parent
    err = tmp_path / "err"
    done = subprocess.run(_ro_script(ckdir, [f"{{ {_sf(*argv)} 2> {shlex.quote(str(err))}; "
                                             f"echo $? > {shlex.quote(str(tmp_path / 'rc'))}; }}"
                                             ]), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rc").read_text().strip() == "2"
    lines = [x for x in err.read_text().splitlines()
             if not x.startswith(("run ", "epoch ", "resuming run "))]
    assert lines == [f"sparseflow: error: {ckdir}: cannot write checkpoint "
                     "(Read-only file system)"], err.read_text()
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(ckdir).values()] == [0, 16]
    assert os.listdir(ckdir) and not [p for p in os.listdir(ckdir) if ".tmp-" in p]
