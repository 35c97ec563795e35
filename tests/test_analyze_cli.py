"""`sparseflow analyze hessian` and `analyze signal` from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sparseflow.cli import main
from sparseflow.config import load_config
from sparseflow.flow.hessian import hessian_report
from sparseflow.store.database import Store
from sparseflow.training.run import execute, load_data

RUN = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=8", "train.batch_size=64",
       "train.duration=2ep", "data.heldout=64", "method=static", "sparsity=0.8"]


@pytest.fixture
def sparse_run(root):
    return execute(load_config(None, RUN), root=root, progress=False)


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_hessian_json_matches_the_library_and_is_stored(capsys, root, sparse_run):
    rid = sparse_run["run_id"]
    capsys.readouterr()  # the training output of the fixture
    code, out, err = cli(capsys, "analyze", "hessian", rid, "--top-k", "2", "--samples", "0",
                         "--json", "--root", str(root))
    assert code == 0, err
    res = json.loads(out)
    assert res["step"] == sparse_run["steps"] and len(res["top"]) == 2
    assert res["trace"] is None  # no probes: NaN becomes null, the output stays strict JSON
    # independently: rebuild from the final checkpoint and call the function
    from sparseflow.analysis.endpoints import resolve_endpoint

    with Store(root / "sparseflow.db") as st:
        ep = resolve_endpoint(rid, st)
        x, y = load_data(ep.config).heldout[0]
        ep.model.train()
        direct = hessian_report(ep.model, ep.masks, x, y, top_k=2, hutchinson_samples=0)
        stored = dict((r["name"], r["value"]) for r in st.metrics(rid, prefix="hessian/"))
    assert res["top"] == pytest.approx(direct.top, rel=1e-4)
    assert res["n_active"] == sum(int(m.sum()) for m in ep.masks.values())
    assert stored["hessian/top1"] == pytest.approx(res["top"][0])
    code, out, _ = cli(capsys, "analyze", "hessian", rid, "--step", "0", "--top-k", "1",
                       "--samples", "5", "--root", str(root))
    assert code == 0 and "top eigenvalues" in out and "out.weight" in out


@pytest.mark.parametrize("argv, fragment", [
    (["analyze", "hessian", "nosuchrun"], "not found"),
    (["analyze", "hessian", "{rid}", "--step", "3"], "no checkpoint at step 3"),
    (["analyze", "hessian", "{rid}", "--top-k", "100000"], "exceeds"),
    (["analyze", "signal", "--sparsities", "0:2:3"], "sparsit"),
    (["analyze", "signal", "--model", "nosuchmodel", "--sparsities", "0.5"], "nosuchmodel"),
])
def test_bad_input_exit_2(capsys, root, sparse_run, argv, fragment):
    argv = [a.replace("{rid}", sparse_run["run_id"]) for a in argv]
    code, _, err = cli(capsys, *argv, "--root", str(root))
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_hessian_of_a_model_without_sparsifiable_layers_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.ReLU())
    with pytest.raises(ValueError):
        hessian_report(model, None, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))


def test_signal_writes_table_and_figures(capsys, root):
    code, out, err = cli(capsys, "analyze", "signal", "--model", "lenet5", "--sparsities",
                         "0,0.9", "--repeats", "1", "--batch", "64", "--root", str(root))
    assert code == 0, err
    assert "dense" in out and "sparse" in out
    outdir = root / "analyses" / "signal-lenet5"
    for f in ("signal.csv", "signal.json", "signal.png", "signal.svg"):
        assert (outdir / f).stat().st_size > 0
    rows = json.loads((outdir / "signal.json").read_text())
    std = {(r["init"], r["sparsity"]): r["std_mean"] for r in rows}
    assert std[("sparse", 0.9)] > 10 * std[("dense", 0.9)]
