"""Loading trained models back from the store: ``RUN_ID``, ``RUN_ID@STEP`` or a checkpoint file.

``RUN_ID`` is the run's final checkpoint, ``RUN_ID@0`` its initialisation, ``RUN_ID@STEP`` the
checkpoint at that step; a path to a checkpoint file is read together with the ``config.yaml``
of its run directory. Each endpoint gives the config, the rebuilt model with its weights, its masks
(None for a dense run) and the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config, config_from_dict
from sparseflow.errors import UserError
from sparseflow.store.checkpoint import list_checkpoints, load_checkpoint
from sparseflow.store.database import Store
from sparseflow.typed import load_yaml


@dataclass
class Endpoint:
    """A model as it was at one checkpoint of one run."""

    spec: str
    run_id: str
    step: int
    config: Config
    model: nn.Module
    masks: dict[str, torch.Tensor] | None
    checkpoint: Path
    summary: dict[str, Any]

    @property
    def label(self) -> str:
        """Short name for tables and plots."""
        return f"{self.run_id[:8]}@{self.step}"


def model_widths(cfg: Config, data: Any) -> list[int] | None:
    """The hidden widths the run's model was built with: the narrowed ones of a method that
    narrows the model (small dense), else None (the config's own)."""
    from sparseflow.methods.registry import method_spec
    from sparseflow.training.sparsifier import small_dense_widths

    return small_dense_widths(cfg, data) if method_spec(cfg.method).narrows_model else None


def _rebuild(cfg: Config, state: dict[str, Any], data: Any) -> nn.Module:
    from sparseflow.training.run import make_model

    model = make_model(cfg, data, model_widths(cfg, data))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"checkpoint does not match the model of its config ({first})") from None
    return model


def resolve_endpoint(spec: str, store: Store, data_cache: dict[str, Any] | None = None
                     ) -> Endpoint:
    """Load ``spec`` (``RUN_ID``, ``RUN_ID@STEP`` or a checkpoint file) from ``store``."""
    path = Path(spec)
    summary: dict[str, Any] = {}
    expect: dict[str, Any] = {}  # the run and step the checkpoint must record
    if path.is_file():
        cfg_file = path.parent.parent / "config.yaml"
        if not cfg_file.is_file():
            raise UserError(f"{path}: no config.yaml in its run directory ({cfg_file})")
        cfg = config_from_dict(load_yaml(cfg_file.read_text()))
        rid, ckpt_path = path.parent.parent.name, path
        run = store.get_run(rid)
        summary = (run or {}).get("summary") or {}
    else:
        rid_part, _, step_part = spec.partition("@")
        rid = store.resolve(rid_part)
        run = store.get_run(rid)
        assert run is not None
        cfg = config_from_dict(run["config"])
        summary = run.get("summary") or {}
        ckpts = list_checkpoints(store.path.parent / "runs" / rid / "checkpoints")
        if not ckpts:
            raise UserError(f"run {rid} has no checkpoints")
        if step_part:
            try:
                step = int(step_part)
            except ValueError:
                raise UserError(f"{spec!r}: expected RUN_ID@STEP with an integer step") from None
            if step not in ckpts:
                shown = ", ".join(map(str, list(ckpts)[:10]))
                raise UserError(f"run {rid} has no checkpoint at step {step} (it has {shown}"
                                f"{' ...' if len(ckpts) > 10 else ''})")
            ckpt_path = ckpts[step]
        else:
            step = max(ckpts)
            ckpt_path = ckpts[step]
        expect = {"run_id": rid, "step": step}
    # verified, weights_only; a file copied from another run or step is refused (a file given
    # by path is checked against its run folder and file name)
    state = load_checkpoint(ckpt_path, require=("model", "step"), **expect)
    model = _rebuild(cfg, state, dataset_for(cfg, data_cache if data_cache is not None else {}))
    masks = (state.get("callbacks") or {}).get("sparsifier", {}).get("masks")
    return Endpoint(spec, rid, int(state["step"]), cfg, model, masks, Path(ckpt_path), summary)


def dataset_for(cfg: Config, data_cache: dict[str, Any]) -> Any:
    """The dataset of a run's config, loaded once per (dataset, held-out, size) in the cache."""
    from sparseflow.training.run import load_data
    from sparseflow.training.sparsifier import heldout_sizes

    key = f"{cfg.dataset}:{sorted(cfg.dataset_args.items())}:{heldout_sizes(cfg)}:" \
          f"{cfg.data.n_train}"
    if key not in data_cache:
        data_cache[key] = load_data(cfg)
    return data_cache[key]
