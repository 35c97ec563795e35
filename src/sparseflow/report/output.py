"""Where a report's files go: its own folder, and never over a file the report did not write.

A report is written to a staging folder first; only when it is complete are its files moved
into ``DIR`` (``DIR/index.html``, ``DIR/figures/*.{pdf,svg,png}``, ``DIR/tables/*.{csv,tex}``)
and listed in ``DIR/.sparseflow-report.json``. A file already in ``DIR`` that an earlier report
did not list there is somebody else's: the report refuses with one line naming it (``force``
replaces it). Files an earlier report wrote and this one does not are removed, so the folder
always holds one report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from sparseflow.errors import UserError

MANIFEST = ".sparseflow-report.json"


def check_out_dir(outdir: Path) -> None:
    """One-line UserError unless ``outdir`` can be a report folder (not a file, nor under a
    file, nor a path ending in .html); nothing is written."""
    if outdir.suffix.lower() in (".html", ".htm"):
        raise UserError(f"--out: {outdir} names a file; a report is a folder (it writes "
                        f"DIR/index.html, DIR/figures/ and DIR/tables/): pass --out "
                        f"{outdir.with_suffix('')}")
    for path in (outdir, *outdir.parents):
        if path.exists():
            if not path.is_dir():
                raise UserError(f"--out: {path} is a file, not a folder")
            break


def _listed(outdir: Path) -> set[str]:
    """The files an earlier report listed in ``outdir`` (none when there is no manifest)."""
    try:
        data = json.loads((outdir / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    return {str(p) for p in data.get("files", [])} if isinstance(data, dict) else set()


class ReportOutput:
    """Stage a report's files, then move them into ``outdir`` (see the module docstring)."""

    def __init__(self, outdir: Path, *, force: bool = False) -> None:
        check_out_dir(outdir)
        self.outdir, self.force = outdir, force
        if not force:
            self._refuse_foreign()
        self.stage = Path(tempfile.mkdtemp(prefix="sparseflow-report-"))

    def _refuse_foreign(self) -> None:
        """Before anything is drawn: a file in the report's own places (``index.html``,
        ``figures/``, ``tables/``) that no earlier report listed is refused now (the check at
        :meth:`commit` covers whatever appears meanwhile)."""
        if not self.outdir.is_dir():
            return
        listed = _listed(self.outdir)
        mine = [self.outdir / "index.html", *(p for d in ("figures", "tables")
                                               for p in sorted((self.outdir / d).rglob("*")))]
        for path in mine:
            rel = str(path.relative_to(self.outdir))
            if path.is_file() and rel not in listed:
                raise UserError(f"{path}: exists and was not written by a sparseflow report; "
                                "pass --force to replace it, or another --out")

    def path(self, rel: str) -> Path:
        """The staged path of ``rel`` (e.g. ``figures/accuracy``), its folder made."""
        p = self.stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def files(self) -> list[str]:
        """Every staged file, relative to the stage, sorted."""
        return sorted(str(p.relative_to(self.stage)) for p in self.stage.rglob("*")
                      if p.is_file())

    def commit(self) -> Path:
        """Move the staged files into ``outdir``; a one-line UserError (and nothing moved)
        when one would replace a file no sparseflow report wrote there, unless ``force``."""
        try:
            files = self.files()
            before = _listed(self.outdir)
            if not self.force:
                for rel in files:
                    target = self.outdir / rel
                    if target.exists() and rel not in before:
                        raise UserError(f"{target}: exists and was not written by a sparseflow "
                                        "report; pass --force to replace it, or another --out")
            try:
                self.outdir.mkdir(parents=True, exist_ok=True)
                for rel in files:
                    target = self.outdir / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(self.stage / rel), str(target))
                for rel in sorted(before - set(files)):  # the earlier report's leftovers
                    (self.outdir / rel).unlink(missing_ok=True)
                tmp = self.outdir / f".{MANIFEST}.tmp-{os.getpid()}"
                tmp.write_text(json.dumps({"files": files}, indent=1))
                os.replace(tmp, self.outdir / MANIFEST)
            except OSError as e:
                raise UserError(f"{self.outdir}: cannot write the report "
                                f"({e.strerror or e}); pass --out to write it elsewhere"
                                ) from None
            return self.outdir / "index.html"
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.stage, ignore_errors=True)
