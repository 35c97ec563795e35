"""Sweeps: the file format, expansion, source runs, and running on Dask (LocalCluster) and
in-process with the same results; bad input fails fast with one line and starts nothing."""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import pytest

from sparseflow.config import load_config, run_id
from sparseflow.errors import ConfigError, UserError
from sparseflow.store.database import Store
from sparseflow.sweep.client import results_table, run_sweep
from sparseflow.sweep.plan import plan
from sparseflow.sweep.spec import expand, load_sweep, points
from sparseflow.sweep.status import status_table, sweep_status
from sparseflow.training.lineage import source_configs

TINY = """
base:
  dataset: synthetic
  model: mlp
  arch: {depth: 1, width: 16}
  train.batch_size: 64
  data.heldout: 64
  train.duration: 3ep
  sparsity: 0.8
  sparse.prune_every: 4
"""

# 2 dense points, 2 diverging ones (lr 1e6, constant schedule), 2 lottery tickets that share
# one gradual-pruning source run: 6 points, 7 runs.
MIXED = TINY + """
zip:
  method: [dense, dense, lottery]
  optim.lr: [0.05, 1.0e6, 0.05]
  optim.schedule: [cosine, constant, cosine]
seeds: 2
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# -- format and expansion ------------------------------------------------------------------
def test_grid_zip_seeds_counts_and_order(tmp_path):
    s = load_sweep(write(tmp_path, TINY + textwrap.dedent("""
        grid:
          sparsity: [0.5, 0.8, 0.9]
          optim.name: [sgd, adam]
        zip:
          optim.lr: [0.1, 0.01]
          train.duration: [2ep, 4ep]
        seeds: [3, 5]
        """)))
    assert s.name == "sweep" and s.seeds == [3, 5] and s.size == 3 * 2 * 2 * 2
    pts = points(s)
    assert len(pts) == 24
    assert pts[0] == {"sparsity": 0.5, "optim.name": "sgd", "optim.lr": 0.1,
                      "train.duration": "2ep", "seed": 3}
    assert pts[1]["seed"] == 5 and pts[2]["optim.lr"] == 0.01  # seeds vary fastest, zip next
    cfgs = expand(s)
    assert len(cfgs) == 24 and len({run_id(c) for c in cfgs}) == 24
    assert {(c.optim.lr, c.train.duration) for c in cfgs} == {(0.1, "2ep"), (0.01, "4ep")}
    assert all(c.model == "mlp" and c.arch.width == 16 for c in cfgs)
    assert load_sweep(write(tmp_path, "seeds: 4\n", "n.yaml")).seeds == [0, 1, 2, 3]


def test_dotted_and_nested_base_are_the_same(tmp_path):
    nested = load_sweep(write(tmp_path, """
        base: {optim: {lr: 0.2, name: adam}, train: {duration: 2ep}}
        grid: {seed: [0, 1]}
        """, "a.yaml"))
    dotted = load_sweep(write(tmp_path, """
        name: dotted
        base: {optim.lr: 0.2, optim.name: adam, train.duration: 2ep}
        grid: {seed: [0, 1]}
        """, "b.yaml"))
    assert dotted.name == "dotted"
    assert [run_id(c) for c in expand(nested)] == [run_id(c) for c in expand(dotted)]
    assert expand(nested)[0].optim.lr == 0.2


def test_duplicates_removed_order_stable(tmp_path):
    # flow.enabled does not name the run, and a repeated value is the same run
    s = load_sweep(write(tmp_path, TINY + textwrap.dedent("""
        grid:
          optim.lr: [0.1, 0.2, 0.1]
          flow.enabled: [true, false]
        """)))
    cfgs = expand(s)
    assert [c.optim.lr for c in cfgs] == [0.1, 0.2]
    assert all(c.flow.enabled for c in cfgs)  # the first of each run id is kept


@pytest.mark.parametrize("text, needle", [
    ("grid: [unclosed\n", "not valid YAML at line"),
    ("- a\n- b\n", "expected a mapping"),
    ("grd: {seed: [1]}\n", "unknown sweep key 'grd' (did you mean 'grid'?)"),
    ("grid: {optim.lrr: [0.1]}\n", "grid axis 'optim.lrr' is not a config field "
                                   "(did you mean 'optim.lr'?)"),
    ("zip: {lr: [0.1]}\n", "zip axis 'lr' is not a config field (did you mean 'optim.lr'?)"),
    ("base: {optim.lr: -1}\n", "base: optim.lr: -1.0 is out of range"),
    ("base: {modle: mlp}\n", "'modle' is not a config field (did you mean 'model'?)"),
    ("grid: {sparsity: []}\n", "grid axis 'sparsity' has no values (empty grid"),
    ("grid: {}\n", "grid is empty"),
    ("grid: {sparsity: 0.5}\n", "expected a list of values"),
    ("seeds: 0\n", "seeds: 0 gives no runs (empty grid)"),
    ("seeds: []\n", "seeds: the list is empty"),
    ("zip: {optim.lr: [0.1, 0.2], sparsity: [0.5]}\n",
     "zip: every list must have the same length (optim.lr has 2, sparsity has 1)"),
    ("grid: {sparsity: [0.5, 2.0]}\n", "point sparsity=2.0: sparsity: 2.0 is out of range"),
    ("grid: {seed: [1]}\nseeds: 2\n", "seeds and a 'seed' axis"),
])
def test_bad_sweep_files_one_line_errors(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        expand(load_sweep(path))
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg
    with pytest.raises(ConfigError):  # run_sweep validates before starting anything
        run_sweep(path, tmp_path / "root", workers=0)
    assert not (tmp_path / "root").exists()


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read sweep file"):
        load_sweep(tmp_path / "nope.yaml")


# -- source runs ---------------------------------------------------------------------------
def test_source_configs_and_plan_order():
    base = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16", "sparsity=0.8"]
    lottery = load_config(None, base + ["method=lottery"])
    (src,) = source_configs(lottery)
    assert src.method == "gradual" and src.seed == lottery.sparse.source_seed
    scratch = load_config(None, base + ["method=static", "sparse.mask=pruned", "seed=3"])
    assert [run_id(c) for c in source_configs(scratch)] == [run_id(src)]
    assert source_configs(load_config(None, base + ["method=rigl"])) == []

    imp = load_config(None, base + ["method=lottery", "sparse.ticket=imp", "sparse.rounds=3",
                                    "sparse.rewind=5it"])
    chain = source_configs(imp)
    assert [(c.method, c.sparse.rounds) for c in chain] == [("dense", 1), ("lottery", 1),
                                                             ("lottery", 2)]
    assert chain[0].train.checkpoint_steps == [5]  # the rewind point is checkpointed
    assert chain[1].sparsity < chain[2].sparsity < imp.sparsity

    # sources first, each once; a second rewind point is merged into the shared source
    other = load_config(None, base + ["method=lottery", "sparse.rewind=7it", "seed=1"])
    lottery5 = load_config(None, base + ["method=lottery", "sparse.rewind=5it"])
    runs = plan([lottery5, other, scratch])
    assert [r.config.method for r in runs] == ["gradual", "lottery", "lottery", "static"]
    assert [r.point for r in runs] == [False, True, True, True]
    assert runs[0].config.train.checkpoint_steps == [5, 7]
    assert all(r.needs == [runs[0].run_id] for r in runs[1:])


# -- running -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The mixed sweep run in-process and on a LocalCluster of 2 worker processes."""
    tmp = tmp_path_factory.mktemp("sweep")
    path = write(tmp, MIXED)
    out = {"path": path, "lines": {}}
    for name, workers in (("inproc", 0), ("dask", 2)):
        lines: list[str] = []
        t0 = time.perf_counter()
        out[name] = run_sweep(path, tmp / name, workers=workers, progress=False,
                              echo=lines.append)
        out["lines"][name] = lines
        out[f"{name}_seconds"] = time.perf_counter() - t0
        out[f"{name}_root"] = tmp / name
    return out


