"""`sparseflow demo` (the README's main job) at one epoch per run."""

from __future__ import annotations

import re

import pytest

from sparseflow.cli import main


@pytest.mark.slow
def test_demo_runs_the_default_study(capsys, tmp_path):
    code = main(["demo", "--epochs", "1", "--workers", "0", "--no-progress", "--root",
                 str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    for name in ("dense", "scratch", "scratch+", "SET", "RigL", "lottery", "gradual"):
        assert re.search(rf"{re.escape(name)} 0\.\d{{4}}", out), (name, out)
    assert not out.startswith("setting:")  # the base's own setting: no setting line
    report = tmp_path / "report" / "default-study" / "index.html"
    assert f"report: {report}" in out and report.stat().st_size > 10_000
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 4
