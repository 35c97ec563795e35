"""Typed config: parsing, validation, overrides, content hashing."""

from __future__ import annotations

import pytest

from sparseflow.config import Config, Duration, load_config, run_id
from sparseflow.errors import ConfigError
from sparseflow.typed import describe, leaf_names, non_default


def test_defaults_and_overrides_types():
    cfg = load_config(None, ["optim.lr=0.1", "seed=3", "arch.widths=64,32", "train.duration=2ep"])
    assert cfg.optim.lr == 0.1 and isinstance(cfg.optim.lr, float)
    assert cfg.seed == 3
    assert cfg.arch.widths == [64, 32]
    assert Duration.parse(cfg.train.duration).steps(100) == 200
    assert Duration.parse("500it").steps(100) == 500


def test_yaml_file_and_override_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lr: 0.2\n  name: adam\nseed: 5\n")
    cfg = load_config(p, ["optim.lr=0.3"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.seed) == ("adam", 0.3, 5)


def test_dotted_keys_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim.lr: 0.2\n")
    assert load_config(p).optim.lr == 0.2


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lrr=0.1", "did you mean 'optim.lr'"),
        ("lr=0.1", "did you mean 'optim.lr'"),
        ("optim.lr=abc", "optim.lr: expected a number"),
        ("optim.lr=-1", "optim.lr: -1"),
        ("optim.momentum=1.5", "out of range [0, 1)"),
        ("seed=1.5", "seed: expected an integer"),
        ("optim.name=adamx", "did you mean 'adam'"),
        ("model=resnet99", "valid: "),
        ("dataset=imagenet", "fashion_mnist"),
        ("train.duration=ten", "train.duration"),
        ("data.augment=maybe", "data.augment: expected true or false"),
        ("optim.milestones=0.5,1.5", "optim.milestones"),
    ],
)
def test_bad_values_name_the_field(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("seed: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_config(unsafe)


def test_run_id_is_content_hash_of_non_default_settings():
    a = load_config(None, ["optim.lr=0.1", "seed=1"])
    b = load_config(None, ["seed=1", "optim.lr=0.1"])
    assert run_id(a) == run_id(b)
    assert run_id(load_config(None, ["seed=2"])) != run_id(a)
    # settings that do not name the run (paths, device) leave the id unchanged
    assert run_id(load_config(None, ["device=cpu", "data.root=/x"])) == run_id(Config())
    # explicitly setting a default is the same run
    assert run_id(load_config(None, ["optim.lr=0.05"])) == run_id(Config())
    assert non_default(a) == {"optim.lr": 0.1, "seed": 1}


def test_help_describes_every_field():
    rows = describe(Config)
    assert [r[0] for r in rows] == leaf_names(Config)
    assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]


def test_n_m_patterns_stay_strings_not_base_60_numbers(tmp_path):
    """YAML 1.1 reads 2:4 as the base-60 integer 124; configs read it as the pattern."""
    cfg = load_config(None, ["sparse.pattern=2:4", "sparsity=0.5"])
    assert cfg.sparse.pattern == "2:4"
    f = tmp_path / "c.yaml"
    f.write_text("sparsity: 0.5\nsparse:\n  pattern: 1:2\n  update_every: 1_000\n")
    cfg = load_config(str(f), [])
    assert cfg.sparse.pattern == "1:2" and cfg.sparse.update_every == 1000
    with pytest.raises(ConfigError, match="sparsity: pattern 2:4 fixes the sparsity at 0.5"):
        load_config(None, ["sparse.pattern=2:4", "method=rigl", "sparsity=0.9"])
    with pytest.raises(ConfigError, match="sparse.pattern: N:M needs 1 <= N < M, got '4:2'"):
        load_config(None, ["sparse.pattern=4:2"])
    with pytest.raises(ConfigError, match="sparse.pattern: expected unstructured, N:M"):
        load_config(None, ["sparse.pattern=blocks"])
