"""`sparseflow reproduce PAPER --dry-run`: every run (sources too) with its estimated cost,
nothing trained or written; the FLOP count of the cost model; the data check before
scheduling (a missing dataset is one line and exit 2)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sparseflow.cli import main
from sparseflow.config import load_config, run_id
from sparseflow.data.availability import dataset_info, dataset_status, ensure_dataset
from sparseflow.errors import UserError
from sparseflow.studies import cost
from sparseflow.studies.reproduce import PLANS, reproduce
from sparseflow.studies.setting import Setting
from sparseflow.training.lineage import source_configs


def _expected(paper: str, scale: str) -> tuple[set[str], set[str]]:
    """Run ids of the preset's own runs and of the sources they need."""
    configs = PLANS[paper](scale, Setting())
    own = {run_id(c) for c in configs}
    return own, {run_id(s) for c in configs for s in source_configs(c)} - own


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("paper", ["evci2022", "evci2019", "tessera2021"])
def test_dry_run_lists_plan_and_sources(tmp_path, paper, scale):
    root = tmp_path / "root"
    res = reproduce(paper, scale, root, dry_run=True, probe=False)
    own, sources = _expected(paper, scale)
    listed = {r["run_id"]: r for r in res["runs"]}
    assert len(listed) == len(res["runs"])  # each run once
    assert set(listed) == own | sources
    assert {i for i, r in listed.items() if r["role"] == "source"} == sources
    if paper != "tessera2021":  # scratch on the pruned mask and the ticket need a pruned run
        assert sources and all(listed[s]["method"] == "gradual" for s in sources)
    for r in res["runs"]:
        assert r["steps"] > 0 and r["epochs"] > 0 and r["forward_macs"] > 0
        assert r["total_flops"] > r["train_flops"] > 0
        assert r["cpu_seconds"] > 0 and r["gpu_seconds"] > 0
        assert r["status"] == "to train"
    t = res["total"]
    assert t["runs"] == len(own | sources) and t["to_train"] == t["runs"]
    assert t["cpu_hours"] > 0 and t["gpu_hours"] > 0 and t["flops"] > 0
    assert res["command"] == f"sparseflow reproduce {paper} --scale {scale}"
    assert bool(res["analyses"]) == (paper != "tessera2021")
    assert not root.exists()  # nothing written, not even the store


def test_dry_run_reads_the_store_and_changes_nothing(tmp_path):
    from sparseflow.store.database import Store
    from sparseflow.store.paths import store_path

    root = tmp_path / "root"
    with Store(store_path(root)):
        pass
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    res = reproduce("evci2019", "smoke", root, dry_run=True)  # with the timing probe
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert res["probe"]["on"] and res["probe"]["architectures"] == 1
    assert all(r["probe"]["seconds_per_step"] > 0 for r in res["runs"])
    assert res["data"] and res["data"][0]["name"] == "fashion_mnist"


def test_forward_macs_of_a_hand_built_model():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                        nn.ReLU(), nn.Linear(100, 10))
    assert cost.forward_macs(mlp, (1, 28, 28)) == 784 * 300 + 300 * 100 + 100 * 10
    # a 5x5 convolution 1 -> 6 channels on 28x28 (valid: 24x24 outputs), a grouped 3x3 one
    # 6 -> 6 in 2 groups (22x22 outputs), then a Linear layer
    conv = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=2),
                         nn.Flatten(), nn.Linear(6 * 22 * 22, 10))
    want = 6 * 24 * 24 * 25 + 6 * 22 * 22 * 3 * 9 + 6 * 22 * 22 * 10
    assert cost.forward_macs(conv, (1, 28, 28)) == want
    with torch.device("meta"):
        on_meta = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=2),
                                nn.Flatten(), nn.Linear(6 * 22 * 22, 10))
    assert cost.forward_macs(on_meta, (1, 28, 28)) == want
    assert cost.weight_layers(conv) == 3


def test_run_cost_counts_steps_evaluations_and_flow():
    cfg = load_config(None, ["dataset=synthetic", "model=mlp", "arch.depth=1",
                             "arch.width=16", "data.n_train=512", "train.batch_size=64",
                             "train.duration=2ep", "flow.enabled=false", "method=dense"])
    c = cost.run_cost(cfg, probe=False)
    macs = 20 * 16 + 16 * 4  # synthetic: 20 inputs, 4 classes
    assert c.forward_macs == macs and c.n_train == 512
    assert (c.steps, c.epochs) == (16, 2.0)
    assert c.train_flops == 3 * 2 * macs * 64 * 16
    assert c.eval_flops == 2 * macs * 256 * 2  # the test set after epochs 1 and 2
    assert c.flow_flops == 0 and c.sparsity == 0.0
    assert c.cpu_seconds == pytest.approx(c.total_flops / cost.ASSUMED_CPU_FLOPS)
    # gradient flow on the 1000 held-out examples: step 0 and 3 evenly spaced points (no
    # early steps, flow.every=500 is past the end, no mask updates)
    measured = cost.run_cost(load_config(None, [
        "dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16",
        "data.n_train=512", "train.batch_size=64", "train.duration=2ep", "method=dense",
        "flow.early=0", "flow.points=3"]), probe=False)
    assert measured.flow_flops == 3 * 2 * macs * 1000 * 3  # steps 0, 8, 16


