"""Study tables: correlation rows per group, SC-SDC p-values per cell."""

from __future__ import annotations

import pytest

from sparseflow.analysis.tables import correlation_table, format_correlations, scsdc_table


def _run(method, egf, gl2, acc):
    return {"status": "finished", "config": {"method": method},
            "summary": {"egf_l1_mean11": egf, "egf_l2_mean11": egf, "grad_l1_mean11": gl2,
                        "grad_l2_mean11": gl2, "test_accuracy": acc, "test_loss": 1 - acc}}


def test_correlations_are_per_group_and_signed():
    runs = [_run("static", e, g, a) for e, g, a in
            [(1, 3, 0.1), (2, 1, 0.2), (3, 4, 0.3), (4, 2, 0.4), (5, 5, 0.5)]]
    runs += [_run("dense", e, e, 1 - 0.1 * e) for e in (1, 2, 3, 4)]
    runs.append({**_run("static", 9, 9, 0.9), "status": "diverged"})  # left out
    rows = correlation_table(runs, lambda r: r["config"]["method"] != "dense")
    by = {(r["group"], r["measure"], r["target"]): r for r in rows}
    assert by[("sparse", "EGF_1", "test_accuracy")]["kendall_tau"] == pytest.approx(1.0)
    assert by[("sparse", "EGF_1", "test_loss")]["kendall_tau"] == pytest.approx(-1.0)
    assert by[("sparse", "EGF_1", "test_accuracy")]["n"] == 5
    # ||g|| ranks 3,1,4,2,5 vs accuracy: 7 concordant, 3 discordant pairs of 10
    assert by[("sparse", "||g||_2", "test_accuracy")]["kendall_tau"] == pytest.approx(0.4)
    assert by[("dense", "EGF_2", "test_accuracy")]["kendall_tau"] == pytest.approx(-1.0)
    text = format_correlations(rows)
    assert "EGF_1" in text and "sparse" in text


def test_scsdc_cells():
    pairs = [{"cell": ("d1", 32), "kind": "sparse", "accuracy": a} for a in (0.90, 0.91, 0.92)]
    pairs += [{"cell": ("d1", 32), "kind": "dense", "accuracy": a} for a in (0.85, 0.86, 0.84)]
    pairs += [{"cell": ("d2", 32), "kind": "sparse", "accuracy": a} for a in (0.80, 0.81, 0.79)]
    pairs += [{"cell": ("d2", 32), "kind": "dense", "accuracy": a} for a in (0.85, 0.86, 0.87)]
    rows = {r["cell"]: r for r in scsdc_table(pairs)}
    assert rows[("d1", 32)]["welch_p"] < 0.01 and rows[("d1", 32)]["mwu_p"] == pytest.approx(0.05)
    assert rows[("d2", 32)]["welch_p"] > 0.99
