"""`sparseflow reproduce PAPER --scale smoke`: each preset runs end to end and judges claims."""

from __future__ import annotations

import json

import pytest

from sparseflow.cli import main
from sparseflow.studies.reproduce import FAILED, HELD, UNMEASURABLE

VERDICTS = {HELD, FAILED, UNMEASURABLE}


@pytest.mark.slow
@pytest.mark.parametrize("paper, numbers", [("evci2019", {5}), ("evci2022", {1, 2, 3, 4}),
                                            ("tessera2021", {6, 7})])
def test_smoke_presets(capsys, tmp_path, paper, numbers):
    root = tmp_path / "root"
    code = main(["reproduce", paper, "--scale", "smoke", "--workers", "0", "--no-progress",
                 "--json", "--root", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert {c["number"] for c in res["claims"]} == numbers
    assert all(c["verdict"] in VERDICTS and c["measured"] for c in res["claims"])
    outdir = root / "reproduce" / f"{paper}-smoke"
    assert res["dir"] == str(outdir) and res["setting"] == []  # the preset's own setting
    stored = json.loads((outdir / "claims.json").read_text())
    assert (stored["paper"], stored["scale"], stored["setting"]) == (paper, "smoke", [])
    assert [c["verdict"] for c in stored["claims"]] == [c["verdict"] for c in res["claims"]]
    md = (outdir / "claims.md").read_text()
    assert "| # | claim | verdict | measured |" in md and "setting: the preset's own" in md
    report = outdir / "report" / "index.html"
    assert res["report"] == str(report) and report.stat().st_size > 1000
    if paper == "evci2019":  # the measured barrier is the stored interpolation's barrier
        path = next((root / "analyses").glob("interpolate-*_*-*/result.json"))
        assert path.exists()


def test_unknown_paper_or_scale_exit_2(capsys, tmp_path):
    assert main(["reproduce", "nosuchpaper", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseflow: error: reproduce: argument paper: invalid choice")
    assert len(err.strip().splitlines()) == 1
    from sparseflow.errors import UserError
    from sparseflow.studies.reproduce import reproduce

    with pytest.raises(UserError, match="scale"):
        reproduce("evci2019", "huge", tmp_path)
