"""`sparseflow analyze methods`: one row per model, sparsity and method of a sweep, its numbers
recomputed here from the stored summaries and metric rows."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics

import pytest
from scipy import stats

from sparseflow.cli import main

SWEEP = """
name: tiny-methods
base: {dataset: synthetic, model: mlp, arch.depth: 2, arch.width: 32, train.duration: 3ep,
       data.heldout: 64, train.batch_size: 32, sparse.update_every: 8, flow.around_updates: 1}
grid:
  method: [dense, static, rigl]
  sparsity: [0.8]
seeds: 3
"""


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_method_table_matches_the_stored_runs(capsys, tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(SWEEP)
    root = tmp_path / "root"
    code, _, err = cli(capsys, "sweep", str(f), "--workers", "0", "--no-progress",
                       "--root", str(root))
    assert code == 0, err
    code, out, err = cli(capsys, "analyze", "methods", str(f), "--json", "--root", str(root))
    assert code == 0, err
    res = json.loads(out)
    header, rows = res["header"], res["rows"]
    assert [r[2] for r in rows] == ["dense", "rigl", "static"]
    col = {h: i for i, h in enumerate(header)}
    db = sqlite3.connect(root / "sparseflow.db")
    runs = [(json.loads(c), json.loads(s), rid) for rid, c, s in
            db.execute("SELECT run_id, config, summary FROM runs WHERE status='finished'")]
    for row in rows:
        mine = [(s, rid) for c, s, rid in runs if c["method"] == row[col["method"]]]
        acc = [s["test_accuracy"] for s, _ in mine]
        assert row[col["n"]] == 3
        assert row[col["test acc"]] == pytest.approx(statistics.mean(acc))
        half = stats.t.ppf(0.975, 2) * statistics.stdev(acc) / math.sqrt(3)
        assert row[col["95% CI low"]] == pytest.approx(statistics.mean(acc) - half)
        early, change = [], []
        for s, rid in mine:
            until = math.ceil(0.05 * s["steps"])
            vals = [v for (v,) in db.execute(
                "SELECT value FROM metrics WHERE run_id=? AND name='flow/grad_l2' AND step>0 "
                "AND step<=?", (rid, until))]
            early.append(statistics.mean(vals))
            deltas = [v for (v,) in db.execute(
                "SELECT value FROM metrics WHERE run_id=? AND name='flow_update/delta/grad_l2'",
                (rid,))]
            change.append(statistics.mean(deltas) if deltas else math.nan)
        assert row[col["early ||g||_2"]] == pytest.approx(statistics.mean(early))
        if row[col["method"]] == "rigl":
            assert row[col["change at updates"]] == pytest.approx(statistics.mean(change))
            assert row[col["ITOP rate"]] > 0.2 + 1e-6  # explored beyond its 20% density
        else:
            none = row[col["change at updates"]]
            assert none is None or math.isnan(none)  # no mask update measured
        if row[col["method"]] == "static":
            assert row[col["ITOP rate"]] == pytest.approx(0.2, abs=1e-3)
    text = (root / "analyses" / "methods-tiny-methods" / "methods.md").read_text()
    assert text.startswith("| model | sparsity target | method |") and text.count("\n") == 5
    assert (root / "analyses" / "methods-tiny-methods" / "methods.tex").exists()
    code, _, err = cli(capsys, "analyze", "methods", str(f), "--early", "0", "--root", str(root))
    assert code == 2 and "--early: expected a fraction of training in (0, 1]" in err
