"""The configuration of one run: every field typed, documented, validated and hashable.

``sparseflow run --help`` lists these fields; ``-c file.yaml`` and ``--set a.b=value`` set them.
The run id is :func:`run_id` = a content hash of the non-default, run-naming fields.

(Kept whole past ~400 lines: one schema, the run's sections as field declarations with their
help, bounds and choices (nearly half the lines; what ``--help`` lists) and :class:`Config` with
the cross-field checks over them. It is a layer of its own, so a part moved out would be a new
layer unit rather than a module beside it.)
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sparseflow import typed
from sparseflow.errors import ConfigError
from sparseflow.factories import is_reference, load_factory
from sparseflow.methods.registry import method_names, method_spec, option_classes
from sparseflow.typed import field

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "cosine", "step", "linear")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")

_DURATION = re.compile(r"^\s*(\d+)\s*(ep|it)\s*$")
MAX_DURATION = 2**31 - 1
"""The most epochs or steps a duration may name (its steps must fit a 64-bit integer)."""
SEED_MAX = 2**63 - 1
"""The largest seed: what ``torch.manual_seed`` and the store's INTEGER column both take."""
MAX_ROUNDS = 100
"""The most rounds of iterative magnitude pruning (``sparse.rounds``): each is a training run."""
WIDTH_MAX = 2**20
"""The widest layer and the deepest network a config may ask for."""


@dataclass(frozen=True)
class Duration:
    """A length of training written as ``20ep`` (epochs) or ``500it`` (steps)."""

    amount: int
    unit: str  # "ep" or "it"

    @classmethod
    def parse(cls, text: str, name: str = "duration", *, positive: bool = False) -> Duration:
        """Parse ``'20ep'`` / ``'500it'``; a ConfigError names the field otherwise.

        ``positive``: zero is refused too (a length of training, an interval)."""
        m = _DURATION.match(str(text))
        if not m:
            raise ConfigError(f"{name}: expected a duration like '20ep' or '500it', got {text!r}")
        amount = int(m.group(1))
        if amount > MAX_DURATION:
            raise ConfigError(f"{name}: {text!r} is too long (at most {MAX_DURATION}"
                              f"{m.group(2)})")
        if positive and amount == 0:
            raise ConfigError(f"{name}: expected at least 1it or 1ep, got {text!r}")
        return cls(amount, m.group(2))

    def steps(self, steps_per_epoch: int) -> int:
        """Length in optimiser steps."""
        return self.amount * steps_per_epoch if self.unit == "ep" else self.amount


@dataclass
class DataConfig:
    heldout: int = field(
        1000, low=0, high=10**7, help="Training examples held out (never trained on) for "
        "gradient-flow measurement."
    )
    augment: bool = field(False, help="Random shift (28x28) or crop+flip (CIFAR) augmentation.")
    eval_batch_size: int = field(
        1000, low=1, high=2**31 - 1, help="Batch size for evaluation.", hash=False
    )
    root: str | None = field(
        None, hash=False, help="Directory holding the dataset files; when given, only it (and "
        "its <dataset> subfolder) is searched, and downloads go there (default: the lookup "
        "order $SPARSEFLOW_DATA, ~/.cache/sparseflow, /usr/share/datasets).",
    )
    download: bool = field(True, hash=False, help="Download missing dataset files.")
    n_train: int | None = field(
        None, low=1, high=10**7, help="synthetic dataset only: number of training examples."
    )
    on_device: bool | str = field(
        "auto", hash=False, help="Keep the training set on the run's device and gather, crop "
        "and flip each batch there (the random draws stay on the CPU generator seeded by "
        "(seed, step), so the batches are the same either way); false: batches are made on "
        "the CPU and copied; auto: true on CUDA when the training set takes at most a quarter "
        "of the free device memory and its augmentation is the built-in one, false on CPU.",
    )

    def validate(self) -> None:
        """``on_device`` is true, false or auto."""
        if isinstance(self.on_device, str) and self.on_device != "auto":
            raise ConfigError(f"data.on_device: expected true, false or auto, got "
                              f"{self.on_device!r}")