def test_inprocess_and_localcluster_agree(swept, metric_rows):
    a, b = swept["inproc"], swept["dask"]
    assert [s["run_id"] for s in a] == [s["run_id"] for s in b]
    assert [s["status"] for s in a] == ["finished", "finished", "diverged", "diverged",
                                        "finished", "finished"]
    for x, y in zip(a, b, strict=True):
        for key in ("status", "test_accuracy", "test_loss", "train_loss", "steps",
                    "diverged_step", "sparsity"):
            assert x.get(key) == y.get(key), (x["run_id"], key)
    ma, mb = metric_rows(swept["inproc_root"]), metric_rows(swept["dask_root"])
    assert ma == mb and len(ma) == 7  # every run (the source too), every row, same values
    assert any(name.startswith("flow/") for _, name, _ in ma[a[0]["run_id"]])


def test_store_holds_each_run_once_with_metrics(swept):
    with Store(swept["dask_root"] / "sparseflow.db") as st:
        runs = st.list_runs()
        assert len(runs) == len({r["run_id"] for r in runs}) == 7
        for s in swept["dask"]:
            row = st.get_run(s["run_id"])
            assert row["status"] == s["status"] and row["summary"] == s
            assert st.series(s["run_id"], "test_accuracy") or s["status"] == "diverged"
            assert row["pid"] is not None  # the client's pid: only the client writes
    # workers leave no journal behind once the client has the run
    assert not list((swept["dask_root"] / "runs").glob("*/sweep-events.jsonl"))


