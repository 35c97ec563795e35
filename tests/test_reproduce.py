"""`sparseflow reproduce PAPER --scale smoke`: each preset runs end to end and judges claims."""

from __future__ import annotations

import json

import pytest

from sparseflow.cli import main
from sparseflow.studies.claims import FAILED, HELD, INCONCLUSIVE, UNMEASURABLE

VERDICTS = {HELD, FAILED, UNMEASURABLE, INCONCLUSIVE}


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
    # what REPRODUCTION.md is generated from: the command, seeds, wall time, environment
    assert stored["command"] == f"sparseflow reproduce {paper} --scale smoke --workers 0"
    assert stored["seeds"] and 0 in stored["seeds"] and stored["wall_seconds"] > 0
    assert stored["runs"] >= len(stored["preset"]["methods"]) and stored["runs_reused"] == 0
    env = stored["environment"]
    assert env["commit"] and env["cpu"] and env["torch"] and env["python"] and env["date"]
    from sparseflow.studies.document import document

    doc = document(root)
    assert f"(`{paper}`)" in doc and f"`{stored['command']}`" in doc
    assert all(c["verdict"] in doc for c in stored["claims"])
    md = (outdir / "claims.md").read_text()
    assert "| # | claim | verdict | measured | effect [95% CI] (n) |" in md
    assert "setting: the preset's own" in md
    if paper == "evci2022":  # one seed per side at smoke scale: no interval, no verdict
        claim4 = next(c for c in res["claims"] if c["number"] == 4)
        assert claim4["verdict"] == INCONCLUSIVE and claim4["n"] == 1
        assert claim4["effect"] is not None and "Welch t interval" in claim4["rule"]
        for c in (c for c in res["claims"] if c["number"] == 2):
            assert c["n"] == 1 and "over that of" in c["rule"]
            assert c["verdict"] in (INCONCLUSIVE, UNMEASURABLE)
    report = outdir / "report" / "index.html"
    assert res["report"] == str(report) and report.stat().st_size > 1000
    want = {"evci2019": ["figures/linear_paths.png", "figures/curves.png",
                         "figures/barrier_vs_sparsity_lenet300.png", "tables/barriers.csv"],
            "evci2022": ["figures/signal_propagation.png", "figures/gradient_norm_early.png",
                         "figures/gradient_norm_early_vs_paper.png", "figures/paths_to_pruned.png",
                         "figures/mask_update_change.png", "figures/disagreement_vs_paper.png",
                         "tables/lottery_table.csv"],
            "tessera2021": ["tables/correlations.csv", "tables/scsdc_pvalues.csv"]}[paper]
    assert set(want) <= set(res["figures"])
    for name in want:
        assert name in md  # listed with its caption
        if name.startswith("figures/"):
            stem = (outdir / name).with_suffix("")
            assert stem.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
            assert stem.with_suffix(".svg").stat().st_size > 0
        else:
            assert (outdir / name).with_suffix(".tex").read_text().count("\\toprule") == 1
    if paper == "evci2019":  # the barrier row is the mean of the stored lines' barriers
        found = sorted((root / "analyses").glob("evci2019-*/bezier-sparse-*/result.json"))
        assert len(found) == 2 and len(list((root / "analyses").glob(
            "evci2019-*/init-line-*/result.json"))) == 2  # two sparsities, one seed
        line = [c for c in res["claims"] if "crosses a loss barrier" in c["text"]]
        barriers = [json.loads(f.read_text())["linear_barrier"] for f in found]
        assert line[0]["effect"] == pytest.approx(sum(barriers) / 2)
        assert line[0]["verdict"] == INCONCLUSIVE  # one seed per setting: no interval


def test_unknown_paper_or_scale_exit_2(capsys, tmp_path):
    assert main(["reproduce", "nosuchpaper", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseflow: error: reproduce: argument paper: invalid choice")
    assert len(err.strip().splitlines()) == 1
    from sparseflow.errors import UserError
    from sparseflow.studies.reproduce import reproduce

    with pytest.raises(UserError, match="scale"):
        reproduce("evci2019", "huge", tmp_path)