@dataclass
class ArchConfig:
    widths: list[int] | None = field(
        None, low=1, high=WIDTH_MAX, help="Hidden widths (MLP units / LeNet channels and "
        "units), overriding the model's defaults; e.g. 300,100."
    )
    depth: int | None = field(
        None, low=1, high=WIDTH_MAX, help="Depth (MLP: hidden layers; WRN: d)."
    )
    width: int | None = field(
        None, low=1, high=WIDTH_MAX, help="Width (MLP: units per hidden layer; WRN: k)."
    )
    activation: str = field(
        "relu", choices=("relu", "prelu", "elu", "silu", "swish", "srelu", "sigmoid", "tanh"),
        help="Hidden activation.",
    )
    batchnorm: bool | None = field(
        None, help="BatchNorm after each hidden layer (default: the model's own choice, e.g. "
        "on for ResNets, off for MLP/LeNet/VGG)."
    )
    skip: bool | None = field(
        None, help="Residual skip connections between equal-width hidden layers (MLP only)."
    )
    init: str = field(
        "default", choices=("default", "glorot", "he"), help="Dense base init of Linear/Conv "
        "weights before any mask: PyTorch's default (U(+-1/sqrt(fan_in))), Glorot uniform with "
        "zero biases (Keras' default, used by the papers' code) or He normal (var 2/fan_in)."
    )


@dataclass
class OptimConfig:
    name: str = field("momentum", choices=OPTIMIZERS, help="Optimiser.")
    lr: float = field(0.05, low=0.0, low_open=True, help="Peak learning rate.")
    momentum: float = field(
        0.9, low=0.0, high=1.0, high_open=True,
        help="Momentum (momentum, nesterov; rmsprop's momentum when name=rmsprop uses 0).",
    )
    l2: float = field(
        0.0, low=0.0, help="Coupled L2: adds l2*w to the gradient (so it passes through Adam's "
        "moments)."
    )
    weight_decay: float = field(
        0.0, low=0.0, help="Decoupled weight decay: w <- w - lr_t*weight_decay*w after the "
        "step (AdamW / SGDW, Loshchilov & Hutter)."
    )
    decay_all: bool = field(
        False, help="Apply l2 / weight_decay to biases and normalisation parameters too "
        "(default: Linear/Conv weights only, as in the papers' Keras kernel_regularizer)."
    )
    beta1: float = field(0.9, low=0.0, high=1.0, high_open=True, help="Adam beta1.")
    beta2: float = field(0.999, low=0.0, high=1.0, high_open=True, help="Adam beta2.")
    eps: float = field(1e-8, low=0.0, low_open=True, help="Adam/RMSProp/Adagrad epsilon.")
    alpha: float = field(0.99, low=0.0, high=1.0, help="RMSProp smoothing constant.")
    schedule: str = field("cosine", choices=SCHEDULES, help="Learning-rate schedule.")
    warmup: str = field(
        "0it", help="Linear warm-up from 0 to lr, e.g. '500it' or '1ep' (longer than training "
        "is allowed: lr then never reaches its peak)."
    )
    milestones: list[float] = field(
        default_factory=lambda: [0.5, 0.75],
        help="step schedule: fractions of training at which lr is multiplied by gamma.",
    )
    gamma: float = field(0.1, low=0.0, low_open=True, help="step schedule: decay factor.")


@dataclass
class TrainConfig:
    duration: str = field("15ep", help="Training length: '20ep' (epochs) or '500it' (steps).")
    batch_size: int = field(128, low=1, high=2**31 - 1, help="Training batch size.")
    eval_every: str = field(
        "1ep", help="Evaluate on the test set every this often (and at the end)."
    )
    checkpoint_every: str = field(
        "1ep", hash=False, help="Checkpoint every this often (also at step 0 and at the end)."
    )
    checkpoint_steps: list[int] = field(
        default_factory=list, low=0, hash=False,
        help="Extra steps to checkpoint (e.g. a late-rewinding point).",
    )
    flush_denormal: bool = field(
        True, help="torch.set_flush_denormal(True): avoids slow denormal arithmetic on CPU."
    )
    precision: str = field(
        "fp32", choices=PRECISIONS, help="Arithmetic of the training forward pass and loss: "
        "fp32, or autocast to bf16 / fp16 (fp16 with a gradient scaler; a step whose scaled "
        "gradients overflow is retried on the same batch with half the scale). Weights, "
        "optimiser state, masks, evaluation and gradient-flow measurements stay float32. "
        "fp16 on a CPU is correct but slow (CPUs rarely compute in fp16)."
    )
    compile: bool = field(
        False, hash=False, help="Run the training forward pass through torch.compile (the "
        "same run: only the order of float operations may change). Needs "
        "sparse.execution=masked."
    )
    channels_last: bool = field(
        False, hash=False, help="Convolution weights and image batches in the channels_last "
        "memory format (faster convolutions on GPUs; the same run up to float rounding)."
    )


