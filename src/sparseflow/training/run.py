"""One run, end to end: config -> data + model + method -> loop -> store + checkpoints.

The run's directory is ``ROOT/runs/RUN_ID`` and the store ``ROOT/sparseflow.db``; ROOT is
``--root``, else ``$SPARSEFLOW_HOME``, else ``./sparseflow-runs``. Starting a run whose id is
already finished returns its stored summary; starting one that has checkpoints resumes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sparseflow.config import Config, config_to_yaml, run_id
from sparseflow.data import Dataset, load_dataset
from sparseflow.errors import ConfigError, UserError
from sparseflow.factories import is_reference, load_factory
from sparseflow.methods.registry import method_spec
from sparseflow.models import build_model
from sparseflow.models.registry import with_widths
from sparseflow.store.database import Store
from sparseflow.store.paths import default_root, run_dir, store_path
from sparseflow.store.recorder import Recorder, StoreRecorder
from sparseflow.training.callbacks import Callback, TensorBoardCallback
from sparseflow.training.distributed import dist_info, ensure_process_group, wrap
from sparseflow.training.flow_callback import FlowCallback
from sparseflow.training.interrupts import deferred_interrupts
from sparseflow.training.loop import Diverged, Trainer
from sparseflow.training.optim import build_optimizer
from sparseflow.training.sparsifier import (
    SparsifierCallback,
    build_sparsifier,
    heldout_sizes,
    small_dense_widths,
)
from sparseflow.typed import to_dict


@contextmanager
def run_lock(rdir: Path, echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """An exclusive lock on a run directory, so two processes never train the same run at once.

    A second process (e.g. two scratch runs that both need the same pruning run) waits for the
    first and then finds the run finished. Ranks of one distributed job share the lock
    (torchrun sets WORLD_SIZE): only rank 0 takes it.
    """
    import fcntl

    if dist_info().enabled and not dist_info().main:
        yield
        return
    rdir.mkdir(parents=True, exist_ok=True)
    with open(rdir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if echo is not None:
                echo(f"run {rdir.name} is being trained by another process; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _silent(msg: str) -> None:
    """Output of ranks other than 0 is dropped."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but CUDA is not available")
    return torch.device(name)


def load_data(cfg: Config) -> Dataset:
    """The dataset named by the config, with its held-out batch."""
    # Config.validate has checked that only the synthetic dataset gets n_train
    kw: dict[str, Any] = {} if cfg.data.n_train is None else {"n_train": cfg.data.n_train}
    kw.update(cfg.dataset_args)  # a dataset of one's own: its keyword arguments
    return load_dataset(
        cfg.dataset,
        root=cfg.data.root,
        download=cfg.data.download,
        heldout=heldout_sizes(cfg),
        augment=cfg.data.augment,
        **kw,
    )


def make_model(cfg: Config, data: Dataset, widths: list[int] | None = None) -> torch.nn.Module:
    """The model named by the config, initialised from ``torch.manual_seed(cfg.seed)``."""
    torch.manual_seed(cfg.seed)
    a = cfg.arch
    if is_reference(cfg.model):
        model = _own_model(cfg, data)
    else:
        opts: dict[str, Any] = {"widths": a.widths, "depth": a.depth, "width": a.width,
                                "activation": a.activation, "batchnorm": a.batchnorm,
                                "skip": a.skip}
        if widths is not None:
            opts = with_widths(opts, widths)
        model = build_model(cfg.model, data.input_shape, data.num_classes, **opts)
    if a.init != "default":
        base_init_(model, a.init)
    return model


def _own_model(cfg: Config, data: Dataset) -> torch.nn.Module:
    """``factory(input_shape, num_classes, **model_args)`` of ``model=package.module:factory``;
    whatever goes wrong is one ConfigError line naming the factory."""
    factory = load_factory(cfg.model, "model")
    try:
        model = factory(tuple(data.input_shape), data.num_classes, **cfg.model_args)
    except Exception as e:  # noqa: BLE001 - the user's factory: report, do not trace back
        raise ConfigError(f"model: {cfg.model}({tuple(data.input_shape)}, {data.num_classes}"
                          f"{''.join(f', {k}={v!r}' for k, v in cfg.model_args.items())}) "
                          f"failed ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model: {cfg.model} returned {type(model).__name__}, expected an "
                          "nn.Module")
    return model


