"""Training throughput (images/s) of the sparseflow loop: dense vs 90%-sparse RigL, fp32 vs bf16
(vs fp16 on CUDA), eager vs ``torch.compile``; and the wall clock of each paper preset from it.

Part 1, CIFAR-10 shapes. ResNet-20, WRN-16-8 and VGG-16 on synthetic CIFAR-shaped data
(3x32x32, 10 classes, random normal pixels, the CIFAR augmentation: 4-pixel crop and flip),
trained by :class:`sparseflow.training.loop.Trainer` exactly as a run trains (SGD momentum 0.9,
cosine schedule, ``data.augment=true``, the device loader, the sparsifier's hooks; no
gradient-flow measurement), ``method=dense`` and ``method=rigl sparsity=0.9`` (ERK, masked
execution, ``update_every=100``: mask updates fall outside the timed window, their cost is
one extra dense-gradient step per 100). Each configuration is built and warmed up first
(compilation happens there and is reported apart), then the configurations take turns, a
window of ``--steps`` steps each, ``--repeats`` times; a configuration's images/s is its best
window (other processes only ever slow a window down). Printed: images/s, then each cell's
ratio to fp32 eager dense of the same model, measured side by side.

Part 2, the paper presets. Every run of ``sparseflow reproduce PAPER --scale paper``
(``plan("paper", Setting())`` of studies/evci2022, tessera2021, evci2019, plus the source runs
they read, once each) trains ``steps x batch`` images; each distinct architecture (model,
widths, input shape; dense or sparse: the masked path costs the same at every sparsity) is
timed as in part 1 in fp32 and bf16, eager, and the preset's wall clock is the sum over its
runs of images / images-per-s: one run at a time on this device, training steps only
(evaluation, gradient-flow measurement, checkpoints and set-up not counted; on a GPU they add
roughly 5-15%). On a CPU the timed batch is smaller than the preset's 128 (``--batch``; a
CPU's images/s hardly depends on the batch); on CUDA it is the preset's own.

    python benchmarks/throughput.py                     # CPU: 1-3 minutes on 2 cores *
    python benchmarks/throughput.py --device cuda       # everything, on the GPU
    python benchmarks/throughput.py --variants fp32,bf16,fp32+compile,bf16+compile \\
        --compile-models all --no-presets

(*) about 70 s once inductor's cache holds ResNet-20; the first run compiles it, about a
minute more. Variants: ``fp32``, ``bf16``, ``fp16`` (``train.precision``), each optionally
``+compile`` (``train.compile=true``, inductor: it needs a C++ compiler on a CPU and a minute
or more per model there, hence only ResNet-20 by default on a CPU; fp16 only on CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparseflow.config import Config, Duration, load_config, run_id
from sparseflow.data import Dataset, RandomCrop
from sparseflow.training.callbacks import Callback
from sparseflow.training.loop import Trainer
from sparseflow.training.optim import build_optimizer
from sparseflow.training.run import make_model, resolve_device
from sparseflow.training.sparsifier import SparsifierCallback, build_sparsifier, heldout_sizes

CIFAR_MODELS = {"resnet20": [], "wrn-16-8": ["arch.depth=16", "arch.width=8"], "vgg16": []}
MODEL_NAME = {"resnet20": "resnet20", "wrn-16-8": "wrn", "vgg16": "vgg16"}
CPU_BATCH = {"resnet20": 32, "wrn-16-8": 8, "vgg16": 16, "wrn": 8}
SPARSITY = 0.9


@dataclass(frozen=True)
class Variant:
    """A precision and whether the forward pass is compiled."""

    precision: str
    compiled: bool

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``fp32``, ``bf16``, ``fp16``, optionally with ``+compile``."""
        name, _, extra = text.strip().partition("+")
        if name not in ("fp32", "bf16", "fp16") or extra not in ("", "compile"):
            raise SystemExit(f"--variants: {text!r} is not fp32|bf16|fp16[+compile]")
        return cls(name, extra == "compile")

    def __str__(self) -> str:
        return self.precision + ("+compile" if self.compiled else "")

    def overrides(self) -> list[str]:
        """The config keys of this variant."""
        return [f"train.precision={self.precision}",
                f"train.compile={'true' if self.compiled else 'false'}"]