def _sparse_section() -> type:
    """The ``sparse`` section: the fields of every registered method's option classes
    (:mod:`sparseflow.methods.options`), each once, in registration order."""
    fields: dict[str, tuple[str, Any, Any]] = {}
    for cls in option_classes():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in fields:
                copy = dataclasses.field(default=f.default, default_factory=f.default_factory,
                                         metadata=f.metadata)
                fields[f.name] = (f.name, hints[f.name], copy)
    section = dataclasses.make_dataclass("SparseConfig", list(fields.values()))
    section.__module__ = __name__  # found by name, e.g. when a config is pickled
    section.__doc__ = ("Options of the sparse methods: the union of the registered methods' "
                       "option classes (sparseflow.methods.options).")
    return section


SparseConfig = _sparse_section()


@dataclass
class FlowConfig:
    enabled: bool = field(True, hash=False, help="Measure gradient flow during training.")
    every: int = field(
        500, low=0, hash=False, help="Measure every this many steps (0: only at step 0, the "
        "evenly spaced points and mask updates)."
    )
    early: int = field(
        2000, low=0, high=2**62, hash=False,
        help="Also measure at steps 1, 2, 5, 10, 20, 50, ... up to "
        "this step, so that the start of training is resolved on a log axis (0: off)."
    )
    points: int = field(
        11, low=1, high=10**6, hash=False, help="Evenly spaced measurement points whose mean "
        "goes into the summary (Tessera et al. average EGF over 11)."
    )
    around_updates: int = field(
        5, low=0, hash=False, help="Measure just before and after every k-th mask update "
        "(the 1st, (k+1)-th, ...; 1: every update; 0: none). Each measurement costs a "
        "forward and backward pass on the held-out batch."
    )
    per_layer: bool = field(True, hash=False, help="Also store per-layer gradient norms.")
    per_active: bool = field(
        False, hash=False, help="Also report EGF with each layer's norm divided by its active "
        "count."
    )
    mode: str = field(
        "train", choices=("train", "eval"), hash=False, help="Model mode while measuring "
        "(BatchNorm statistics are never changed by a measurement)."
    )


@dataclass
class LogConfig:
    tensorboard: bool = field(
        False, hash=False, help="Also write TensorBoard event files (needs the "
        "'tensorboard' extra)."
    )


