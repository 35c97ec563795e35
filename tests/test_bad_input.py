"""Every bad input the command line knows of, in one table: one line on stderr, exit 2, and
nothing written.

Each row is a command line (with the files, environment and stored runs it needs) and a
substring of the one error line. The row runs through :func:`sparseflow.cli.main` in-process;
the test asserts the return code 2, exactly one line on stderr that starts with
``sparseflow: error:`` and holds the substring, and that nothing under the test's folder is new
or changed afterwards: no ``runs/`` folder, no new store row, no file written or replaced (a
store the command had to open may appear, but with no rows in it).

The rows collect the bad inputs of the other test files (config keys, values, ranges, choices,
YAML and sweep files, durations, registry names, ``--set`` syntax, the environment, the
``runs`` / ``analyze`` / ``report`` / ``reproduce`` commands, missing files) and those of the
issue "Daily use"; rows made from the config's own fields check that every integer field has
an upper bound and that no float field takes NaN or infinity.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparseflow.cli import main
from sparseflow.config import Config
from sparseflow.typed import iter_fields

# A tiny run: synthetic data, a one-hidden-layer MLP, a few steps.
TINY = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=8", "train.batch_size=64",
        "train.duration=1ep", "data.heldout=64", "flow.enabled=false"]
SWEEP_BASE = """base:
  dataset: synthetic
  model: mlp
  arch: {depth: 1, width: 16}
  train.batch_size: 64
  data.heldout: 64
  train.duration: 3ep
  sparsity: 0.8
  sparse.prune_every: 4
