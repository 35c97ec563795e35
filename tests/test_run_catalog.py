"""Runs you can find: names and tags, what a run is in words, filters by config field and tag,
sorting, and stores of an earlier version gaining the new columns."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sparseflow.analysis.catalog import filter_runs, method_label, parse_where, sort_runs
from sparseflow.cli import main
from sparseflow.config import Config
from sparseflow.errors import ConfigError
from sparseflow.store.database import Store

TINY = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16",
        "train.duration=1ep", "data.heldout=32", "flow.enabled=false"]


def run(root, *sets, name=None, tags=()):
    argv = ["run", "--root", str(root), "--json", "--no-progress", "--set", *TINY, *sets]
    if name:
        argv += ["--name", name]
    for t in tags:
        argv += ["--tag", t]
    assert main(argv) == 0


def listed(root, capsys, *args):
    capsys.readouterr()
    assert main(["runs", "list", "--root", str(root), "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    run(root, "method=dense", name="baseline", tags=("ablation",))
    run(root, "method=static", "sparsity=0.9", tags=("ablation", "scratch"))
    run(root, "method=static", "sparsity=0.9", "init=sparse")
    run(root, "method=rigl", "sparsity=0.8", name="rigl 80%")
    return root


def test_method_labels_say_what_a_run_is():
    assert method_label({"method": "static"}) == "scratch"
    assert method_label({"method": "static", "init": "sparse"}) == "scratch+"
    assert method_label({"method": "static", "sparse": {"mask": "pruned"}}) == \
        "scratch (pruned mask)"
    assert method_label({"method": "rigl", "init": "sparse"}) == "RigL+"
    assert method_label({"method": "gradual"}) == "pruned"
    assert method_label({"method": "my_method"}) == "my_method"


def test_names_and_tags_are_stored_and_listed(store_root, capsys):
    rows = listed(store_root, capsys)
    assert len(rows) == 4
    by_name = {r["name"]: r for r in rows if r["name"]}
    assert set(by_name) == {"baseline", "rigl 80%"}
    assert by_name["baseline"]["tags"] == ["ablation"]
    capsys.readouterr()
    assert main(["runs", "list", "--root", str(store_root)]) == 0
    table = capsys.readouterr().out
    assert "baseline" in table and "scratch+" in table and "RigL" in table
    assert "ablation,scratch" in table


def test_filters_by_config_field_tag_and_status(store_root, capsys):
    assert {r["config"]["init"] for r in listed(store_root, capsys, "--where",
                                                    "method=static", "sparsity=0.9")} == \
        {"dense", "sparse"}
    assert [r["name"] for r in listed(store_root, capsys, "--where", "sparsity=0.8")] == \
        ["rigl 80%"]
    tagged = listed(store_root, capsys, "--tag", "ablation")
    assert len(tagged) == 2
    assert len(listed(store_root, capsys, "--tag", "ablation", "--tag", "scratch")) == 1
    assert len(listed(store_root, capsys, "--status", "finished")) == 4
    assert listed(store_root, capsys, "--where", "method=set") == []


def test_sort_by_column_or_config_field(store_root, capsys):
    acc = [r["summary"]["test_accuracy"]
           for r in listed(store_root, capsys, "--sort=-test_accuracy")]
    assert acc == sorted(acc, reverse=True)
    methods = [r["method"] for r in listed(store_root, capsys, "--sort", "method")]
    assert methods == sorted(methods)


def test_labels_replace_on_a_finished_run(store_root, capsys):
    run(store_root, "method=dense", name="dense again", tags=("x",))
    (row,) = listed(store_root, capsys, "--where", "method=dense")
    assert row["name"] == "dense again" and row["tags"] == ["x"]


def test_bad_filters_are_one_line(store_root, capsys):
    with pytest.raises(ConfigError, match="did you mean 'sparsity'"):
        parse_where(["sparsty=0.9"], Config)
    with pytest.raises(ConfigError, match="--sort: unknown column"):
        sort_runs([], "bogus", [])
    capsys.readouterr()
    assert main(["run", "--name", "a,b", "--root", str(store_root)]) == 2
    assert "expected 1 to 80 printable characters" in capsys.readouterr().err


def test_filter_runs_matches_numbers_and_strings():
    runs = [{"run_id": "a", "config": {"method": "rigl", "sparsity": 0.9}, "tags": ["t"]},
            {"run_id": "b", "config": {"method": "set", "sparsity": 0.8}, "tags": []}]
    assert [r["run_id"] for r in filter_runs(runs, {"sparsity": 0.9})] == ["a"]
    assert [r["run_id"] for r in filter_runs(runs, {"method": "set"})] == ["b"]
    assert [r["run_id"] for r in filter_runs(runs, {}, ["t"])] == ["a"]


def test_a_store_of_an_earlier_version_gains_the_columns(tmp_path):
    """A store written before names and tags existed is read (also read-only) and, once opened
    for writing, gets the columns without losing a row."""
    path = tmp_path / "sparseflow.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL,
            method TEXT, dataset TEXT, model TEXT, seed INTEGER, started REAL, finished REAL,
            host TEXT, pid INTEGER, summary TEXT);
        INSERT INTO runs (run_id, config, status, method, seed)
            VALUES ('abc', '{"method": "dense"}', 'finished', 'dense', 0);
    """)
    con.commit()
    con.close()
    with Store(path, readonly=True) as st:
        (row,) = st.list_runs()
        assert row["name"] is None and row["tags"] == []
    with Store(path) as st:
        st.set_labels("abc", "old run", ["legacy"])
        (row,) = st.list_runs()
        assert row["name"] == "old run" and row["tags"] == ["legacy"]