@dataclass
class Arch:
    """What is timed: a model (config overrides), its input and batch, dense or sparse."""

    label: str
    overrides: list[str]
    input_shape: tuple[int, ...]
    classes: int
    batch: int
    sparse: bool
    augment: bool = False
    results: dict[str, float] = field(default_factory=dict)  # variant -> best images/s
    first_step: dict[str, float] = field(default_factory=dict)  # variant -> s (compilation)

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity of the timed configuration (not its label)."""
        return (tuple(sorted(self.overrides)), self.input_shape, self.classes, self.batch,
                self.sparse, self.augment)


class _Clock(Callback):
    """Wall time from the start of ``fit`` to the end of its last step (device synchronised)."""

    name = "clock"

    def __init__(self, device: torch.device) -> None:
        self.device, self.t0, self.t1 = device, 0.0, 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_start(self, trainer: Any) -> None:
        self.t0 = self._now()

    def after_step(self, trainer: Any) -> None:
        if trainer.step == trainer.total_steps:
            self.t1 = self._now()


def _no_sources(cfg: Config) -> dict[str, Any]:
    raise RuntimeError("throughput: the timed methods read no other run")


def synthetic(shape: tuple[int, ...], classes: int, n: int, augment: bool) -> Dataset:
    """Random normal 'images' of ``shape``, random labels; CIFAR's crop+flip when ``augment``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    crop = RandomCrop(pad=4, flip=True, fill=(0.0,) * shape[0]) if augment else None
    return Dataset("synthetic", x, y, x[:32].clone(), y[:32].clone(), [], classes, shape, crop)


def build(arch: Arch, variant: Variant, device: torch.device) -> tuple[Trainer, _Clock]:
    """A Trainer for ``arch`` in ``variant``, as ``sparseflow run`` would set it up."""
    method = ["method=rigl", f"sparsity={SPARSITY}"] if arch.sparse else ["method=dense"]
    cfg = load_config(None, [*arch.overrides, *method, *variant.overrides(),
                             f"train.batch_size={arch.batch}", "train.duration=1000000it",
                             "train.eval_every=1000000it", "flow.enabled=false",
                             f"device={device.type}", "data.heldout=0",
                             f"data.augment={'true' if arch.augment else 'false'}"])
    data = synthetic(arch.input_shape, arch.classes, arch.batch * 4, arch.augment)
    clock = _Clock(device)
    trainer, _ = trainer_for(cfg, data, device, 10_000, 4, _no_sources, [clock])
    return trainer, clock


def trainer_for(cfg: Config, data: Dataset, device: torch.device, total_steps: int,
                steps_per_epoch: int, sources: Any, callbacks: Sequence[Callback] = ()
                ) -> tuple[Trainer, Any]:
    """(Trainer, sparsifier or None) for ``cfg`` on ``data``, set up as ``sparseflow run``
    sets a run up: the model on ``device`` (channels_last if asked), the optimiser, the
    method's sparsifier (``sources``: the executor a method that reads another run calls) and
    its callback before ``callbacks``."""
    model = make_model(cfg, data).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg.optim, model)
    trainer = Trainer(cfg, model, opt, data, device=device, callbacks=list(callbacks),
                      progress=False, echo=lambda s: None)
    with tempfile.TemporaryDirectory() as tmp:
        sparsifier, _ = build_sparsifier(cfg, model, opt, data, total_steps, steps_per_epoch,
                                         sources, Path(tmp))
    if sparsifier is not None:
        trainer.callbacks.insert(0, SparsifierCallback(sparsifier))
    trainer.use_model(model)
    return trainer, sparsifier


def run_window(trainer: Trainer, clock: _Clock, steps: int) -> float:
    """Seconds of the next ``steps`` training steps."""
    trainer.total_steps = trainer.step + steps
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit()
    return clock.t1 - clock.t0


def measure(archs: Sequence[Arch], variants: Sequence[Variant], device: torch.device,
            steps: int, repeats: int, compile_models: set[str], log: Any) -> None:
    """Fill each arch's ``results``: configurations built and warmed up (1 step, compiling;
    a second one when compiled or on CUDA), then timed in turns, ``repeats`` windows of
    ``steps`` steps; the best window counts."""
    for group in _by_label(archs):
        live = []
        for arch in group:
            for v in variants:
                if v.compiled and not ({"all", arch.label.split()[0]} & compile_models):
                    continue
                if v.precision == "fp16" and device.type != "cuda":
                    continue
                trainer, clock = build(arch, v, device)
                arch.first_step[str(v)] = run_window(trainer, clock, 1)
                if v.compiled or device.type == "cuda":
                    run_window(trainer, clock, 1)  # a second warm-up (autotuning, caches)
                live.append((arch, v, trainer, clock))
        times: dict[tuple[int, str], list[float]] = {}
        for _ in range(repeats):
            for arch, v, trainer, clock in live:
                times.setdefault((id(arch), str(v)), []).append(
                    run_window(trainer, clock, steps))
        for arch, v, _, _ in live:
            best = min(times[(id(arch), str(v))])
            arch.results[str(v)] = steps * arch.batch / best
        log(f"  timed {group[0].label}: "
            + ", ".join(f"{'sparse' if a.sparse else 'dense'} {v} {a.results[str(v)]:.0f}/s"
                        for a, v, _, _ in live))
        del live


