"""The method registry: one registration line adds a method to the config, the CLI and runs;
run ids of existing configs and the source runs of every method are unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sparseflow import typed
from sparseflow.config import Config, config_from_dict, load_config, run_id
from sparseflow.methods.options import RigLOptions, Source, imp_round_sparsity
from sparseflow.methods.registry import METHODS, method_names, method_spec, option_classes
from sparseflow.training.lineage import direct_sources, source_configs
from sparseflow.training.sparsifier import heldout_sizes

#: run ids written by sparseflow before the method options moved to their own classes (and
#: sparse.t_end became sparse.update_end): stores written then must keep naming these runs
STORED_IDS = {
    (): "44136fa355b3",
    ("method=rigl", "sparsity=0.95", "sparse.t_end=0.5", "sparse.grow_batch=heldout"):
        "f620e105c0be",
    ("method=set", "sparse.drop_fraction=0.5", "sparse.update_every=50",
     "sparse.exclude_dropped=true"): "270334cc2e9a",
    ("method=static", "sparse.mask=pruned", "sparse.source_seed=7", "init=sparse",
     "sparse.init_mode=fan_avg"): "a58e2f82dfff",
    ("method=lottery", "sparse.ticket=imp", "sparse.rounds=3", "sparse.rewind=100it",
     "sparse.prune_scope=global"): "ff265abb0b53",
    ("method=gradual", "sparse.prune_begin=0.1", "sparse.prune_end=0.5",
     "sparse.initial_sparsity=0.2", "sparse.prune_distribution=erk"): "248e41350e1e",
    ("method=oneshot", "sparse.oneshot_at=0.3"): "1c7df4e7d4e7",
    ("method=snip", "sparse.pai_scope=layer"): "2c91e1747d83",
    ("method=synflow", "sparse.synflow_iterations=10", "sparse.layers=[fc1.weight]",
     "sparse.dense_first=true"): "9459319b1b67",
    ("method=static", "distribution=scsdc", "init=matched", "model=mlp", "sparse.dense_width=64",
     "sparse.masking=both"): "b8d99ef466cc",
}
#: the source runs the same versions planned for these configs
STORED_SOURCES = {
    ("method=static", "sparse.mask=pruned"): ["db09277796fc"],
    ("method=lottery", "sparse.ticket=imp", "sparse.rounds=3", "sparse.rewind=100it"):
        ["cd7994ba4fd7", "36f2fe7b45b9", "5c3dc09c7912"],
    ("method=lottery", "sparse.rewind=2ep"): ["db09277796fc"],
}


@pytest.mark.parametrize("overrides", list(STORED_IDS))
def test_run_ids_of_stored_configs_unchanged(overrides):
    assert run_id(load_config(None, list(overrides))) == STORED_IDS[overrides]


@pytest.mark.parametrize("overrides", list(STORED_SOURCES))
def test_source_runs_unchanged(overrides):
    got = [run_id(c) for c in source_configs(load_config(None, list(overrides)))]
    assert got == STORED_SOURCES[overrides]


def test_renamed_field_reads_old_stores_and_hashes_under_its_former_name():
    old = config_from_dict({"method": "rigl", "sparse": {"t_end": 0.5}})
    new = load_config(None, ["method=rigl", "sparse.update_end=0.5"])
    assert old.sparse.update_end == 0.5 and run_id(old) == run_id(new)
    assert "sparse.t_end" not in typed.leaf_names(Config)
    assert typed.former_names(Config) == {"sparse.t_end": "sparse.update_end"}
    with pytest.raises(ValueError, match="renamed to sparse.update_end"):
        config_from_dict({"sparse": {"t_end": 0.5, "update_end": 0.4}})
    with pytest.raises(ValueError, match="sparse.t_end: renamed to sparse.update_end; give one"):
        load_config(None, ["sparse.t_end=0.5", "sparse.update_end=0.3"])


def test_registry_is_the_one_list_of_methods():
    assert method_names() == list(METHODS)
    # the config's sparse section is exactly the union of the registered option classes
    fields = {f"sparse.{f}" for cls in option_classes() for f in cls.__dataclass_fields__}
    assert fields == {n for n in typed.leaf_names(Config) if n.startswith("sparse.")}
    with pytest.raises(ValueError, match="unknown method 'sett'; valid: dense"):
        method_spec("sett")


def test_heldout_batches_come_from_the_method():
    rigl = load_config(None, ["method=rigl", "sparse.grow_batch=heldout"])
    assert heldout_sizes(rigl) == (1000, 1000)
    assert heldout_sizes(load_config(None, ["method=rigl"])) == (1000,)
    assert heldout_sizes(load_config(None, ["method=set", "sparse.grow_batch=heldout"])) == (1000,)
    assert heldout_sizes(load_config(None, ["method=rigl", "data.heldout=0"])) == ()


def test_sources_are_declared_by_the_options():
    assert RigLOptions.sources(RigLOptions(), 0.9) == []
    lottery = load_config(None, ["method=lottery", "sparse.ticket=imp", "sparse.rounds=2",
                                 "sparsity=0.96"])
    spec = method_spec("lottery")
    (dense, prev) = spec.sources(lottery.sparse, lottery.sparsity)
    assert dense == Source("dense")
    assert prev.role == "previous_round" and dict(prev.changes) == {"rounds": 1}
    assert prev.sparsity == pytest.approx(1 - (1 - 0.96) ** 0.5)  # keeps 20% per round
    assert imp_round_sparsity(0.96, 2, 2) == pytest.approx(0.96)
    dense_cfg, prev_cfg = direct_sources(lottery)
    assert dense_cfg.method == "dense" and dense_cfg.seed == lottery.sparse.source_seed
    assert prev_cfg.sparse.rounds == 1 and prev_cfg.sparsity == pytest.approx(0.8)


def test_a_new_method_is_one_class_and_one_registration_line(tmp_path):
    """Registered from user code: it is a config choice, takes its options from the command
    line, and trains through ``sparseflow run`` with its own grow score."""
    script = textwrap.dedent(f"""
        import json, torch
        from sparseflow.methods import RigL
        from sparseflow.methods.options import RigLOptions
        from sparseflow.methods.registry import register

        calls = []

        class GrowByMagnitudeOfGradTimesWeight(RigL):
            def grow_scores(self, name, weight):
                calls.append(name)
                return super().grow_scores(name, weight) * (1 + weight.abs())

        register("rigl_gw", GrowByMagnitudeOfGradTimesWeight, RigLOptions)

        from sparseflow.config import load_config
        from sparseflow.training.run import execute
        cfg = load_config(None, ["method=rigl_gw", "dataset=synthetic", "model=mlp",
                                 "arch.depth=2", "arch.width=32", "train.duration=2ep",
                                 "data.heldout=64", "sparse.update_every=5",
                                 "sparse.grow_batch=heldout", "flow.enabled=false"])
        s = execute(cfg, root={str(tmp_path)!r}, progress=False)
        print(json.dumps({{"status": s["status"], "updates": s["mask_updates"],
                          "sparsity": s["sparsity"], "scored": len(calls)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["status"] == "finished" and res["updates"] > 0
    # its own grow score, once per layer per update (a layer with nothing to drop is skipped)
    assert 0 < res["scored"] <= 3 * res["updates"]
    assert res["sparsity"] == pytest.approx(0.9, abs=0.01)


def test_sweep_files_may_use_the_former_name(tmp_path):
    from sparseflow.sweep.spec import expand, load_sweep

    path = tmp_path / "old.yaml"
    path.write_text("base:\n  method: rigl\ngrid:\n  sparse.t_end: [0.5, 0.6]\n")
    configs = expand(load_sweep(path))
    assert [c.sparse.update_end for c in configs] == [0.5, 0.6]
    assert run_id(configs[0]) == run_id(config_from_dict({"method": "rigl",
                                                          "sparse": {"t_end": 0.5}}))


def test_run_help_lists_the_registered_names(capsys):
    from sparseflow.cli import main
    from sparseflow.data import DATASETS
    from sparseflow.models import model_names

    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field_name, names in (("dataset", DATASETS), ("model", model_names()),
                              ("method", method_names())):
        assert f"{field_name} (str, " in text
        assert "One of: " + ", ".join(names) + "." in text, field_name