def base_init_(model: torch.nn.Module, how: str) -> None:
    """Re-initialise Linear/Conv layers: ``glorot`` = Glorot uniform weights and zero biases
    (Keras' default), ``he`` = N(0, 2/fan_in) weights and zero biases. Uses the global RNG,
    seeded by :func:`make_model`."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear | torch.nn.modules.conv._ConvNd):
            if how == "glorot":
                torch.nn.init.xavier_uniform_(m.weight)
            else:
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)


def denormals_flushed() -> bool:
    """Whether the CPU currently flushes denormal floats to zero (FTZ/DAZ)."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a float32 denormal
    return bool((tiny * 1.0 == 0).item())


@contextmanager
def flush_denormal(enabled: bool) -> Iterator[None]:
    """``torch.set_flush_denormal(enabled)`` for the block, restoring the previous state."""
    before = denormals_flushed()
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _setup(cfg: Config, rid: str, root: Path, store: Store, existing: dict[str, Any] | None, *,
           progress: bool, echo: Callable[[str], None] | None, force: bool,
           callbacks: list[Callback] | None, recorder: Recorder | None,
           ) -> tuple[Trainer, Recorder, dict[str, Any], Any, Callable[[str], None] | None]:
    """Everything before the first step: device, data, model, optimiser, the method (training
    its source runs first) and the measuring callbacks. Returns (trainer, recorder, summary
    info, distributed info, echo)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = dist_info()
    device = resolve_device(cfg.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    ensure_process_group(dist, device)
    if not dist.main:
        echo = None
        rec: Recorder = Recorder()
    else:
        rec = recorder if recorder is not None else StoreRecorder(store)
    data = load_data(cfg)
    info: dict[str, Any] = {}
    widths = None
    if method_spec(cfg.method).narrows_model:
        try:
            widths = small_dense_widths(cfg, data)
        except ValueError as e:
            if isinstance(e, UserError):
                raise
            raise ConfigError(f"method=small_dense: {e}") from None
        info["small_dense_widths"] = widths
    model = make_model(cfg, data, widths).to(device)
    if cfg.train.channels_last:  # conv weights only; the parameters stay the same objects
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, model)
    cbs: list[Callback] = list(callbacks or [])
    rdir = run_dir(root, rid)
    if force and existing:
        shutil.rmtree(rdir / "checkpoints", ignore_errors=True)
    if cfg.log.tensorboard:
        cbs.append(TensorBoardCallback(str(rdir / "tensorboard")))
    rdir.mkdir(parents=True, exist_ok=True)
    cfg_file = rdir / "config.yaml"
    tmp = cfg_file.with_suffix(".yaml.tmp")
    tmp.write_text(config_to_yaml(cfg))
    os.replace(tmp, cfg_file)

    trainer = Trainer(
        cfg, model, optimizer, data, device=device, callbacks=cbs, run_dir=rdir,
        log_fn=lambda rows: rec.log(rid, rows),
        progress=progress and dist.main, echo=echo or (None if dist.main else _silent),
        rank=dist.rank, world=dist.world,
    )

    def run_source(src: Config) -> dict[str, Any]:
        sid = run_id(src)
        done = (store.get_run(sid) or {}).get("status") == "finished"
        trainer.echo(f"run {rid} needs source run {sid} ({src.method}, seed {src.seed}): "
                     + ("finished, in the store" if done else "training it first"))
        out = execute(src, root=root, progress=progress, echo=echo, recorder=recorder)
        if out.get("status") != "finished":
            raise UserError(f"source run {out.get('run_id')} ended {out.get('status')}")
        return out

    sparsifier, extra = build_sparsifier(
        cfg, model, optimizer, data, trainer.total_steps, trainer.steps_per_epoch,
        run_source, root,
    )
    info.update(extra)
    if sparsifier is not None:
        trainer.callbacks.insert(0, SparsifierCallback(sparsifier))
    if cfg.flow.enabled and data.heldout:
        x, y = data.heldout[0]
        f = cfg.flow
        trainer.callbacks.insert(1 if sparsifier is not None else 0, FlowCallback(
            x.to(device), y.to(device), every=f.every, total_steps=trainer.total_steps,
            points=f.points, early=f.early, around_updates=f.around_updates,
            per_layer=f.per_layer,
            per_active=f.per_active, mode=f.mode))
    torch.manual_seed(cfg.seed)  # the same global RNG state whether sources ran or not
    trainer.use_model(wrap(model, dist, device))  # compiled when train.compile is set
    return trainer, rec, info, dist, echo


def execute(
    cfg: Config,
    *,
    root: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    force: bool = False,
    callbacks: list[Callback] | None = None,
    recorder: Recorder | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume, or skip if finished) the training run ``cfg``; returns its summary.

    ``name`` and ``tags`` label the run in the store (``runs list``, the report); they do not
    change its id, and given again for a finished run they replace its labels.

    ``recorder`` receives the run's life (default: the store under ``root``; a sweep worker
    passes a :class:`~sparseflow.store.recorder.MemoryRecorder`). The store is read to
    skip finished runs either way.
    """
    root = Path(root) if root is not None else default_root()
    rid = run_id(cfg)
    rdir = run_dir(root, rid)
    fresh_runs, fresh = not rdir.parent.exists(), not rdir.exists()  # removed if set-up fails
    with Store(store_path(root)) as store, run_lock(rdir, echo):
        existing = store.get_run(rid)
        if existing and existing["status"] == "finished" and not force and existing["summary"]:
            if name is not None or tags:
                store.set_labels(rid, name, tags)
            return existing["summary"]

        try:
            trainer, rec, info, dist, echo = _setup(
                cfg, rid, root, store, existing, progress=progress, echo=echo, force=force,
                callbacks=callbacks, recorder=recorder)
        except BaseException:
            if fresh:  # a config that fails during set-up leaves no folder behind
                shutil.rmtree(rdir, ignore_errors=True)
            if fresh_runs:  # ROOT/runs too, unless another run has put a folder there since
                with contextlib.suppress(OSError):
                    rdir.parent.rmdir()
            raise
        rec.start(rid, to_dict(cfg))
        if name is not None or tags:
            rec.labels(rid, name, list(tags))
        head = {"run_id": rid, "method": cfg.method, "dataset": cfg.dataset,
                "model": cfg.model, "seed": cfg.seed}
        try:
            resumed = trainer.resume_if_possible()
            if dist.enabled:
                torch.distributed.barrier()  # every rank has read the checkpoint
            if resumed and echo is not None:
                echo(f"resuming run {rid} from step {trainer.step}")
            with deferred_interrupts(trainer.stop), flush_denormal(cfg.train.flush_denormal):
                summary = trainer.fit()
        except KeyboardInterrupt:
            # Interrupted: saved at a step boundary; a bare KeyboardInterrupt (a second
            # signal, or one outside training): nothing saved, the last checkpoint is whole
            trainer.flush()
            rec.status(rid, "interrupted")
            raise
        except Diverged as d:
            trainer.flush()
            summary = {**head, "status": "diverged", "diverged_step": d.step,
                       "steps": d.step, "test_accuracy": None, "test_loss": None,
                       "train_loss": None, "wall_seconds": round(trainer.elapsed(), 3),
                       "checkpoint": str(trainer.last_checkpoint)}
            rec.finish(rid, "diverged", summary)
            return summary
        except BaseException:
            trainer.flush()
            rec.status(rid, "failed")
            raise
        summary = {**head, "status": "finished", **info, **summary}
        summary.setdefault("sparsity", 0.0)
        if trainer.last_checkpoint is not None:
            rec.artifact(rid, "checkpoint/final", trainer.last_checkpoint, "checkpoint")
        rec.finish(rid, "finished", summary)
        if dist.enabled:
            torch.distributed.barrier()  # the store says finished before any rank returns
        return summary
