"""A model of one's own by reference: ``model=package.module:factory`` with ``model_args``,
hashed into the run id, trained by every method, and rebuilt by ``analyze``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparseflow.cli import main
from sparseflow.config import load_config, run_id
from sparseflow.errors import ConfigError
from sparseflow.store.checkpoint import load_checkpoint
from sparseflow.training.run import execute

HERE = str(Path(__file__).resolve().parent)
BASE = ["dataset=synthetic", "model=own_models:tiny", "train.duration=2ep", "data.heldout=64",
        "flow.every=10"]


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(HERE)


def test_arguments_name_the_run():
    a = load_config(None, [*BASE, "model_args.hidden=16"])
    b = load_config(None, [*BASE, "model_args.hidden=32"])
    assert a.model_args == {"hidden": 16}
    assert run_id(a) != run_id(b)
    assert run_id(load_config(None, BASE)) == run_id(load_config(None, BASE))


@pytest.mark.parametrize("method", ["rigl", "lottery"])
def test_trains_sparse_with_its_own_arguments(method, tmp_path):
    cfg = load_config(None, [*BASE, f"method={method}", "sparsity=0.8", "model_args.hidden=24",
                             "model_args.depth=2", "sparse.update_every=8"])
    s = execute(cfg, root=tmp_path, progress=False)
    assert s["status"] == "finished" and s["sparsity"] == pytest.approx(0.8, abs=0.01)
    state = load_checkpoint(s["checkpoint"])["model"]
    assert tuple(state["1.weight"].shape) == (24, 20)  # Flatten, Linear(20 -> 24): hidden=24
    assert tuple(state["3.weight"].shape) == (24, 24)  # depth=2


def test_analyze_rebuilds_the_model(tmp_path, capsys):
    cfg = load_config(None, [*BASE, "method=static", "sparsity=0.5", "model_args.hidden=12"])
    s = execute(cfg, root=tmp_path, progress=False)
    capsys.readouterr()
    assert main(["analyze", "hessian", s["run_id"], "--root", str(tmp_path), "--top-k", "2",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    active = sum(int(m.sum()) for m in
                 load_checkpoint(s["checkpoint"])["callbacks"]["sparsifier"]["masks"].values())
    assert res["n_active"] == active and len(res["top"]) == 2


@pytest.mark.parametrize(("sets", "message"), [
    (["model=own_models:nosuch"], "module 'own_models' has no 'nosuch'"),
    (["model=no_such_module:f"], "cannot import 'no_such_module'"),
    (["model=own_models"], "unknown model 'own_models'"),
    (["model=own_models:tiny", "arch.depth=2"], "takes its options from model_args"),
    (["model=own_models:tiny", "method=small_dense"], "cannot be narrowed"),
    (["model=mlp", "model_args.hidden=3"], "model_args: only for a model of your own"),
])
def test_bad_references_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["dataset=synthetic", *sets])


def test_arguments_are_plain_values():
    from sparseflow.config import config_from_dict

    with pytest.raises(ConfigError, match="model_args.hidden: expected a number, string"):
        config_from_dict({"dataset": "synthetic", "model": "own_models:tiny",
                          "model_args": {"hidden": {"a": 1}}})
    with pytest.raises(ConfigError, match="model_args: '2x' is not a valid argument name"):
        config_from_dict({"dataset": "synthetic", "model": "own_models:tiny",
                          "model_args": {"2x": 1}})


def test_a_factory_that_fails_is_one_line_and_writes_nothing(tmp_path):
    for sets, message in ((["model_args.width=3"], "unexpected keyword argument 'width'"),
                          (["model=own_models:not_a_model"], "returned str, expected an")):
        cfg = load_config(None, [*BASE, *sets])
        with pytest.raises(ConfigError, match=message):
            execute(cfg, root=tmp_path, progress=False)
        assert not (tmp_path / "runs").exists()


def test_own_dataset_and_model_together(tmp_path, capsys):
    cfg = load_config(None, ["dataset=own_models:blobs", "dataset_args.n=800",
                             "dataset_args.dim=5", "model=own_models:tiny", "method=set",
                             "sparsity=0.5", "train.duration=3ep", "train.batch_size=32",
                             "data.heldout=100", "sparse.update_every=5"])
    s = execute(cfg, root=tmp_path, progress=False)
    assert s["status"] == "finished"
    assert s["steps"] == 3 * ((800 - 100) // 32)  # 100 examples carved out for measurement
    assert s["test_accuracy"] > 0.6  # 3 well-separated blobs
    state = load_checkpoint(s["checkpoint"])["model"]
    assert tuple(state["1.weight"].shape) == (8, 5)
    other = load_config(None, ["dataset=own_models:blobs", "dataset_args.n=900",
                               "model=own_models:tiny"])
    assert run_id(other) != run_id(load_config(None, ["dataset=own_models:blobs",
                                                      "model=own_models:tiny"]))
    capsys.readouterr()
    assert main(["analyze", "hessian", s["run_id"], "--root", str(tmp_path), "--top-k", "1",
                 "--json"]) == 0


@pytest.mark.parametrize(("sets", "message"), [
    (["dataset=own_models:tensors_not_a_dataset"], "returned list, expected a"),
    (["dataset=own_models:blobs", "dataset_args.bogus=1"], "unexpected keyword argument"),
])
def test_a_dataset_factory_that_fails_is_one_line(sets, message, tmp_path):
    from sparseflow.errors import UserError

    cfg = load_config(None, [*sets, "model=own_models:tiny", "data.heldout=10"])
    with pytest.raises(UserError, match=message):
        execute(cfg, root=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


def test_dataset_args_only_for_own_datasets():
    with pytest.raises(ConfigError, match="dataset_args: only for a dataset of your own"):
        load_config(None, ["dataset=synthetic", "dataset_args.n=3"])


def test_track_records_your_own_loop(tmp_path, capsys):
    """A loop of one's own, recorded with sparseflow.track: runs list shows it by name, and
    analyze interpolate / hessian and the report work on it."""
    import own_models
    import torch
    import torch.nn.functional as F

    import sparseflow

    cfg = load_config(None, ["dataset=own_models:blobs", "model=own_models:tiny",
                             "model_args.hidden=16", "method=rigl", "sparsity=0.5",
                             "data.heldout=100"])
    data = own_models.blobs()
    torch.manual_seed(0)
    model = own_models.tiny((6,), 3, hidden=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps = 60
    sp = sparseflow.rigl(model, opt, sparsity=0.5, total_steps=steps, update_every=10)
    with sparseflow.track(model, cfg, sparsifier=sp, optimizer=opt, root=tmp_path,
                          name="my loop", tags=["own"]) as run:
        run.checkpoint(0)
        g = torch.Generator().manual_seed(1)
        for step in range(1, steps + 1):
            idx = torch.randint(len(data.x_train), (32,), generator=g)
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sp.step()
            run.log(step, {"train_loss": loss.item()})
        with torch.no_grad():
            acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        run.log(steps, {"test_accuracy": acc})
        run.checkpoint(steps)
    capsys.readouterr()
    assert main(["runs", "list", "--root", str(tmp_path), "--json", "--tag", "own"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert row["name"] == "my loop" and row["status"] == "finished"
    assert row["summary"]["test_accuracy"] == acc and row["summary"]["sparsity"] == 0.5
    rid = run.run_id
    assert main(["analyze", "interpolate", f"{rid}@0", rid, "--root", str(tmp_path),
                 "--alphas", "0:1:3", "--mask", "union", "--json"]) == 0
    path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(path["loss"]) == 3
    assert main(["analyze", "hessian", rid, "--root", str(tmp_path), "--top-k", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_active"] == \
        sum(int(m.sum()) for m in sp.masks.masks.values())
    assert main(["report", "--root", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert "my loop" in (tmp_path / "r" / "index.html").read_text()


@pytest.mark.slow
def test_sweep_workers_import_your_own_model_and_data(tmp_path, monkeypatch):
    """A sweep over a model and dataset of one's own trains in Dask worker processes, which
    import the same module (here through PYTHONPATH, as on a cluster)."""
    import os

    from sparseflow.sweep.client import run_sweep

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [HERE, *filter(None, [os.environ.get("PYTHONPATH")])]))
    sweep = tmp_path / "own.yaml"
    sweep.write_text("base:\n  dataset: own_models:blobs\n  dataset_args: {n: 400}\n"
                     "  model: own_models:tiny\n  train.duration: 2ep\n  data.heldout: 50\n"
                     "  flow.enabled: false\n  method: set\n"
                     "grid:\n  model_args.hidden: [8, 16]\n")
    out = run_sweep(sweep, tmp_path / "root", workers=2, progress=False, echo=lambda m: None)
    assert [s["status"] for s in out] == ["finished", "finished"]
    assert len({s["run_id"] for s in out}) == 2