@dataclass
class Config:
    dataset: str = field("fashion_mnist", help="Dataset name, or package.module:function of "
                         "your own (returning a sparseflow.data.Dataset; docs/data.md).")
    dataset_args: dict[str, Any] = field(
        default_factory=dict, help="Keyword arguments of a dataset of your own: "
        "--set dataset_args.n=5000 (numbers, strings, true/false, lists).")
    model: str = field("lenet300", help="Model name, or package.module:function of your own "
                       "(called as function(input_shape, num_classes, **model_args); "
                       "docs/models.md).")
    model_args: dict[str, Any] = field(
        default_factory=dict, help="Keyword arguments of a model of your own: "
        "--set model_args.hidden=256 (numbers, strings, true/false, lists).")
    method: str = field("dense", help="Training method.")
    sparsity: float = field(
        0.9, low=0.0, high=1.0, high_open=True, help="Target sparsity of the sparsified "
        "layers (ignored by method=dense)."
    )
    distribution: str = field(
        "erk", choices=("uniform", "er", "erk", "scsdc"), help="How the sparsity is split over "
        "layers; scsdc: each layer keeps as many weights as the dense MLP of width "
        "sparse.dense_width (method=static, model=mlp; sparsity is then ignored)."
    )
    init: str = field(
        "dense", choices=("dense", "liu", "sparse", "matched"), help="Init of sparse weights: "
        "masked dense init, Liu et al. scaling, sparsity-aware per-unit fan-in (the '+' runs), "
        "or (scsdc) the dense partner's per-layer distribution."
    )
    seed: int = field(
        0, low=0, high=SEED_MAX, help="Random seed (init, data order, augmentation)."
    )
    device: str = field("auto", choices=DEVICES, hash=False, help="Device.")
    threads: int | None = field(
        None, low=1, high=4096, hash=False, help="torch.set_num_threads (default: torch's choice)."
    )
    data: DataConfig = field(default_factory=DataConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        """Cross-field checks and registry names (lists the valid names on error)."""
        from sparseflow.data import DATASETS
        from sparseflow.models import model_names

        if is_reference(self.dataset):
            load_factory(self.dataset, "dataset")  # importable and callable
        elif self.dataset not in DATASETS:
            raise ConfigError(
                f"dataset: unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)} "
                "(or package.module:function of your own)"
            )
        elif self.dataset_args:
            raise ConfigError(f"dataset_args: only for a dataset of your own "
                              f"(dataset=package.module:function), not dataset={self.dataset}")
        if is_reference(self.model):
            load_factory(self.model, "model")  # importable and callable
        elif self.model not in model_names():
            raise ConfigError(
                f"model: unknown model {self.model!r}; valid: {', '.join(model_names())} "
                "(or package.module:function of your own)"
            )
        elif self.model_args:
            raise ConfigError(f"model_args: only for a model of your own "
                              f"(model=package.module:function), not model={self.model}")
        if self.method not in method_names():
            raise ConfigError(
                f"method: unknown method {self.method!r}; valid: {', '.join(method_names())}"
            )
        self._check_arch()
        Duration.parse(self.train.duration, "train.duration", positive=True)
        Duration.parse(self.train.eval_every, "train.eval_every", positive=True)
        Duration.parse(self.train.checkpoint_every, "train.checkpoint_every", positive=True)
        Duration.parse(self.optim.warmup, "optim.warmup")
        Duration.parse(self.sparse.rewind, "sparse.rewind")
        self._check_data()
        self._check_train()
        if self.sparse.rounds > MAX_ROUNDS:
            raise ConfigError(f"sparse.rounds: {self.sparse.rounds} is out of range [1, "
                              f"{MAX_ROUNDS}] (each round trains a run)")
        self._check_pattern()
        if self.init == "matched" and self.distribution != "scsdc":
            raise ConfigError("init: 'matched' is for distribution=scsdc")
        if self.distribution == "scsdc" and self.method != "static":
            raise ConfigError("distribution: 'scsdc' is for method=static (the sparse network "
                              "of an SC-SDC pair)")
        if self.sparse.prune_end < self.sparse.prune_begin:
            raise ConfigError(
                f"sparse.prune_end: {self.sparse.prune_end} is before sparse.prune_begin "
                f"({self.sparse.prune_begin})"
            )
        for m in self.optim.milestones:
            if not 0.0 < m < 1.0:
                raise ConfigError(f"optim.milestones: {m!r} is out of range (0, 1)")

    def _check_pattern(self) -> None:
        """``sparse.pattern`` parses, fits the sparsity (N:M fixes it) and the method."""
        from sparseflow.sparsity import parse_pattern

        try:
            pat = parse_pattern(self.sparse.pattern)
        except ValueError as e:
            raise ConfigError(f"sparse.pattern: {e}") from None
        if not pat.structured or method_spec(self.method).factory is None:
            return
        if self.distribution == "scsdc":
            raise ConfigError(f"sparse.pattern: {pat} does not combine with distribution=scsdc "
                              "(its masks are random unstructured ones)")
        if pat.kind == "nm" and abs(self.sparsity - (1.0 - pat.n / pat.m)) > 1e-9:
            raise ConfigError(f"sparsity: pattern {pat} fixes the sparsity at "
                              f"{1.0 - pat.n / pat.m:g}; set sparsity={1.0 - pat.n / pat.m:g}, "
                              f"got {self.sparsity:g}")

    def _check_arch(self) -> None:
        """The arch options against the model's own (before any file is written)."""
        from sparseflow.models import ModelError
        from sparseflow.models.registry import resolve_options

        a = self.arch
        if is_reference(self.model):
            if a != ArchConfig(activation=a.activation, init=a.init):
                raise ConfigError("arch: a model of your own takes its options from "
                                  "model_args (arch.widths/depth/width/batchnorm/skip are for "
                                  "the built-in models)")
            if method_spec(self.method).narrows_model:
                raise ConfigError(f"method={self.method}: narrows a built-in model; a model "
                                  "of your own cannot be narrowed")
            return
        if a.widths is not None and not a.widths:
            raise ConfigError("arch.widths: empty; give at least one width (or leave it out)")
        try:
            resolve_options(self.model, widths=a.widths, depth=a.depth, width=a.width,
                            activation=a.activation, batchnorm=a.batchnorm, skip=a.skip)
        except ModelError as e:
            raise ConfigError(f"arch: {e}") from None

    def _check_train(self) -> None:
        """Mixed precision and compilation run the masked execution only."""
        if self.sparse.execution == "masked" or method_spec(self.method).factory is None:
            return
        if self.train.precision != "fp32":
            raise ConfigError(f"train.precision: {self.train.precision} needs "
                              f"sparse.execution=masked (the CSR kernels of "
                              f"sparse.execution={self.sparse.execution} compute in float32)")
        if self.train.compile:
            raise ConfigError(f"train.compile: needs sparse.execution=masked (layers of "
                              f"sparse.execution={self.sparse.execution} change their parameters "
                              "at every mask update, which would recompile the model)")

    def _check_data(self) -> None:
        """The data settings against each other, the method and (data.root) the disk."""
        if self.data.n_train is not None and self.dataset != "synthetic":
            raise ConfigError(f"data.n_train: only the synthetic dataset takes n_train "
                              f"(dataset={self.dataset})")
        from sparseflow.data import NORMALISATION

        if self.data.augment and self.dataset not in NORMALISATION and \
                not is_reference(self.dataset):  # a dataset of one's own brings its own
            raise ConfigError(f"data.augment: dataset {self.dataset} has no augmentation "
                              f"(vector data; image datasets: {', '.join(NORMALISATION)})")
        batches = method_spec(self.method).heldout_batches(self.sparse)
        if self.data.heldout == 0 and batches > 1:
            raise ConfigError(f"data.heldout: method={self.method} with these sparse options "
                              f"needs {batches} held-out batches; set data.heldout > 0")
        if self.data.root is None:
            return
        root = Path(self.data.root).expanduser()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"data.root: {self.data.root} is a file, not a folder")
        if not self.data.download and not root.exists():
            raise ConfigError(f"data.root: {self.data.root}: no such folder (and "
                              "data.download=false)")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """``{dotted key: value}`` of a YAML config file (``yaml.safe_load``; an empty file is
    empty; renamed keys under their current names); a top level that is not a mapping is a
    one-line ConfigError naming the file. Keys are checked by the caller."""
    p = Path(path)
    loaded = typed.read_yaml(p, "config file")
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    return {typed.canonical(Config, str(k)): v for k, v in typed.flatten(loaded).items()}


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Config from an optional YAML file (``yaml.safe_load``) plus ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = typed.unflatten(read_config_file(path))
    pairs = dict(typed.parse_override(o) for o in overrides)
    renamed = typed.former_names(Config)
    for old, new in renamed.items():
        if old in pairs and new in pairs:
            raise ConfigError(f"{old}: renamed to {new}; give one")
    pairs = {renamed.get(k, k): v for k, v in pairs.items()}
    for key in pairs:
        if not typed.is_field(Config, key):
            raise typed._unknown_key(key, typed.leaf_names(Config))
    return typed.from_dict(Config, typed.merge(data, pairs))


def config_from_dict(data: dict[str, Any]) -> Config:
    """Config from a nested dict (as stored in the run store)."""
    return typed.from_dict(Config, data)


def run_id(cfg: Config) -> str:
    """Content hash of the non-default run-naming settings: the same config is the same run."""
    return typed.content_hash(cfg)


def config_to_yaml(cfg: Config) -> str:
    """YAML text of the full config."""
    return yaml.safe_dump(typed.to_dict(cfg), sort_keys=False)