def test_diverged_point_recorded_and_sweep_goes_on(swept):
    div = [s for s in swept["dask"] if s["status"] == "diverged"]
    assert len(div) == 2
    for s in div:
        assert s["diverged_step"] == 24 and s["test_accuracy"] is None
    assert any("diverged at step 24" in line for line in swept["lines"]["dask"])
    status = sweep_status(load_sweep(swept["path"]), swept["dask_root"])
    assert sorted(status["diverged"]) == sorted(s["run_id"] for s in div)
    assert len(status["done"]) == 5 and not status["pending"] and not status["failed"]
    table = status_table(load_sweep(swept["path"]), swept["dask_root"])
    assert "diverged@24" in table and "source" in table and "7 runs (5 done, 2 diverged)" in table
    assert "diverged@24" in results_table(swept["dask"])


def test_sources_trained_first_and_once(swept):
    sweep = load_sweep(swept["path"])
    runs = plan(expand(sweep))
    (src,) = [r for r in runs if not r.point]
    tickets = [s for s in swept["dask"] if s["method"] == "lottery"]
    with Store(swept["dask_root"] / "sparseflow.db") as st:
        source_row = st.get_run(src.run_id)
        assert source_row["status"] == "finished" and source_row["method"] == "gradual"
        for t in tickets:
            assert t["ticket_source"] == src.run_id
            # submitted only after the client had stored the source as finished
            assert st.get_run(t["run_id"])["started"] >= source_row["finished"]
    assert sum(f"{src.run_id} gradual" in line for line in swept["lines"]["dask"]) == 1


def test_second_invocation_retrains_nothing(swept):
    root = swept["dask_root"]
    with Store(root / "sparseflow.db") as st:
        before = {r["run_id"]: r["finished"] for r in st.list_runs()}
    lines: list[str] = []
    t0 = time.perf_counter()
    again = run_sweep(swept["path"], root, workers=2, progress=False, echo=lines.append)
    assert time.perf_counter() - t0 < 2.0  # no cluster is even started
    assert again == swept["dask"]
    assert lines == ["all 7 runs of the sweep are done"]
    with Store(root / "sparseflow.db") as st:
        assert {r["run_id"]: r["finished"] for r in st.list_runs()} == before


def test_dry_run_starts_nothing(tmp_path):
    path = write(tmp_path, MIXED)
    lines: list[str] = []
    out = run_sweep(path, tmp_path / "root", workers=2, dry_run=True, echo=lines.append)
    assert [s["status"] for s in out] == ["pending"] * 6
    assert lines[0] == "7 runs: 0 already done or running, 7 to run"
    assert sum(line.startswith("would run") for line in lines) == 7
    assert "[source]" in lines[5]  # the gradual source is listed before its tickets
    assert not (tmp_path / "root").exists()


def test_dry_run_after_partial_sweep(swept, tmp_path):
    lines: list[str] = []
    out = run_sweep(swept["path"], swept["dask_root"], dry_run=True, echo=lines.append)
    assert out == swept["dask"] and lines == ["7 runs: 7 already done or running, 0 to run"]


def test_unreachable_scheduler_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write(tmp_path, TINY + "seeds: 2\n")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        run_sweep(path, tmp_path / "root", scheduler=f"tcp://127.0.0.1:{port}",
                  connect_timeout=3.0)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert msg.startswith(f"cannot reach Dask scheduler at tcp://127.0.0.1:{port}")
    assert "\n" not in msg
    assert not (tmp_path / "root").exists()  # no runs started, no store created
    with pytest.raises(UserError, match="not a Dask address"):
        run_sweep(path, tmp_path / "root", scheduler="tcp://[::1", connect_timeout=1.0)


def test_bad_workers(tmp_path):
    with pytest.raises(UserError, match="--workers: expected 0 or more"):
        run_sweep(write(tmp_path, TINY), tmp_path / "root", workers=-1)
