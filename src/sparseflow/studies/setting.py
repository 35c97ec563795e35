"""A study on one's own setting: ``-c FILE`` and ``--set KEY=VALUE`` over a preset's base.

The study presets (``demo``, ``reproduce``) fix a base setting (dataset, model, sparsity,
duration, optimiser, ...) and vary a few keys across their runs (the method, the init, the
seed). :func:`parse_setting` reads the user's settings exactly as ``sparseflow run`` does
(``load_config``: the YAML file first, ``--set`` over it, renamed keys, unknown keys with a
suggestion); :func:`check_setting` refuses a key the study varies itself; :func:`study_config`
builds one run's config as the preset's base, then the user's setting, then the run's own
variation, validated like every config (a bad value is the usual one-line ``ConfigError``).

A few base keys belong to the preset's own dataset or model (``data.augment`` is for the
image datasets; ``arch.widths`` and the other sizing keys are the built-in model's): when the
user changes the dataset (model) and does not set them, they are left out, so that e.g.
``dataset=digits`` works at the scale whose preset augments CIFAR-10.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseflow import typed
from sparseflow.config import Config, read_config_file
from sparseflow.errors import ConfigError

#: base keys of a preset that describe its own dataset / model, dropped when the user
#: changes that (and does not set the key too)
BOUND = {
    ("dataset", "dataset_args"): ("data.augment", "data.n_train"),
    ("model", "model_args"): ("arch.widths", "arch.depth", "arch.width", "arch.batchnorm",
                              "arch.skip"),
}
#: keys whose change changes the network a study trains or its inputs
MODEL_KEYS = ("model", "model_args", "arch.widths", "arch.depth", "arch.width",
              "arch.activation", "arch.batchnorm", "arch.skip")
DATA_KEYS = ("dataset", "dataset_args", "data.n_train")


@dataclass(frozen=True)
class Setting:
    """The user's settings for a study: ``{canonical dotted key: value}`` in the order given
    (the file's first, then ``--set``; a later value of a key wins), and where each came from
    (``"--set"`` or the file's path) for error messages."""

    pairs: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def items(self) -> list[str]:
        """The settings as ``KEY=VALUE`` texts (values as YAML/JSON scalars and lists)."""
        return [f"{k}={_text(v)}" for k, v in self.pairs.items()]

    @property
    def digest(self) -> str:
        """8 hex digits naming this setting (empty for no setting): folders of a study's
        outputs per setting, so two settings do not overwrite each other."""
        if not self.pairs:
            return ""
        text = json.dumps(sorted(self.pairs.items()), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def touches(self, keys: Sequence[str]) -> bool:
        """Whether the setting sets one of ``keys`` (or an entry of a mapping key among
        them, like ``model_args.hidden``)."""
        return any(k == key or k.startswith(key + ".") for k in self.pairs for key in keys)

    def describe(self) -> str:
        """One line: the settings, or that the preset's own are used."""
        return " ".join(self.items) if self.pairs else "the preset's own"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def parse_setting(config_file: str | Path | None = None,
                  overrides: Sequence[str] = ()) -> Setting:
    """The settings of ``-c FILE`` and ``--set KEY=VALUE ...``, parsed and checked like
    ``sparseflow run``'s (``sparseflow.config.load_config``): values read as YAML, renamed keys
    mapped to their current names (both given: an error), an unknown key a ``ConfigError``
    with the closest valid key. Values are checked when the study's configs are built."""
    pairs: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        p = Path(config_file)
        for key, value in read_config_file(p).items():
            if value is None and any(n.startswith(key + ".") for n in typed.leaf_names(Config)):
                continue  # an empty section ("arch:"), as load_config reads it
            if not typed.is_field(Config, key):
                raise ConfigError(f"{p}: {typed._unknown_key(key, typed.leaf_names(Config))}")
            pairs[key], sources[key] = value, str(p)
    given = dict(typed.parse_override(o) for o in overrides)
    renamed = typed.former_names(Config)
    for old, new in renamed.items():
        if old in given and new in given:
            raise ConfigError(f"{old}: renamed to {new}; give one")
    for key, value in given.items():
        key = renamed.get(key, key)
        if not typed.is_field(Config, key):
            raise typed._unknown_key(key, typed.leaf_names(Config))
        pairs.pop(key, None)  # --set wins over the file, and shows last
        pairs[key], sources[key] = value, "--set"
    return Setting(pairs, sources)


def check_setting(setting: Setting, varied: Mapping[str, str], study: str) -> None:
    """Refuse a setting of a key the study varies itself: ``varied`` maps each such key to
    why (``"compares methods: ..."``); the ``ConfigError`` names the key and the study."""
    for key, source in setting.sources.items():
        owner = next((v for v in varied if key == v or key.startswith(v + ".")), None)
        if owner is not None:
            where = "--set " if source == "--set" else f"{source}: "
            raise ConfigError(f"{where}{key}: {study} sets {owner} itself ({varied[owner]}); "
                              "leave it out")


def varied_keys(runs: Mapping[str, Sequence[str]], why: str) -> dict[str, str]:
    """``{key: why}`` of every key set by a study's runs (``{name: ["KEY=VALUE", ...]}``)."""
    return {o.split("=", 1)[0]: why for over in runs.values() for o in over}


def base_pairs(base: Sequence[str], setting: Setting) -> dict[str, Any]:
    """The preset's base settings (``KEY=VALUE`` texts) with the user's over them; base keys
    bound to a dataset or model the user replaced are left out (see ``BOUND``)."""
    pairs = dict(typed.parse_override(o) for o in base)
    for owners, bound in BOUND.items():
        if setting.touches(owners):
            for key in bound:
                if key not in setting.pairs:
                    pairs.pop(key, None)
    pairs.update(setting.pairs)
    return pairs


def study_config(base: Sequence[str], setting: Setting, variation: Sequence[str] = ()
                 ) -> Config:
    """One run of a study: the preset's ``base``, the user's ``setting`` over it, the run's
    ``variation`` (the method, init, seed the study compares) over both; validated."""
    pairs = base_pairs(base, setting)
    pairs.update(typed.parse_override(o) for o in variation)
    return typed.from_dict(Config, typed.merge({}, pairs))