def _by_label(archs: Sequence[Arch]) -> list[list[Arch]]:
    out: dict[str, list[Arch]] = {}
    for a in archs:
        out.setdefault(a.label, []).append(a)
    return list(out.values())


# -- part 2: the presets -------------------------------------------------------------------------

def preset_runs(paper: str) -> list[Config]:
    """Every run of the paper preset (its own and their sources), once each."""
    import importlib

    from sparseflow.studies.setting import Setting
    from sparseflow.training.lineage import source_configs

    mod = importlib.import_module(f"sparseflow.studies.{paper}")
    runs: dict[str, Config] = {}
    for cfg in mod.plan("paper", Setting()):
        for c in [*source_configs(cfg), cfg]:
            runs.setdefault(run_id(c), c)
    return list(runs.values())


def train_examples(cfg: Config) -> tuple[int, tuple[int, ...], int]:
    """(images trained, input shape, classes) of a run, from the dataset's known sizes."""
    from sparseflow.data.availability import dataset_info

    info = dataset_info(cfg.dataset, heldout=heldout_sizes(cfg) or ())
    if info is None:
        raise SystemExit(f"throughput: unknown size of dataset {cfg.dataset}")
    spe = info.n_train // cfg.train.batch_size
    steps = Duration.parse(cfg.train.duration).steps(spe)
    return steps * cfg.train.batch_size, tuple(info.input_shape), info.num_classes


