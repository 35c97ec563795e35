"""Runs grouped over seeds (config metadata decides what pools), their statistics and the
CSV / LaTeX tables; run dicts are built by hand as the store keeps them (no training)."""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest
from scipy import stats as st

from sparseflow.analysis.groups import group_key, group_runs, short_field
from sparseflow.analysis.stats import bootstrap_ci, summarize
from sparseflow.analysis.tables import group_table, latex_escape, write_table
from sparseflow.config import load_config
from sparseflow.typed import to_dict


def cfg(*overrides: str) -> dict:
    """A config as the store keeps it (``to_dict`` of the validated config)."""
    return to_dict(load_config(None, list(overrides)))


def run(i: int, *overrides: str, acc: float = 0.9, name: str | None = None,
        status: str = "finished") -> dict:
    config = cfg(*overrides)
    return {"run_id": f"r{i}", "method": config["method"], "seed": config["seed"], "name": name,
            "tags": [], "status": status, "config": config, "summary": {"test_accuracy": acc}}


def test_seed_and_non_number_fields_pool_but_lr_and_duration_do_not():
    base = group_key(cfg("method=rigl"))
    assert group_key(cfg("method=rigl", "seed=3")) == base
    for other in ("threads=4", "device=cpu", "sparse.execution=sparse", "flow.every=7",
                  "sparse.masking=both", "train.checkpoint_every=2ep"):
        assert group_key(cfg("method=rigl", "seed=1", other)) == base, other
    assert group_key(cfg("method=rigl", "optim.lr=0.1")) != base
    assert group_key(cfg("method=rigl", "train.duration=20ep")) != base
    assert "seed" not in base and "threads" not in base


def test_key_reads_old_configs_missing_fields_and_former_names():
    full = cfg("method=rigl", "sparse.update_end=0.5")
    old = {k: v for k, v in full.items() if k != "log"}  # stored before `log` existed
    old["sparse"] = {k: v for k, v in full["sparse"].items() if k != "update_end"}
    old["sparse"]["t_end"] = 0.5  # the former name of sparse.update_end
    assert group_key(old) == group_key(full)


def test_group_runs_pools_seeds_in_first_appearance_order():
    runs = [run(0, "method=rigl", "seed=0", acc=0.90),
            run(1, "method=static", "seed=0", acc=0.80),
            run(2, "method=rigl", "seed=1", "threads=2", "sparse.execution=sparse", acc=0.92),
            run(3, "method=rigl", "seed=2", acc=0.91, status="failed"),
            run(4, "method=static", "seed=5", acc=0.82)]
    groups = group_runs(runs)
    assert [g.n for g in groups] == [2, 2]
    assert [r["run_id"] for r in groups[0].runs] == ["r0", "r2"]
    assert groups[0].values("test_accuracy") == [0.90, 0.92]
    assert "seed" not in groups[0].config
    assert groups[0].varying == {"method": "rigl"} and groups[1].varying == {"method": "static"}
    assert [g.label for g in groups] == ["RigL", "scratch"]


def test_labels_tell_groups_apart():
    runs = [run(0, "method=static"), run(1, "method=static", "init=sparse"),
            run(2, "method=rigl", "optim.lr=0.1"), run(3, "method=rigl", "optim.lr=0.2"),
            run(4, "method=dense")]
    labels = [g.label for g in group_runs(runs)]
    assert labels == ["scratch", "scratch+", "RigL lr=0.1", "RigL lr=0.2", "dense"]
    # sparsity, optimiser and duration written shortly
    runs = [run(0, "method=rigl", "sparsity=0.8", "optim.name=adam", "train.duration=20ep"),
            run(1, "method=rigl", "sparsity=0.9", "optim.name=sgd", "train.duration=20ep"),
            run(2, "method=rigl", "sparsity=0.9", "optim.name=sgd", "train.duration=30ep")]
    labels = [g.label for g in group_runs(runs)]
    assert labels == ["RigL s=0.8 adam duration=20ep", "RigL s=0.9 sgd duration=20ep",
                      "RigL s=0.9 sgd duration=30ep"]
    assert short_field("model_args.hidden", 256) == "hidden=256"
    assert short_field("arch.depth", None) == "depth=default"


def test_user_name_becomes_the_label_and_labels_stay_unique():
    runs = [run(0, "method=rigl", "seed=0", name="ours"),
            run(1, "method=rigl", "seed=1", name="ours"),
            run(2, "method=rigl", "optim.lr=0.2", name="mixed"),
            run(3, "method=rigl", "optim.lr=0.2", "seed=1", name=None)]
    labels = [g.label for g in group_runs(runs)]
    assert labels == ["ours", "RigL"]  # names differ in the second group: method words
    # the same name on two different experiments: the differing field is added
    runs = [run(0, "method=rigl", name="ours"), run(1, "method=rigl", "optim.lr=0.2",
                                                  name="ours")]
    labels = [g.label for g in group_runs(runs)]
    assert labels == ["ours lr=0.05", "ours lr=0.2"]
    # a name equal to another group's method words
    runs = [run(0, "method=rigl", name="RigL"), run(1, "method=rigl", "sparsity=0.5")]
    labels = [g.label for g in group_runs(runs)]
    assert len(set(labels)) == 2 and all(label.startswith("RigL") for label in labels)


