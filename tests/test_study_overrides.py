"""The papers' studies and the demo on one's own setting: ``-c FILE`` / ``--set KEY=VALUE`` over
a preset's base reach every run, the claims are measured on that setting, keys a study varies
itself are refused (one line, exit 2, nothing trained), and the same command reuses its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparseflow.cli import main
from sparseflow.config import load_config, run_id
from sparseflow.errors import ConfigError
from sparseflow.store.database import Store
from sparseflow.studies import evci2022 as ev22
from sparseflow.studies import reproduce as rep
from sparseflow.studies import tessera2021 as t21
from sparseflow.studies.claims import FAILED, HELD, INCONCLUSIVE, UNMEASURABLE
from sparseflow.studies.setting import Setting, parse_setting, study_config

VERDICTS = {HELD, FAILED, UNMEASURABLE, INCONCLUSIVE}
HERE = str(Path(__file__).resolve().parent)


def _reproduce(capsys, root, paper, *settings, extra=()):
    code = main(["reproduce", paper, "--scale", "smoke", "--workers", "0", "--no-progress",
                 "--json", "--root", str(root), *extra, "--set", *settings])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1]), err


def _stored(root):
    with Store(root / "sparseflow.db", readonly=True) as store:
        return store.list_runs()


# -- without training ---------------------------------------------------------------------------
def test_preset_run_ids_do_not_change_without_a_setting():
    for scale in rep.SCALES:
        base = ev22.base_settings(scale)
        for over in ev22.METHODS.values():
            old = load_config(None, [*base, *over, "seed=1"])
            assert run_id(study_config(base, Setting(), [*over, "seed=1"])) == run_id(old)


def test_setting_parses_like_run_and_goes_between_base_and_variation(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("dataset: digits\noptim:\n  lr: 0.3\narch:\n")  # an empty section
    s = parse_setting(file, ["optim.lr=0.2", "arch.widths=[40,20]", "sparsity=0.8"])
    assert s.pairs == {"dataset": "digits", "optim.lr": 0.2, "arch.widths": [40, 20],
                       "sparsity": 0.8}  # --set wins over the file
    assert s.items == ["dataset=digits", "optim.lr=0.2", "arch.widths=[40, 20]",
                       "sparsity=0.8"]
    cfg = study_config(["model=lenet300", "sparsity=0.95", "optim.lr=0.05"], s,
                       ["method=static", "init=sparse"])
    assert (cfg.dataset, cfg.sparsity, cfg.optim.lr, cfg.arch.widths, cfg.method, cfg.init) == \
        ("digits", 0.8, 0.2, [40, 20], "static", "sparse")
    assert len(s.digest) == 8 and parse_setting(None, ["sparsity=0.8"]).digest != s.digest
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        parse_setting(None, ["optim.lrr=1"])
    (tmp_path / "bad.yaml").write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown config key 'optim.lrr'"):
        parse_setting(tmp_path / "bad.yaml")


def test_a_new_dataset_drops_the_presets_augmentation():
    """evci2022 at paper scale augments CIFAR-10; on digits (no augmentation) it does not."""
    base = ev22.base_settings("paper")
    cfg = study_config(base, parse_setting(None, ["dataset=digits"]), ["method=static"])
    assert cfg.dataset == "digits" and not cfg.data.augment and cfg.model == "vgg16"


def test_tessera_sweep_follows_the_setting():
    from sparseflow.sweep.spec import expand

    setting = parse_setting(None, ["dataset=digits", "train.duration=2it"])
    sweep = t21.preset_sweep("smoke", setting)
    assert sweep.name == f"tessera2021-smoke-{setting.digest}"
    cfgs = expand(sweep)
    assert cfgs and all(c.dataset == "digits" and c.train.duration == "2it" for c in cfgs)
    assert t21.preset_sweep("smoke").name == "tessera2021-smoke"


@pytest.mark.parametrize("argv, key", [
    (["reproduce", "evci2022", "--set", "method=rigl"], "method"),
    (["reproduce", "evci2022", "--set", "dataset=digits", "seed=3"], "seed"),
    (["reproduce", "evci2022", "--set", "sparse.grow_batch=random"], "sparse.grow_batch"),
    (["reproduce", "evci2019", "--set", "sparse.mask=random"], "sparse.mask"),
    (["reproduce", "evci2019", "--set", "sparsity=0.9"], "sparsity"),
    (["reproduce", "evci2019", "--set", "model=mlp"], "model"),
    (["reproduce", "evci2019", "--set", "seed=3"], "seed"),
    (["reproduce", "evci2019", "--set", "sparse.source_seed=7"], "sparse.source_seed"),
    (["reproduce", "tessera2021", "--set", "model=lenet5"], "model"),
    (["reproduce", "tessera2021", "--set", "optim.lr=0.1"], "optim.lr"),
    (["reproduce", "tessera2021", "--set", "optim.l2=1e-4"], "optim.l2"),
    (["reproduce", "tessera2021", "--set", "arch.activation=prelu"], "arch.activation"),
    (["demo", "--set", "init=sparse"], "init"),
    (["demo", "--set", "method=rigl"], "method"),
])
def test_a_key_the_study_varies_is_refused(capsys, tmp_path, argv, key):
    root = tmp_path / "root"
    assert main([*argv, "--root", str(root), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sparseflow: error: --set {key}: ") and "sets" in err
    assert not root.exists()  # nothing trained, no store


def test_a_key_the_study_varies_is_refused_from_a_file_too(capsys, tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("dataset: digits\nmethod: rigl\n")
    assert main(["reproduce", "evci2022", "-c", str(file), "--root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sparseflow: error: {file}: method: reproduce evci2022 sets method")


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "evci2022", "--set", "optim.lrr=0.1"],
     "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    (["reproduce", "evci2019", "--set", "optim.lr=-1"], "optim.lr: -1.0 is out of range"),
    (["reproduce", "tessera2021", "--set", "optim.momentum=abc"],
     "optim.momentum: expected a number"),
    (["demo", "--set", "dataset=nosuch"], "dataset: unknown dataset 'nosuch'"),
    (["demo", "--set", "model=nosuchpkg.mod:fn"], "model:"),
    (["demo", "--set", "noequals"], "expected key=value"),
    (["demo", "--epochs", "2", "--set", "train.duration=1ep"], "give --epochs or"),
])
def test_a_bad_setting_is_one_line_and_trains_nothing(capsys, tmp_path, argv, message):
    root = tmp_path / "root"
    assert main([*argv, "--root", str(root), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not root.exists()


# -- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_evci2022_on_digits_measures_every_claim_and_reuses_its_runs(capsys, tmp_path):
    root = tmp_path / "root"
    setting = ["dataset=digits", "data.heldout=500"]  # digits: 1,500 training examples
    res, _ = _reproduce(capsys, root, "evci2022", *setting)
    assert res["setting"] == setting
    assert [c["number"] for c in res["claims"]] == [1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert all(c["verdict"] in VERDICTS and c["measured"] for c in res["claims"])
    # signal propagation on the study's own model with digits' 8x8 inputs
    assert res["claims"][0]["measured"].startswith("lenet300 (digits inputs 1x8x8) output std")
    # every run finished: all measurable but claim 3 (no mask update in one epoch of digits)
    assert {c["number"] for c in res["claims"] if c["verdict"] == UNMEASURABLE} <= {3}
    outdir = Path(res["dir"])
    assert outdir.name == f"evci2022-smoke-{parse_setting(None, setting).digest}"
    stored = json.loads((outdir / "claims.json").read_text())
    assert stored["setting"] == setting and stored["claims"] == res["claims"]
    assert "setting: the preset's base with `dataset=digits` `data.heldout=500`" in \
        (outdir / "claims.md").read_text()
    runs = _stored(root)
    assert len(runs) == 8  # 7 methods and the gradual pruning run the ticket comes from
    assert all(r["status"] == "finished" for r in runs)
    for r in runs:  # every run of the study, the ticket's pruned source too
        assert r["config"]["dataset"] == "digits" and r["config"]["data"]["heldout"] == 500
        assert r["config"]["sparsity"] == 0.95 and r["config"]["model"] == "lenet300"
    # the same command again: the finished runs are reused, nothing trains
    again, _ = _reproduce(capsys, root, "evci2022", *setting)
    assert _stored(root) == runs  # same rows, same start times
    assert [c["verdict"] for c in again["claims"]] == [c["verdict"] for c in res["claims"]]


@pytest.mark.slow
def test_evci2022_on_digits_with_an_mlp_prints_verdicts(capsys, tmp_path):
    root = tmp_path / "root"
    code = main(["reproduce", "evci2022", "--scale", "smoke", "--set", "dataset=digits",
                 "model=mlp", "--workers", "0", "--no-progress", "--root", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[:2] == ["evci2022 at smoke scale", "setting: dataset=digits model=mlp"]
    verdicts = [line for line in lines if line.startswith("claim ")]
    assert len(verdicts) == 9  # two rows of claim 1, two of 2, three of 3, two of 4
    assert all(any(f": {v.upper()}: " in line for v in VERDICTS) for line in verdicts)
    assert "mlp (digits inputs 1x8x8) output std" in out
    # rigl+ and rigl inverted+ carve 2 held-out batches of 1000: more than digits has
    assert "did not finish: rigl+, rigl inverted+" in out
    for r in _stored(root):
        assert (r["config"]["dataset"], r["config"]["model"]) == ("digits", "mlp")


@pytest.mark.slow
def test_evci2022_on_a_model_and_dataset_of_ones_own(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(HERE)
    root = tmp_path / "root"
    res, _ = _reproduce(capsys, root, "evci2022", "model=own_models:tiny",
                        "dataset=own_models:blobs", "model_args.hidden=16", "data.heldout=100")
    claim1 = res["claims"][0]
    assert claim1["verdict"] == UNMEASURABLE and "own_models:tiny" in claim1["measured"]
    assert "no small dense" in res["claims"][1]["measured"]
    assert all(c["verdict"] in VERDICTS for c in res["claims"])
    runs = _stored(root)
    assert runs and all(r["status"] == "finished" for r in runs)
    for r in runs:
        assert r["config"]["model"] == "own_models:tiny"
        assert r["config"]["model_args"] == {"hidden": 16}
        assert r["config"]["dataset"] == "own_models:blobs"


@pytest.mark.slow
def test_evci2019_on_digits_from_a_config_file(capsys, tmp_path):
    """evci2019 sets model, sparsity and seed itself: the rest of a setting reaches every run,
    the pruned sources too (one model, two sparsities, one seed at smoke scale)."""
    root = tmp_path / "root"
    file = tmp_path / "mine.yaml"
    file.write_text("dataset: digits\ndata:\n  heldout: 200\n")
    res, _ = _reproduce(capsys, root, "evci2019", "optim.lr=0.1", extra=["-c", str(file)])
    assert res["setting"] == ["dataset=digits", "data.heldout=200", "optim.lr=0.1"]
    assert {c["number"] for c in res["claims"]} == {5}
    runs = _stored(root)
    assert len(runs) == 4  # scratch and its pruned source at 80% and 95%
    for r in runs:
        c = r["config"]
        assert (c["dataset"], c["model"], c["data"]["heldout"], c["optim"]["lr"]) == \
            ("digits", "lenet300", 200, 0.1)
    assert sorted((r["config"]["method"], r["config"]["seed"], r["config"]["sparsity"])
                  for r in runs) == [("gradual", 1000, 0.8), ("gradual", 1000, 0.95),
                                     ("static", 0, 0.8), ("static", 0, 0.95)]


@pytest.mark.slow
def test_demo_on_digits_with_an_mlp(capsys, tmp_path):
    root = tmp_path / "root"
    argv = ["demo", "--set", "dataset=digits", "model=mlp", "train.duration=1ep", "--workers",
            "0", "--no-progress", "--root", str(root)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "setting: dataset=digits model=mlp train.duration=1ep"
    assert "test accuracy: dense 0." in out and "lottery 0." in out
    digest = parse_setting(None, argv[2:5]).digest
    report = root / "report" / f"default-study-{digest}" / "index.html"
    assert f"report: {report}" in out and report.stat().st_size > 1000
    runs = _stored(root)
    assert len(runs) == 7
    for r in runs:
        c = r["config"]
        assert (c["dataset"], c["model"], c["train"]["duration"]) == ("digits", "mlp", "1ep")
        assert c["sparsity"] == 0.9
    assert main(argv) == 0  # again: everything reused
    assert _stored(root) == runs
