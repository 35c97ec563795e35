"""`sparseflow sweep`, `sweep status`, `scsdc` and `analyze correlate` from the command line."""

from __future__ import annotations

import json

import pytest

from sparseflow.cli import main

SWEEP = """
name: tiny
base: {dataset: synthetic, train.duration: 2ep, data.heldout: 64, train.batch_size: 64}
grid:
  optim.name: [sgd, adam]
zip:
  optim.lr: [0.01]
seeds: 2
scsdc:
  sparse_width: 32
  dense_widths: [8]
  depths: [1, 2]
"""


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_scsdc_sweep_status_and_correlate(capsys, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(SWEEP)
    root = str(tmp_path / "root")
    code, out, err = cli(capsys, "sweep", "status", str(f), "--root", root)
    assert code == 0 and out.count("pending") >= 16, out
    code, out, err = cli(capsys, "scsdc", str(f), "--workers", "0", "--no-progress", "--json",
                         "--root", root)
    assert code == 0, err
    res = json.loads(out)
    assert len(res["rows"]) == 4 and res["pending"] == 0  # 2 optimisers x 2 depths
    for r in res["rows"]:
        assert r["n_sparse"] == r["n_dense"] == 2
        assert r["mwu_p"] is None or 0 <= r["mwu_p"] <= 1
    code, out, _ = cli(capsys, "sweep", "status", str(f), "--root", root)
    rows = [ln for ln in out.splitlines() if " point " in ln]
    assert code == 0 and len(rows) == 16 and all(" done " in ln for ln in rows)
    code, out, err = cli(capsys, "sweep", str(f), "--workers", "0", "--no-progress", "--json",
                         "--root", root)
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert code == 0 and len(lines) == 16 and all(x["status"] == "finished" for x in lines)
    code, out, err = cli(capsys, "analyze", "correlate", str(f), "--json", "--root", root)
    rows = json.loads(out)["rows"]
    assert {r["group"] for r in rows} == {"sparse", "dense"}
    assert all(r["n"] == 8 for r in rows)  # 8 sparse and 8 dense runs, all with flow measures
    out_html = tmp_path / "rep" / "index.html"
    code, out, err = cli(capsys, "report", "--sweep", str(f), "--out", str(out_html.parent),
                         "--root", root)
    assert code == 0, err
    html = out_html.read_text()
    assert "SC-SDC" in html and "Gradient flow vs performance" in html
    n_cells = len(res["rows"]) * 2  # two p-value columns per cell, each coloured by its p
    coloured = html.count('class=" sig"') + html.count('class=" nonsig"')
    expected = sum(1 for r in res["rows"] for p in (r["welch_p"], r["mwu_p"])
                   if p is not None and (p < 0.05 or p > 0.5))
    assert coloured == expected <= n_cells


@pytest.mark.parametrize("text, fragment", [
    ("grid: {optim.lrr: [0.1]}\n", "did you mean 'optim.lr'"),
    ("grid: {seed: []}\n", "empty"),
    ("grid: [1, 2\n", "not valid YAML"),
    ("scsdc: {sparse_width: 8, dense_widths: [16], depths: [1]}\n", "wider"),
])
def test_bad_sweep_files_exit_2(capsys, tmp_path, text, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    code, _, err = cli(capsys, "sweep", str(f), "--workers", "0", "--root", str(tmp_path / "r"))
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "runs").exists()  # no runs started