"""
SCSDC_SWEEP = """name: tiny
base: {dataset: synthetic, train.duration: 2ep, data.heldout: 64, train.batch_size: 64}
grid: {optim.name: [sgd, adam]}
seeds: 2
scsdc: {sparse_width: 32, dense_widths: [8], depths: [1, 2]}
"""
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Bad input found only while a run is set up (data files, mask sources, the model): execute()
# removes the run folder (and ROOT/runs/ when it made it); an empty store may remain.
SETUP = ()


@dataclass
class Row:
    """One bad input: ``argv`` (``{tmp}``, ``{root}``, ``{a}``/``{b}``/``{c}`` (stored run ids)
    and ``{ckpt}`` (run a's final checkpoint) are filled in), the expected part of the error
    line, the files to write first (path relative to the test folder -> text, bytes or a
    function of the path), the environment, and which store the root holds: ``none`` (no
    root folder), ``empty`` (an empty store) or ``runs`` (a copy of three stored runs)."""

    id: str
    argv: list[str]
    expect: str
    files: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    store: str = "none"
    root_arg: bool = True  # append --root {root}
    setup: Callable[..., None] | None = None
    marks: tuple[Any, ...] = ()


def run_row(*sets: str) -> list[str]:
    return ["run", "--no-progress", "--set", *TINY, *sets]


def sweep(text: str) -> dict[str, str]:
    return {"sweep.yaml": text}


# ---------------------------------------------------------------- files the rows need


def _idx_folder(path: Path, *, truncate: bool = False, big_images: bool = False) -> None:
    from sparseflow.data.idx import write_idx

    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 60), ("t10k", 20)):
        side = 32 if big_images and name == "t10k" else 28
        write_idx(path / f"{name}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, side, side), dtype=np.uint8))
        write_idx(path / f"{name}-labels-idx1-ubyte.gz",
                  rng.integers(0, 10, n, dtype=np.uint8))
    if truncate:
        p = path / IDX_NAMES[0]
        p.write_bytes(p.read_bytes()[:100])


def _checkpoint(path: Path, obj: dict) -> None:
    from sparseflow.store.checkpoint import save_checkpoint

    save_checkpoint(path, obj)


def _raw_pickle_checkpoint(path: Path) -> None:
    import pickle

    payload = pickle.dumps({"model": {}, "step": 1})
    path.write_bytes(b"SFCKPT1\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def _deep_yaml(path: Path) -> None:
    path.write_text("seed: " + "[" * 5000 + "]" * 5000 + "\n")


# ---------------------------------------------------------------- hooks run before a row


def _bad_kernels(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    from sparseflow.sparsity import kernels

    monkeypatch.setattr(kernels, "_loaded", False)  # read the environment again
    monkeypatch.setattr(kernels, "_kernels", None)


def _numba_missing(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    _bad_kernels(monkeypatch, ctx)
    monkeypatch.setitem(sys.modules, "sparseflow.sparsity._numba_kernels", None)


def _unreadable(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    """c.yaml cannot be read: mode 000, and for root (who reads anything) a refusing read."""
    path = ctx["tmp"] / "c.yaml"
    path.chmod(0)
    if os.geteuid() == 0:
        read_text = Path.read_text

        def refuse(self: Path, *args: Any, **kw: Any) -> str:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return read_text(self, *args, **kw)

        monkeypatch.setattr(Path, "read_text", refuse)


def _not_a_database(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    ctx["root"].mkdir()
    (ctx["root"] / "sparseflow.db").write_text("not a database")


def _root_is_file(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    ctx["root"].write_text("a file where the root should be")


def _home_is_file(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    home = ctx["tmp"] / "home-file"
    home.write_text("a file")
    monkeypatch.setenv("SPARSEFLOW_HOME", str(home))


def _damaged_checkpoint(monkeypatch: pytest.MonkeyPatch, ctx: dict) -> None:
    """Run a's newest checkpoint cut short and the run marked interrupted: resuming it must
    refuse the checkpoint."""
    from sparseflow.store.checkpoint import list_checkpoints

    ckdir = ctx["root"] / "runs" / ctx["a"] / "checkpoints"
    newest = list_checkpoints(ckdir)[max(list_checkpoints(ckdir))]
    newest.write_bytes(newest.read_bytes()[:-100])
    with sqlite3.connect(ctx["root"] / "sparseflow.db") as db:
        db.execute("UPDATE runs SET status = 'interrupted' WHERE run_id = ?", (ctx["a"],))
    db.close()


# ---------------------------------------------------------------- the table

ROWS: list[Row] = [
    # -- config keys, values, ranges and choices (test_config, test_cli, test_sparse_runs)
    Row("key-typo", run_row("optim.lrr=0.1"), "did you mean 'optim.lr'"),
    Row("key-tail", run_row("lr=0.1"), "did you mean 'optim.lr'"),
    Row("key-unknown-section", run_row("optimizer.lr=0.1"), "unknown config key"),
    Row("key-value-as-section", run_row("seed.x=1"), "seed.x"),
    Row("string-empty", run_row("dataset="), "dataset: expected a non-empty string"),
    Row("mask-empty", run_row("method=static", "sparse.mask="),
        "sparse.mask: expected a non-empty string"),
    Row("string-given-list", ["run", "-c", "{tmp}/c.yaml"], "model: expected a string",
        files={"c.yaml": "model: [mlp]\n"}),
    Row("lr-text", run_row("optim.lr=abc"), "optim.lr: expected a number"),
    Row("lr-negative", run_row("optim.lr=-1"), "optim.lr: -1"),
    Row("lr-negative-3", run_row("optim.lr=-3"), "optim.lr"),
    Row("lr-zero", run_row("optim.lr=0"), "optim.lr: 0.0 is out of range (0, inf)"),
    Row("widths-one-text", run_row("arch.widths=a"), "arch.widths[0]: expected an integer"),
    Row("depth-null-text", run_row("arch.depth=deep"), "arch.depth: expected an integer"),
    Row("momentum-range", run_row("optim.momentum=1.5"), "out of range [0, 1)"),
    Row("seed-float", run_row("seed=1.5"), "seed: expected an integer"),
    Row("seed-negative", run_row("seed=-1"), "seed: -1 is out of range"),
    Row("optimizer-typo", run_row("optim.name=adamx"), "did you mean 'adam'"),
    Row("optimizer-unknown", run_row("optim.name=lbfgs"), "optim.name"),
    Row("schedule-unknown", run_row("optim.schedule=exp"), "optim.schedule: 'exp' is not one of"),
    Row("model-unknown", run_row("model=resnet99"), "valid: "),
    Row("model-nope", run_row("model=nope"), "lenet300"),
    Row("dataset-unknown", run_row("dataset=imagenet"), "fashion_mnist"),
    Row("dataset-nope", run_row("dataset=nope"), "valid: fashion_mnist"),
    Row("method-unknown", run_row("method=magic"), "valid: dense"),
    Row("distribution-unknown", run_row("distribution=gaussian"), "distribution"),
    Row("init-unknown", run_row("init=zeros"), "init: 'zeros' is not one of"),
    Row("activation-unknown", run_row("arch.activation=gelu"), "arch.activation"),
    Row("device-unknown", run_row("device=tpu"), "device: 'tpu' is not one of"),
    Row("bool-text", run_row("data.augment=maybe"), "data.augment: expected true or false"),
    Row("milestones-range", run_row("optim.milestones=0.5,1.5"), "optim.milestones"),
    Row("milestones-text", run_row("optim.milestones=a,b"), "optim.milestones[0]"),
    Row("sparsity-one", run_row("sparsity=1.0"), "sparsity"),
    Row("sparsity-negative", run_row("sparsity=-0.1"), "sparsity"),
    Row("widths-zero", run_row("arch.widths=64,0"), "arch.widths: 0 is out of range"),
    Row("widths-empty", run_row("arch.widths="), "arch.widths: empty"),
    Row("arch-option-of-other-model", run_row("model=lenet5"),
        "arch: model 'lenet5' does not support option 'depth'"),
    Row("arch-batchnorm-fixed", run_row("model=resnet20", "arch.depth=null", "arch.width=null",
                                        "arch.batchnorm=false"), "arch: model 'resnet20'"),
    Row("scsdc-no-dense-width", run_row("method=static", "distribution=scsdc"),
        "distribution=scsdc needs sparse.dense_width <= arch.width", marks=SETUP),
    Row("scsdc-not-mlp", run_row("method=static", "distribution=scsdc", "model=lenet300",
                                 "arch.depth=null", "arch.width=null"),
        "distribution=scsdc needs model=mlp", marks=SETUP),
    Row("device-cuda-missing", run_row("device=cuda"), "device: 'cuda' requested",
        marks=(pytest.mark.skipif(__import__("torch").cuda.is_available(),
                                  reason="CUDA is here"),)),
    Row("snip-no-heldout", run_row("method=snip", "data.heldout=0"), "data.heldout > 0",
        marks=SETUP),
    Row("image-model-on-vectors", run_row("model=wrn", "arch.depth=10", "arch.width=1"),
        "wrn needs input_shape (C, H, W)", marks=SETUP),
    Row("widths-text", run_row("arch.widths=a,b"), "arch.widths[0]: expected an integer"),
    Row("width-huge", run_row("arch.width=10000000"), "arch.width: 10000000 is out of range"),
    Row("batch-size-zero", run_row("train.batch_size=0"), "train.batch_size: 0 is out of range"),
    Row("heldout-negative", run_row("data.heldout=-1"), "data.heldout: -1 is out of range"),
    Row("heldout-huge", run_row("data.heldout=1000000000000"), "data.heldout: 1000000000000"),
    Row("n-train-huge", run_row("data.n_train=1000000000000"), "data.n_train: 1000000000000"),
    Row("flow-points-zero", run_row("flow.points=0"), "flow.points"),
    Row("flow-points-huge", run_row("flow.points=1000000000"), "flow.points"),
    Row("threads-huge", run_row("threads=100000"), "threads: 100000 is out of range [1, 4096]"),
    Row("checkpoint-steps-negative", run_row("train.checkpoint_steps=10,-5"),
        "train.checkpoint_steps: -5 is out of range"),
    Row("rounds-huge", run_row("method=lottery", "sparse.ticket=imp", "sparse.rounds=100000"),
        "sparse.rounds"),
    Row("n-train-not-synthetic", run_row("dataset=mnist", "data.n_train=10"), "data.n_train"),
    Row("init-matched", run_row("init=matched"), "init: 'matched' is for distribution=scsdc"),
    Row("scsdc-not-static", run_row("distribution=scsdc", "method=rigl"),
        "distribution: 'scsdc' is for method=static"),
    Row("prune-window", run_row("method=gradual", "sparse.prune_begin=0.8",
                                "sparse.prune_end=0.2"), "sparse.prune_end"),
    Row("rigl-heldout-zero", run_row("method=rigl", "sparse.grow_batch=heldout",
                                     "data.heldout=0"), "data.heldout"),
    Row("renamed-both", run_row("sparse.t_end=0.5", "sparse.update_end=0.3"),
        "sparse.t_end: renamed to sparse.update_end; give one"),
    Row("config-cmd-bad-value", ["config", "--set", "optim.lr=-1"], "optim.lr", root_arg=False),
    # -- integers that do not fit, floats that are not finite (the issue)
    Row("seed-overflow", run_row("seed=99999999999999999999999"),
        "seed: 99999999999999999999999 is out of range [0, 9223372036854775807]"),
    Row("seed-2-63", run_row("seed=9223372036854775808"), "seed"),
    Row("source-seed-overflow", run_row("sparse.source_seed=99999999999999999999999"),
        "sparse.source_seed"),
    Row("lr-nan", run_row("optim.lr=nan"), "optim.lr: expected a finite number"),
    Row("lr-inf", run_row("optim.lr=inf"), "optim.lr: expected a finite number"),
    Row("lr-yaml-inf", run_row("optim.lr=.inf"), "optim.lr: expected a finite number"),
    Row("lr-overflowing-text", run_row("optim.lr=1e999"), "optim.lr: expected a finite number"),
    Row("lr-huge-int", run_row("optim.lr=" + "9" * 400), "optim.lr: expected a finite number"),
    Row("sparsity-nan", run_row("sparsity=nan"), "sparsity: expected a finite number"),
    Row("milestones-nan", run_row("optim.milestones=0.5,nan"), "optim.milestones[1]"),
    # -- durations
    Row("duration-text", run_row("train.duration=ten"), "train.duration"),
    Row("duration-0ep", run_row("train.duration=0ep"), "train.duration: expected at least 1it"),
    Row("duration-0it", run_row("train.duration=0it"), "train.duration: expected at least 1it"),
    Row("duration-unit", run_row("train.duration=5min"), "expected a duration like '20ep'"),
    Row("duration-huge", run_row("train.duration=99999999999999999999999ep"),
        "train.duration: '99999999999999999999999ep' is too long"),
    Row("duration-number", run_row("train.duration=5"), "train.duration"),
    Row("checkpoint-every-0", run_row("train.checkpoint_every=0it"),
        "train.checkpoint_every: expected at least 1it"),
    Row("eval-every-0", run_row("train.eval_every=0it"), "train.eval_every: expected at least"),
    Row("eval-every-0ep", run_row("train.eval_every=0ep"), "train.eval_every"),
    Row("warmup-negative", run_row("optim.warmup=-5it"), "optim.warmup: expected a duration"),
    Row("warmup-text", run_row("optim.warmup=soon"), "optim.warmup: expected a duration"),
    Row("warmup-huge", run_row("optim.warmup=99999999999ep"), "optim.warmup"),
    Row("rewind-text", run_row("method=lottery", "sparse.rewind=start"), "sparse.rewind"),
    # -- --set syntax
    Row("set-no-equals", run_row("optim.lr"), "--set 'optim.lr': expected key=value"),
    Row("set-empty-key", run_row("=3"), "empty key"),
    Row("set-nothing", ["run", "--set"], "argument --set: expected at least one argument"),
    # -- config files
    Row("config-missing", ["run", "-c", "{tmp}/nonexistent.yaml"], "cannot read config file"),
    Row("config-bad-yaml", ["run", "-c", "{tmp}/c.yaml"], "not valid YAML at line",
        files={"c.yaml": "optim: {lr: [\n"}),
    Row("config-bad-yaml-2", ["run", "-c", "{tmp}/c.yaml"], "not valid YAML",
        files={"c.yaml": "optim: [1, 2\n"}),
    Row("config-list", ["run", "-c", "{tmp}/c.yaml"], "expected a mapping",
        files={"c.yaml": "- 1\n- 2\n"}),
    Row("config-scalar", ["run", "-c", "{tmp}/c.yaml"], "expected a mapping",
        files={"c.yaml": "just text\n"}),
    Row("config-unsafe-tag", ["run", "-c", "{tmp}/c.yaml"], "not valid YAML",
        files={"c.yaml": "seed: !!python/object/apply:os.system ['echo hi']\n"}),
    Row("config-unknown-key", ["run", "-c", "{tmp}/c.yaml"], "did you mean 'model'",
        files={"c.yaml": "modle: mlp\n"}),
    Row("config-section-value", ["run", "-c", "{tmp}/c.yaml"], "optim: expected a section",
        files={"c.yaml": "optim: 5\n"}),
    Row("config-value-and-section", ["run", "-c", "{tmp}/c.yaml"], "seed",
        files={"c.yaml": "seed.x: 1\nseed: 2\n"}),
    Row("config-bad-value", ["run", "-c", "{tmp}/c.yaml"], "optim.lr: -1",
        files={"c.yaml": "optim:\n  lr: -1\n"}),
    Row("config-random-bytes", ["run", "-c", "{tmp}/c.yaml"], "not UTF-8 text",
        files={"c.yaml": bytes(range(128, 256)) * 4}),
    Row("config-binary-utf8", ["run", "-c", "{tmp}/c.yaml"], "not valid YAML",
        files={"c.yaml": b"seed: \x00\x01\x02\n"}),
    Row("config-deep", ["run", "-c", "{tmp}/c.yaml"], "c.yaml: not valid YAML",
        files={"c.yaml": _deep_yaml}),
    Row("config-folder", ["run", "-c", "{tmp}/folder"], "a folder, expected a YAML file",
        files={"folder/x": ""}),
    Row("config-under-file", ["run", "-c", "{tmp}/plain/c.yaml"], "cannot read config file",
        files={"plain": "a file"}),
    Row("config-unreadable", ["run", "-c", "{tmp}/c.yaml"], "Permission denied",
        files={"c.yaml": "seed: 1\n"}, setup=_unreadable),
    Row("config-cmd-missing-file", ["config", "-c", "{tmp}/none.yaml"], "cannot read",
        root_arg=False),
    # -- the run store root and the store itself
    Row("root-is-file", run_row(), "--root: {root} is a file, not a folder",
        setup=_root_is_file),
    Row("root-under-file", ["run", "--no-progress", "--root", "{tmp}/plain/r", "--set", *TINY],
        "--root: {tmp}/plain/r: {tmp}/plain is a file, not a folder", files={"plain": "x"},
        root_arg=False),
    Row("runs-root-is-file", ["runs", "list"], "is a file, not a folder", setup=_root_is_file),
    Row("home-is-file", ["runs", "list"], "$SPARSEFLOW_HOME", setup=_home_is_file,
        root_arg=False),
    Row("store-not-a-database", run_row(), "not a SQLite database", setup=_not_a_database),
    Row("runs-no-store", ["runs", "list"], "no run store"),
    Row("report-no-store", ["report"], "no run store"),
    Row("analyze-no-store", ["analyze", "hessian", "abc"], "no run store"),
    # -- the environment
    Row("kernels-env", run_row(), "SPARSEFLOW_KERNELS: expected auto, torch or numba",
        env={"SPARSEFLOW_KERNELS": "fastest"}, setup=_bad_kernels),
    Row("kernels-numba-missing", run_row(), "numba is not installed",
        env={"SPARSEFLOW_KERNELS": "numba"}, setup=_numba_missing),
    # -- data (test_cli, test_data, test_data_download)
    Row("data-missing", run_row("dataset=mnist", "data.download=false"), "downloading is off",
        marks=SETUP),
    Row("data-root-missing", run_row("dataset=mnist", "data.root=/nonexistent",
                                     "data.download=false"),
        "data.root: /nonexistent: no such folder"),
    Row("data-root-is-file", run_row("dataset=mnist", "data.root={tmp}/plain"),
        "data.root: {tmp}/plain is a file", files={"plain": "x"}),
    Row("data-root-empty", run_row("data.root="), "data.root: expected a non-empty string"),
    Row("augment-vector-data", run_row("data.augment=true"), "data.augment: dataset synthetic "
        "has no augmentation"),
    Row("json-data-missing", ["run", "--json", "--no-progress", "--set", *TINY, "dataset=mnist",
                              "data.download=false"], "downloading is off", marks=SETUP),
    Row("data-root-without-files", run_row("dataset=mnist", "data.root={tmp}/empty",
                                           "data.download=false"),
        "mnist not found (looked in {tmp}/empty, {tmp}/empty/mnist)", files={"empty/x": ""},
        marks=SETUP),
    Row("data-truncated-idx", run_row("dataset=mnist", "data.root={tmp}/mnist",
                                      "data.download=false"),
        "train-images-idx3-ubyte.gz", files={"mnist": lambda p: _idx_folder(p, truncate=True)},
        marks=SETUP),
    Row("data-wrong-image-size", run_row("dataset=mnist", "data.root={tmp}/mnist",
                                         "data.download=false"),
        "28 x 28", files={"mnist": lambda p: _idx_folder(p, big_images=True)}, marks=SETUP),
    Row("data-heldout-too-big", run_row("dataset=mnist", "data.root={tmp}/mnist",
                                        "data.download=false",
                                        "data.heldout=1000"),
        "need 1000 examples but mnist has only 60", files={"mnist": _idx_folder}, marks=SETUP),
    Row("data-cifar-corrupt", run_row("dataset=cifar10", "data.root={tmp}/c",
                                      "data.download=false"),
        "corrupt or truncated archive", files={"c/cifar-10-python.tar.gz": os.urandom(200)},
        marks=SETUP),
    # -- sparse methods and masks (test_sparse_runs, test_checkpoint)
    Row("mask-missing-file", run_row("method=static", "sparse.mask=nope"), "sparse.mask",
        marks=SETUP),
    Row("mask-garbage-file", run_row("method=static", "sparse.mask={tmp}/m.pt"),
        "sparseflow checkpoint", files={"m.pt": b"garbage"}, marks=SETUP),
    Row("mask-not-found", run_row("method=static", "sparse.mask={tmp}/nope.pt"), "sparse.mask",
        marks=SETUP),
    Row("mask-no-model", run_row("method=static", "sparse.mask={tmp}/m.pt"), "m.pt",
        files={"m.pt": lambda p: _checkpoint(p, {"s": 1})}),
    Row("mask-raw-pickle", run_row("method=static", "sparse.mask={tmp}/m.pt"), "m.pt",
        files={"m.pt": _raw_pickle_checkpoint}),
    Row("mask-other-architecture", run_row("method=static", "arch.width=16",
                                           "sparse.mask={ckpt}"), "shape", store="runs"),
    Row("static-too-sparse", run_row("method=static", "sparsity=0.999", "arch.width=4",
                                     "arch.depth=3"), "method=static", marks=SETUP),
    Row("layers-unknown", run_row("method=static", "sparse.layers=nosuchlayer"),
        "nosuchlayer", marks=SETUP),
    Row("resume-damaged-checkpoint", run_row("method=static", "sparsity=0.8", "seed=1"),
        "corrupt or truncated", store="runs", setup=_damaged_checkpoint),
    # -- argparse (the issue): one line, what is valid, exit 2
    Row("no-command", [], "expected a command: run, config", root_arg=False),
    Row("unknown-command", ["nosuch"], "invalid choice: 'nosuch' (choose from", root_arg=False),
    Row("unknown-option", ["run", "--bogus"], "unrecognized arguments: --bogus",
        root_arg=False),
    Row("export-format", ["runs", "export", "--format", "xml"],
        "argument --format: invalid choice: 'xml'", store="empty"),
    Row("export-table", ["runs", "export", "--table", "nope"], "argument --table",
        store="empty"),
    Row("export-out-folder", ["runs", "export", "--out", "{tmp}/dir"],
        "--out: {tmp}/dir is a folder", files={"dir/x": ""}, store="empty"),
    Row("export-parquet-stdout", ["runs", "export", "--format", "parquet", "--out", "-"],
        "parquet cannot be written to stdout", store="empty"),
    Row("sparse-export-unknown-run", ["export", "deadbeef"], "not found", store="empty"),
    Row("sparse-export-step", ["export", "{a}", "--step", "999999"], "step", store="runs"),
    Row("sparse-export-dtype", ["export", "{a}", "--dtype", "int8"],
        "argument --dtype: invalid choice: 'int8'", store="runs"),
    Row("sparse-export-exists", ["export", "{a}", "--out", "{tmp}/m.pt"], "m.pt",
        files={"m.pt": "mine"}, store="runs"),
    Row("sparse-execution-choice", run_row("method=static", "sparse.execution=fast"),
        "sparse.execution"),
    Row("runs-no-action", ["runs"], "runs: expected an action", root_arg=False),
    Row("runs-unknown-action", ["runs", "delete"], "invalid choice: 'delete'", root_arg=False),
    Row("runs-show-missing-arg", ["runs", "show"], "the following arguments are required: "
        "run_id", root_arg=False),
    Row("runs-show-unknown", ["runs", "show", "deadbeef"], "not found", store="empty"),
    Row("runs-list-status", ["runs", "list", "--status", "bogus"],
        "invalid choice: 'bogus' (choose from 'running', 'finished'", store="empty"),
    Row("reproduce-paper", ["reproduce", "nosuchpaper"], "argument paper: invalid choice"),
    Row("reproduce-scale", ["reproduce", "evci2019", "--scale", "huge"], "argument --scale"),
    Row("reproduce-workers", ["reproduce", "evci2019", "--workers", "-1"],
        "argument --workers: expected an integer from 0 to 1024"),
    Row("demo-epochs", ["demo", "--epochs", "0"], "argument --epochs"),
    Row("demo-epochs-text", ["demo", "--epochs", "many"], "argument --epochs: expected an "
        "integer, got 'many'"),
    Row("report-out-file", ["report", "--out", "{tmp}/x"], "--out: {tmp}/x is a file",
        files={"x": ""}, store="runs"),
    Row("report-out-html", ["report", "--out", "{tmp}/r.html"], "a report is a folder",
        store="runs"),
    Row("report-out-not-its-file", ["report", "--out", "{tmp}/dir"],
        "dir/tables/runs.csv: exists and was not written by a sparseflow report",
        files={"dir/tables/runs.csv": "mine"}, store="runs"),
    Row("report-unknown-run", ["report", "--runs", "nosuch"], "run 'nosuch' not found",
        store="runs"),
    Row("signal-grid-too-long", ["analyze", "signal", "--sparsities", "0:0.9:99999999999"],
        "at most 100000 points"),
    Row("interpolate-grid-too-long", ["analyze", "interpolate", "{a}", "{b}",
                                      "--alphas=0:1:999999999999"], "at most 100000 points",
        store="runs"),
    Row("model-reference-import", run_row("model=no_such_module:f"),
        "model: cannot import 'no_such_module'"),
    Row("model-reference-syntax", run_row("model=a-b:c"), "expected package.module:function"),
    Row("model-args-builtin", run_row("model_args.hidden=3"),
        "model_args: only for a model of your own"),
    Row("synflow-iterations", run_row("method=synflow", "sparse.synflow_iterations=10000000"),
        "sparse.synflow_iterations"),
    Row("report-missing-sweep", ["report", "--sweep", "{tmp}/nope.yaml"],
        "cannot read sweep file", store="runs"),
    # -- analyses (test_analyze_cli, test_landscape_cli)
    Row("analyze-no-analysis", ["analyze"], "analyze: expected an analysis", root_arg=False),
    Row("analyze-unknown", ["analyze", "spectrum"], "invalid choice: 'spectrum'",
        root_arg=False),
    Row("hessian-unknown-run", ["analyze", "hessian", "nosuchrun"], "not found", store="runs"),
    Row("hessian-no-step", ["analyze", "hessian", "{a}", "--step", "3"],
        "no checkpoint at step 3", store="runs"),
    Row("hessian-top-k", ["analyze", "hessian", "{a}", "--top-k", "100000"], "exceeds",
        store="runs"),
    Row("hessian-top-k-zero", ["analyze", "hessian", "{a}", "--top-k", "0"],
        "argument --top-k", store="runs"),
    Row("hessian-step-negative", ["analyze", "hessian", "{a}", "--step", "-1"],
        "argument --step", store="runs"),
    Row("signal-sparsities", ["analyze", "signal", "--sparsities", "0:2:3"], "sparsit"),
    Row("signal-model", ["analyze", "signal", "--model", "nosuchmodel", "--sparsities", "0.5"],
        "nosuchmodel"),
    Row("signal-input-shape", ["analyze", "signal", "--input-shape", "a,b"], "--input-shape"),
    Row("signal-seed-overflow", ["analyze", "signal", "--seed", "99999999999999999999999"],
        "argument --seed: expected an integer from 0 to 9223372036854775807"),
    Row("signal-out-file", ["analyze", "signal", "--out", "{tmp}/plain"],
        "--out: {tmp}/plain is a file, not a folder", files={"plain": "x"}),
    Row("interpolate-arch", ["analyze", "interpolate", "{a}", "{c}"], "different architectures",
        store="runs"),
    Row("interpolate-missing-step", ["analyze", "interpolate", "{a}@3", "{b}"],
        "no checkpoint at step 3", store="runs"),
    Row("interpolate-masks", ["analyze", "interpolate", "{a}", "{b}"], "mask", store="runs"),
    Row("interpolate-alphas", ["analyze", "interpolate", "{a}", "{b}", "--mask", "union",
                               "--alphas", "1:0:0"], "alpha", store="runs"),
    Row("interpolate-one-endpoint", ["analyze", "interpolate", "{a}"],
        "the following arguments are required: b", store="runs"),
    Row("interpolate-split", ["analyze", "interpolate", "{a}", "{b}", "--split", "val"],
        "argument --split", store="runs"),
    Row("compare-one", ["analyze", "compare", "{a}"], "at least two", store="runs"),
    Row("curve-lr-nan", ["analyze", "curve", "{a}", "{b}", "--lr", "nan"],
        "argument --lr: expected a finite number > 0", store="runs"),
    Row("curve-points", ["analyze", "curve", "{a}", "{b}", "--points", "1"],
        "argument --points", store="runs"),
    Row("curve-kind", ["analyze", "curve", "{a}", "{b}", "--kind", "spline"],
        "argument --kind", store="runs"),
    Row("correlate-missing-file", ["analyze", "correlate", "{tmp}/nope.yaml"],
        "cannot read sweep file", store="empty"),
    # -- sweeps (test_sweep, test_study_cli)
    Row("sweep-missing-file", ["sweep", "{tmp}/nope.yaml", "--workers", "0"],
        "cannot read sweep file"),
    Row("sweep-two-files", ["sweep", "{tmp}/a.yaml", "{tmp}/b.yaml"],
        "sweep: expected one sweep file"),
    Row("sweep-status-no-file", ["sweep", "status"], "sweep status: expected one sweep file"),
    Row("sweep-workers-negative", ["sweep", "{tmp}/sweep.yaml", "--workers", "-1"],
        "argument --workers", files=sweep(SWEEP_BASE)),
    Row("sweep-workers-huge", ["sweep", "{tmp}/sweep.yaml", "--workers", "100000"],
        "argument --workers", files=sweep(SWEEP_BASE)),
    Row("sweep-scheduler-address", ["sweep", "{tmp}/sweep.yaml", "--scheduler", "tcp://[::1"],
        "not a Dask address", files=sweep(SWEEP_BASE)),
    Row("scsdc-not-scsdc", ["scsdc", "{tmp}/sweep.yaml", "--no-run"],
        "not an SC-SDC sweep", files=sweep(SWEEP_BASE)),
    Row("scsdc-narrow", ["scsdc", "{tmp}/sweep.yaml", "--workers", "0"], "wider",
        files=sweep(SCSDC_SWEEP.replace("sparse_width: 32", "sparse_width: 8")
                    .replace("dense_widths: [8]", "dense_widths: [16]"))),
    *[Row(f"sweep-{i}", ["sweep", "{tmp}/sweep.yaml", "--workers", "0", "--no-progress"],
          needle, files=sweep(text)) for i, (text, needle) in enumerate([
        ("grid: [unclosed\n", "not valid YAML at line"),
        ("grid: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("grd: {seed: [1]}\n", "unknown sweep key 'grd' (did you mean 'grid'?)"),
        ("grid: {optim.lrr: [0.1]}\n", "grid axis 'optim.lrr' is not a config field "
                                       "(did you mean 'optim.lr'?)"),
        ("zip: {lr: [0.1]}\n", "zip axis 'lr' is not a config field (did you mean 'optim.lr'?)"),
        ("base: {optim.lr: -1}\n", "base: optim.lr: -1.0 is out of range"),
        ("base: {modle: mlp}\n", "'modle' is not a config field (did you mean 'model'?)"),
        ("grid: {sparsity: []}\n", "grid axis 'sparsity' has no values (empty grid"),
        ("grid: {seed: []}\n", "empty"),
        ("grid: {}\n", "grid is empty"),
        ("grid: {sparsity: 0.5}\n", "expected a list of values"),
        ("seeds: 0\n", "seeds: 0 gives no runs (empty grid)"),
        ("seeds: []\n", "seeds: the list is empty"),
        ("seeds: 100000000000\n", "at most 10000"),
        ("zip: {optim.lr: [0.1, 0.2], sparsity: [0.5]}\n",
         "zip: every list must have the same length (optim.lr has 2, sparsity has 1)"),
        ("grid: {sparsity: [0.5, 2.0]}\n", "point sparsity=2.0: sparsity: 2.0 is out of range"),
        ("grid: {seed: [1]}\nseeds: 2\n", "seeds and a 'seed' axis"),
        (SWEEP_BASE + "grid: {seed: [99999999999999999999999]}\n", "seed"),
        (SWEEP_BASE + "grid: {optim.lr: [.nan]}\n", "optim.lr: expected a finite number"),
        (SWEEP_BASE + "grid: {train.duration: [0ep]}\n", "train.duration"),
        (SWEEP_BASE + "grid: {data.root: [/nonexistent], data.download: [false]}\n",
         "data.root: /nonexistent: no such folder"),
        ("base2: 1\n", "unknown sweep key 'base2'"),
    ])],
    Row("sweep-random-bytes", ["sweep", "{tmp}/sweep.yaml"], "not UTF-8 text",
        files={"sweep.yaml": bytes(range(128, 256))}),
    Row("sweep-folder", ["sweep", "{tmp}/dir"], "cannot read sweep file", files={"dir/x": ""}),
    Row("report-sweep-random-bytes", ["report", "--sweep", "{tmp}/sweep.yaml"], "not UTF-8 text",
        files={"sweep.yaml": bytes(range(128, 256))}, store="runs"),
    Row("sweep-status-bad-file", ["sweep", "status", "{tmp}/sweep.yaml"], "not valid YAML",
        files=sweep("grid: [\n")),
]


def _int_and_float_rows() -> list[Row]:
    """For every integer field: a value beyond 64 bits; for every float field: NaN and inf."""
    rows = []
    for name, _f, tp in iter_fields(Config):
        text = str(tp)
        if "int" in text and "float" not in text and "str" not in text:
            rows.append(Row(f"int-overflow-{name}", run_row(f"{name}=99999999999999999999999"),
                            f"{name}"))
        if "float" in text:
            rows.append(Row(f"float-nan-{name}", run_row(f"{name}=nan"),
                            "expected a finite number"))
            rows.append(Row(f"float-inf-{name}", run_row(f"{name}=-inf"),
                            "expected a finite number"))
    return rows


ROWS += _int_and_float_rows()


# ---------------------------------------------------------------- the stored runs some rows read


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> dict[str, Any]:
    """Three tiny stored runs: a and b sparse with different masks, c dense and wider."""
    from sparseflow.config import load_config
    from sparseflow.training.run import execute

    root = tmp_path_factory.mktemp("stored") / "root"
    sparse = ["method=static", "sparsity=0.8"]
    a = execute(load_config(None, TINY + sparse + ["seed=1"]), root=root, progress=False)
    b = execute(load_config(None, TINY + sparse + ["seed=5"]), root=root, progress=False)
    c = execute(load_config(None, TINY + ["arch.width=16"]), root=root, progress=False)
    return {"root": root, "a": a["run_id"], "b": b["run_id"], "c": c["run_id"],
            "ckpt": Path(a["checkpoint"]).relative_to(root)}


# ---------------------------------------------------------------- what "nothing written" means


def _store_rows(db: Path) -> tuple[int, ...] | None:
    """Rows per table of a store, or None when the file is not one."""
    try:
        with sqlite3.connect(db) as conn:
            counts = tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                           for t in ("runs", "metrics", "artifacts"))
        conn.close()
        return counts
    except sqlite3.DatabaseError:
        return None


def snapshot(folder: Path) -> dict[str, Any]:
    """Every file under ``folder`` (its bytes' digest, or a store's row counts) and folder."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder) + "/"] = "folder"
        for f in filenames:
            p = Path(dirpath) / f
            rel = os.path.relpath(p, folder)
            if f.endswith((".db-wal", ".db-shm", ".db-journal")):
                continue
            rows = _store_rows(p) if f.endswith(".db") else None
            try:
                out[rel] = rows if rows is not None else hashlib.sha1(p.read_bytes()).hexdigest()
            except PermissionError:
                out[rel] = "unreadable"
    return out


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        new_store = key not in before and key.endswith(".db") and after[key] == (0, 0, 0)
        inside = [k for k in after if k.startswith(key) and k != key]
        new_store_dir = (key not in before and key.endswith("/")
                         and inside == [key + "sparseflow.db"])
        if not (new_store or new_store_dir):  # opening a store may create it, empty
            changed.append(f"{key}: {before.get(key)} -> {after.get(key)}")
    return changed


# ---------------------------------------------------------------- the test


def _fill(text: str, ctx: dict[str, Any]) -> str:
    for key in ("tmp", "root", "a", "b", "c", "ckpt"):
        if key in ctx:
            text = text.replace("{" + key + "}", str(ctx[key]))
    return text


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input(row: Row, tmp_path, monkeypatch, capsys, request):
    tmp = tmp_path / "t"
    tmp.mkdir()
    monkeypatch.chdir(tmp)  # a default output file would land here, and be seen
    for var in ("SPARSEFLOW_HOME", "SPARSEFLOW_KERNELS", "SPARSEFLOW_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPARSEFLOW_DATA", str(tmp / "no-data"))
    monkeypatch.setenv("HOME", str(tmp / "home"))
    ctx: dict[str, Any] = {"tmp": tmp, "root": tmp / "root"}
    if row.store == "runs":
        stored = request.getfixturevalue("stored")
        shutil.copytree(stored["root"], ctx["root"])
        ctx.update(a=stored["a"], b=stored["b"], c=stored["c"],
                   ckpt=ctx["root"] / stored["ckpt"])
    elif row.store == "empty":
        from sparseflow.store.database import Store

        Store(ctx["root"] / "sparseflow.db").close()
    for rel, content in row.files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for key, value in row.env.items():
        monkeypatch.setenv(key, value)
    if row.setup is not None:
        row.setup(monkeypatch, ctx)
    argv = [_fill(a, ctx) for a in row.argv]
    if row.root_arg:
        argv += ["--root", str(ctx["root"])]
    before = snapshot(tmp)
    capsys.readouterr()

    code = main(argv)

    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-2000:]}"
    assert lines[0].startswith("sparseflow: error: "), lines[0]
    assert _fill(row.expect, ctx) in lines[0]
    changes = _changes(before, snapshot(tmp))
    assert not changes, f"written despite the error: {changes}"
    assert not (ctx["root"] / "runs").exists() or row.store == "runs"


def test_the_table_is_large_and_its_ids_unique():
    assert len(ROWS) > 126
    assert len({r.id for r in ROWS}) == len(ROWS)
