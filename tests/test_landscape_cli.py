"""`sparseflow analyze interpolate | curve | compare` on stored runs."""

from __future__ import annotations

import json

import pytest

from sparseflow.cli import main
from sparseflow.config import load_config
from sparseflow.training.run import execute

BASE = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=32", "train.batch_size=32",
        "train.duration=3ep", "data.heldout=64", "sparsity=0.8", "flow.enabled=false",
        "sparse.prune_every=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("landscape") / "store"
    scratch = [execute(load_config(None, BASE + ["method=static", "sparse.mask=pruned",
                                                 f"seed={s}"]), root=root, progress=False)
               for s in (1, 2)]
    ticket = execute(load_config(None, BASE + ["method=lottery", "seed=3"]), root=root,
                     progress=False)
    pruned = ticket["ticket_source"]
    other = execute(load_config(None, BASE + ["method=dense", "arch.width=16"]), root=root,
                    progress=False)
    rnd = execute(load_config(None, BASE + ["method=static", "seed=5"]), root=root,
                  progress=False)
    return {"root": root, "scratch": scratch, "ticket": ticket, "pruned": pruned,
            "other": other, "random": rnd}


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_interpolate_endpoints_reproduce_stored_metrics(capsys, runs):
    a, b = runs["scratch"][0], runs["pruned"]
    code, out, err = cli(capsys, "analyze", "interpolate", a["run_id"], b, "--split", "test",
                         "--alphas", "0:1:5", "--json", "--root", str(runs["root"]))
    assert code == 0, err
    res = json.loads(out)
    assert res["alphas"][0] == 0.0 and res["alphas"][-1] == 1.0
    assert res["accuracy"][0] == a["test_accuracy"]  # same examples, same model
    assert res["loss"][0] == pytest.approx(a["test_loss"], rel=1e-6)
    assert res["barrier"] >= 0 and isinstance(res["monotone"], bool)
    for f in ("result.json", "path.csv", "path.png", "path.svg"):
        assert (runs["root"] / "analyses").rglob(f)
    code, out, _ = cli(capsys, "analyze", "interpolate", a["run_id"] + "@0", b, "--alphas",
                       "0:1:3", "--root", str(runs["root"]))
    assert code == 0 and "barrier" in out and "monotone" in out


def test_interpolating_a_run_with_itself_is_flat(capsys, runs):
    a = runs["ticket"]["run_id"]
    code, out, err = cli(capsys, "analyze", "interpolate", a, a, "--alphas=-0.2:1.2:8",
                         "--json", "--root", str(runs["root"]))
    assert code == 0, err
    loss = json.loads(out)["loss"]
    assert max(loss) - min(loss) <= 1e-6 * max(1.0, abs(loss[0]))


def test_curve_sparse_and_dense(capsys, runs):
    a, b = runs["scratch"][0]["run_id"], runs["pruned"]
    for subspace in ("sparse", "dense"):
        code, out, err = cli(capsys, "analyze", "curve", a, b, "--subspace", subspace,
                             "--epochs", "2", "--points", "5", "--json", "--no-progress",
                             "--root", str(runs["root"]))
        assert code == 0, err
        res = json.loads(out)
        assert res["subspace"] == subspace and len(res["loss"]) == 5
        assert res["loss"][0] == pytest.approx(res["linear_loss"][0], rel=1e-5)
        assert res["max_loss"] > 0 and res["linear_max_loss"] > 0


def test_compare_lottery_vs_scratch(capsys, runs):
    ids = [runs["pruned"], runs["ticket"]["run_id"], *[r["run_id"] for r in runs["scratch"]]]
    code, out, err = cli(capsys, "analyze", "compare", *ids, "--json", "--root",
                         str(runs["root"]))
    assert code == 0, err
    res = json.loads(out)
    n = len(ids)
    assert len(res["disagreement"]) == n and all(res["disagreement"][i][i] == 0 for i in range(n))
    assert res["jaccard"][0][1] == 1.0  # the ticket keeps the pruned run's mask
    assert res["jaccard"][0][2] == 1.0  # so do the scratch runs (sparse.mask=pruned)
    assert len(res["mds"]) == n and res["l2_to_init"][1] is not None
    code, out, _ = cli(capsys, "analyze", "compare", *ids[:2], "--root", str(runs["root"]))
    assert code == 0 and "written to" in out


@pytest.mark.parametrize("kind", ["arch", "missing", "masks", "alphas", "one"])
def test_bad_input_exit_2(capsys, runs, kind):
    a = runs["scratch"][0]["run_id"]
    argv = {
        "arch": ["interpolate", a, runs["other"]["run_id"]],
        "missing": ["interpolate", a + "@3", runs["pruned"]],
        "masks": ["interpolate", a, runs["random"]["run_id"]],
        "alphas": ["interpolate", a, runs["pruned"], "--alphas", "1:0:0"],
        "one": ["compare", a],
    }[kind]
    code, _, err = cli(capsys, "analyze", *argv, "--root", str(runs["root"]))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    frag = {"arch": "different architectures", "missing": "no checkpoint at step 3",
            "masks": "mask", "alphas": "alpha", "one": "at least two"}[kind]
    assert frag in err