def test_many_groups_get_unique_labels():
    runs = [run(i, f"method={m}", f"sparsity={s}", f"optim.lr={lr}")
            for i, (m, s, lr) in enumerate(
                (m, s, lr) for m in ("rigl", "set", "static", "dense")
                for s in (0.5, 0.9) for lr in (0.1, 0.2))]
    groups = group_runs(runs)
    assert len(groups) == 16 and len({g.label for g in groups}) == 16


def test_summary_sample_std_and_t_interval_by_hand():
    xs = [0.91, 0.93, 0.90, 0.95, 0.92]
    s = summarize(xs)
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = st.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    assert s.n == n and s.mean == pytest.approx(mean)
    assert s.std == pytest.approx(statistics.stdev(xs)) and s.std == pytest.approx(std)
    assert (s.ci_low, s.ci_high) == pytest.approx((mean - half, mean + half))
    s90 = summarize(xs, level=0.9)
    assert s90.level == 0.9 and s90.ci_high - s90.ci_low < s.ci_high - s.ci_low


def test_one_value_has_nan_std_and_interval():
    s = summarize([0.9])
    assert s.n == 1 and s.mean == 0.9
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert math.isnan(summarize([]).mean)
    assert all(math.isnan(v) for v in bootstrap_ci([0.9]))
    with pytest.raises(ValueError):
        summarize([1.0, 2.0], level=95)


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    xs = [0.91, 0.93, 0.90, 0.95, 0.92, 0.89, 0.94]
    low, high = bootstrap_ci(xs, seed=3)
    assert (low, high) == bootstrap_ci(xs, seed=3)
    assert low < np.mean(xs) < high
    ys = np.random.default_rng(0).normal(size=20).tolist()
    assert bootstrap_ci(ys, seed=4, n_boot=500) != bootstrap_ci(ys, seed=5, n_boot=500)
    mlow, mhigh = bootstrap_ci(xs, stat=np.median, n_boot=2000)
    alow, ahigh = bootstrap_ci(xs, stat=lambda a: float(np.median(a)), n_boot=2000)
    assert (mlow, mhigh) == pytest.approx((alow, ahigh))  # vectorised = one by one


def test_group_table_rows():
    runs = [run(0, "method=rigl", "seed=0", acc=0.90), run(1, "method=rigl", "seed=1", acc=0.92),
            run(2, "method=dense", acc=0.95)]
    header, rows = group_table(group_runs(runs), "test_accuracy")
    assert header == ["label", "sparsity", "n", "mean", "std", "95% CI low", "95% CI high",
                      "min", "max"]
    rigl, dense = rows
    s = summarize([0.90, 0.92])
    assert rigl == ["RigL", 0.9, 2, s.mean, s.std, s.ci_low, s.ci_high, 0.90, 0.92]
    assert dense[:3] == ["dense", None, 1] and math.isnan(dense[4])
    header, rows = group_table(group_runs(runs), "test_accuracy", sparsity=False)
    assert "sparsity" not in header and len(rows[0]) == len(header)
    assert group_table(group_runs(runs), "no_such_metric")[1] == []


def test_latex_escape():
    assert latex_escape("a_b & 50%") == r"a\_b \& 50\%"
    assert latex_escape(r"$#{}~^\x") == \
        r"\$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}x"


def test_write_table_csv_round_trip_and_booktabs(tmp_path):
    header = ["label", "sparsity", "n", "mean", "std"]
    rows = [["a_b & 50%", 0.9, 3, 0.123456789, math.nan], ["dense", None, 1, 1 / 3, 2.5e-7]]
    csv_path, tex_path = write_table(header, rows, tmp_path / "out" / "acc_s0.9")
    assert csv_path.name == "acc_s0.9.csv" and tex_path.name == "acc_s0.9.tex"
    with csv_path.open(newline="") as f:
        back = list(csv.reader(f))
    assert back[0] == header
    assert back[1][0] == "a_b & 50%" and float(back[1][3]) == 0.123456789
    assert math.isnan(float(back[1][4])) and back[2][1] == "" and float(back[2][3]) == 1 / 3
    tex = tex_path.read_text()
    lines = tex.splitlines()
    assert lines[0] == r"\begin{tabular}{l r r r r}"
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule"
    assert lines[-2] == r"\bottomrule" and lines[-1] == r"\end{tabular}"
    assert lines[4] == r"a\_b \& 50\% & 0.9000 & 3 & 0.1235 & -- \\"
    assert lines[5] == r"dense &  & 1 & 0.3333 & $2.500 \times 10^{-7}$ \\"