def arch_of(cfg: Config, shape: tuple[int, ...], classes: int, batch: int,
            label: str | None = None) -> Arch:
    """The timed architecture of a run (sparse: any method with masks; ``small_dense`` is
    timed as the dense model, its narrower widths being chosen at run time: an upper bound)."""
    a = cfg.arch
    ov = [f"model={cfg.model}", f"dataset={cfg.dataset}", f"arch.activation={a.activation}"]
    for key, value in (("widths", a.widths), ("depth", a.depth), ("width", a.width)):
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            ov.append(f"arch.{key}={text}")
    if a.batchnorm is not None:
        ov.append(f"arch.batchnorm={'true' if a.batchnorm else 'false'}")
    sparse = cfg.method not in ("dense", "small_dense")
    if label is None:
        label = " ".join([cfg.model, *(o.removeprefix("arch.") for o in ov[3:])])
    return Arch(label, ov, shape, classes, batch, sparse, augment=cfg.data.augment)


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    hours = seconds / 3600
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.1f} h"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--models", default=",".join(CIFAR_MODELS),
                   help="comma list of CIFAR models (resnet20, wrn-16-8, vgg16)")
    p.add_argument("--variants", default=None, help="comma list of fp32|bf16|fp16[+compile] "
                   "(default CPU: fp32,bf16,fp32+compile; CUDA: fp32,bf16,fp16,fp32+compile,"
                   "bf16+compile)")
    p.add_argument("--compile-models", default=None, help="models whose compiled variants "
                   "are timed: comma list or 'all' (default CPU: resnet20; CUDA: all)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch of every timed model (default CPU: 32 / 8 / 16 for ResNet-20 / "
                   "WRN-16-8 / VGG-16 and 32 for the presets' models; CUDA: 128)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window "
                   "(default CPU 2, CUDA 20)")
    p.add_argument("--repeats", type=int, default=None, help="timed windows per "
                   "configuration (default CPU 2, CUDA 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1, "
                   "as a sweep's workers train)")
    p.add_argument("--no-presets", action="store_true", help="skip part 2")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    variants = [Variant.parse(v) for v in (args.variants or (
        "fp32,bf16,fp16,fp32+compile,bf16+compile" if cuda else "fp32,bf16,fp32+compile")
    ).split(",")]
    compile_models = set((args.compile_models or ("all" if cuda else "resnet20")).split(","))
    steps = args.steps or (20 if cuda else 2)
    repeats = args.repeats or (5 if cuda else 2)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    where = (torch.cuda.get_device_name(device) if cuda
             else f"cpu, {torch.get_num_threads()} thread(s)")
    print(f"# training throughput on {where}; torch {torch.__version__}; "
          f"{steps} steps x {repeats} windows, best window")

    # part 1
    archs = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in CIFAR_MODELS:
            raise SystemExit(f"--models: unknown {name!r}; valid: {', '.join(CIFAR_MODELS)}")
        batch = args.batch or (128 if cuda else CPU_BATCH[name])
        for method in ("dense", "rigl"):
            cfg = load_config(None, [f"model={MODEL_NAME[name]}", "dataset=cifar10",
                                     "data.augment=true", f"method={method}",
                                     *CIFAR_MODELS[name]])
            archs.append(arch_of(cfg, (3, 32, 32), 10, batch, label=name))
    measure(archs, variants, device, steps, repeats, compile_models, log)
    names = [str(v) for v in variants]
    head = f"{'model':10} {'batch':>5} {'method':8} " + " ".join(f"{n:>13}" for n in names)
    print("\n## images/s (CIFAR-10 shapes, synthetic data, crop+flip augmentation)")
    print(head)
    for a in archs:
        cells = [f"{a.results[n]:13.1f}" if n in a.results else f"{'-':>13}" for n in names]
        print(f"{a.label:10} {a.batch:5d} {'rigl90' if a.sparse else 'dense':8} "
              + " ".join(cells))
    print("\n## ratio to fp32 eager dense of the same model (> 1: faster)")
    print(head)
    for a in archs:
        ref = next(b for b in archs if b.label == a.label and not b.sparse).results.get("fp32")
        cells = [f"{a.results[n] / ref:13.2f}" if n in a.results and ref else f"{'-':>13}"
                 for n in names]
        print(f"{a.label:10} {a.batch:5d} {'rigl90' if a.sparse else 'dense':8} "
              + " ".join(cells))
    compiled = [(a, n) for a in archs for n in names if "+compile" in n and n in a.first_step]
    if compiled:
        print("\n## first step with compilation (s)")
        for a, n in compiled:
            print(f"{a.label:10} {'rigl90' if a.sparse else 'dense':8} {n:>13} "
                  f"{a.first_step[n]:8.1f}")

    if args.no_presets:
        print(f"\n# {time.perf_counter() - t_start:.0f} s")
        return 0

    # part 2
    eager = [v for v in variants if not v.compiled and v.precision in ("fp32", "bf16")]
    timed: dict[tuple[Any, ...], Arch] = {a.key: a for a in archs}
    plans: dict[str, list[tuple[Config, int, Arch]]] = {}
    todo: list[Arch] = []
    for paper in ("evci2022", "tessera2021", "evci2019"):
        rows = []
        for cfg in preset_runs(paper):
            images, shape, classes = train_examples(cfg)
            batch = args.batch or (cfg.train.batch_size if cuda else
                                   CPU_BATCH.get(cfg.model, 32))  # the same key as part 1
            arch = arch_of(cfg, shape, classes, batch)
            if arch.key not in timed:
                timed[arch.key] = arch
                todo.append(arch)
            rows.append((cfg, images, timed[arch.key]))
        plans[paper] = rows
    log(f"  presets: {len(todo)} more architectures to time")
    measure(todo, eager, device, max(1, steps // 2) if not cuda else steps,
            1 if not cuda else max(1, repeats // 2), set(), log)
    print("\n## paper presets: estimated wall clock of their training steps, one run at a "
          "time on this device")
    cols = [str(v) for v in eager]
    print(f"{'preset':12} {'runs':>5} {'images':>10} " + " ".join(f"{c:>10}" for c in cols)
          + f" {'bf16/fp32':>10}")
    for paper, rows in plans.items():
        total = {c: sum(images / arch.results[c] if arch.results.get(c) else math.inf
                        for _, images, arch in rows) for c in cols}
        images = sum(i for _, i, _ in rows)
        speed = (f"{total['fp32'] / total['bf16']:10.2f}"
                 if "fp32" in total and "bf16" in total and math.isfinite(total["bf16"])
                 else f"{'-':>10}")
        print(f"{paper:12} {len(rows):5d} {images / 1e9:9.2f}G "
              + " ".join(f"{_fmt_time(total[c]):>10}" for c in cols) + f" {speed}")
    for paper, rows in plans.items():
        by_arch: dict[str, list[int]] = {}
        for _, images, arch in rows:
            by_arch.setdefault(f"{arch.label} ({'sparse' if arch.sparse else 'dense'})",
                               []).append(images)
        parts = [f"{k}: {len(v)} runs, {statistics.fmean(v) / 1e6:.1f}M images each"
                 for k, v in sorted(by_arch.items())]
        print(f"# {paper}: " + "; ".join(parts[:6]) + (" ..." if len(parts) > 6 else ""))
    print(f"\n# {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