def test_dataset_info_matches_the_loaded_dataset():
    from sparseflow.data import load_dataset

    for name, kw in (("synthetic", {"n_train": 100, "input_shape": (3, 4, 4)}),
                     ("fashion_mnist", {})):
        info = dataset_info(name, heldout=(1000, 500), **kw)
        ds = load_dataset(name, heldout=(1000, 500), **kw)
        assert info is not None
        assert (info.input_shape, info.num_classes, info.n_train, info.n_test) == (
            tuple(ds.input_shape), ds.num_classes, len(ds.x_train), len(ds.x_test))
    assert dataset_info("tests.nothing:here") is None


def test_dataset_status_and_ensure(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFLOW_MIRROR", "http://127.0.0.1:9/")  # refused at once
    empty = tmp_path / "empty"
    empty.mkdir()
    st = dataset_status("cifar10", root=empty)
    assert st.state == "download" and not st.ok and "cifar-10-python.tar.gz" in st.message
    off = dataset_status("cifar10", root=empty, download=False)
    assert off.state == "missing" and "downloading is off" in off.message
    assert dataset_status("synthetic").ok
    with pytest.raises(UserError, match="cifar10") as e:
        ensure_dataset("cifar10", root=empty)
    assert "\n" not in str(e.value) and str(empty) in str(e.value)
    assert list(empty.iterdir()) == []  # a failed download leaves nothing
    (empty / "cifar-10-batches-py").mkdir()  # an extracted archive counts as present
    assert dataset_status("cifar10", root=empty).state == "present"


@pytest.mark.parametrize("download", [True, False])
def test_missing_data_stops_before_scheduling(capsys, tmp_path, monkeypatch, download):
    monkeypatch.setenv("SPARSEFLOW_MIRROR", "http://127.0.0.1:9/")
    empty, root = tmp_path / "empty", tmp_path / "root"
    empty.mkdir()
    code = main(["reproduce", "evci2022", "--scale", "paper", "--no-progress", "--root",
                 str(root), "--set", f"data.root={empty}", f"data.download={download}"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "cifar10" in err and str(empty) in err and "nothing was trained" in err
    assert ("download into" if download else "downloading is off") in err
    assert not root.exists() and list(empty.iterdir()) == []


def test_dry_run_cli_text_and_json(capsys, tmp_path):
    empty, root = tmp_path / "empty", tmp_path / "root"
    empty.mkdir()
    args = ["reproduce", "evci2022", "--scale", "paper", "--dry-run", "--no-probe", "--root",
            str(root), "--set", f"data.root={empty}", "data.download=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    own, sources = _expected("evci2022", "paper")
    assert "DRY RUN" in out and "data: MISSING: cifar10 not found" in out
    assert all(rid in out for rid in own | sources)
    assert "ESTIMATES" in out and "GPU" in out and "probe: off" in out
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dry_run"] and len(res["runs"]) == len(own | sources)
    assert res["data"] == [{"name": "cifar10", "state": "missing", "ok": False,
                            "where": res["data"][0]["where"],
                            "message": res["data"][0]["message"]}]
    assert not root.exists()
    assert main(["reproduce", "evci2019", "--no-probe", "--root", str(root)]) == 2
    assert "--no-probe goes with --dry-run" in capsys.readouterr().err


def test_dry_run_names_runs_that_cannot_train(tmp_path):
    """RigL's second held-out batch of 1000 does not fit digits' 1,500 training examples: the
    dry run says so (the real run would fail), costs the rest and still writes nothing."""
    res = reproduce("evci2022", "smoke", tmp_path / "root", dry_run=True, probe=False,
                    overrides=["dataset=digits", "model=mlp"])
    bad = {r["method"]: r for r in res["runs"] if r["problem"]}
    assert set(bad) == {"rigl", "rigl_inverted"}
    assert all(r["status"] == "fails" and r["cpu_seconds"] == 0 for r in bad.values())
    assert "need 2000 examples but digits has only 1500" in bad["rigl"]["problem"]
    assert all(r["cpu_seconds"] > 0 for r in res["runs"] if not r["problem"])
    assert res["total"]["to_train"] == len(res["runs"]) - 2
    from sparseflow.studies.dryrun import dry_run_text

    assert "runs that cannot train (2; not costed):" in dry_run_text(res)
    assert not (tmp_path / "root").exists()
