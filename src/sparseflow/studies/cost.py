"""What a run will cost before it runs: FLOPs from the model, CPU time from a short probe,
GPU time from a stated assumption. An estimate, labelled as one everywhere it is shown.

The model. A run's forward cost per example is the multiply-adds (MACs) of its Linear and
Conv layers, counted with forward hooks on one example of the dataset's input shape (the model
is built on the ``meta`` device: nothing is allocated or computed; the dataset's shape and
sizes come from :func:`sparseflow.data.availability.dataset_info`, without reading it); a
MAC counts as 2 FLOPs. Training one example costs about 3 forward passes (the backward pass is
about twice the forward). A run trains ``steps x batch`` examples, evaluates the test set
every ``train.eval_every`` and at the end (forward only), measures gradient flow on the
held-out batch at its measurement steps and around mask updates (forward and backward), and
RigL with ``sparse.grow_batch=heldout`` takes one more dense gradient on a held-out batch per
update. The masked path computes dense products, so sparsity does not lower the count;
BatchNorm, activations, pooling, the optimiser update, masking, mask updates, augmentation,
checkpoints and data loading are not counted as FLOPs.

CPU time (one thread per run, as a sweep's workers train): each distinct architecture (model,
widths, input shape, batch; the optimiser of the first run with it) is timed on this machine
for a few training steps on random inputs (warm-up steps, then steps until ``PROBE_SECONDS``
of CPU time have passed, at least three, the fastest of them; the CPU time of the probing
thread, not wall time, so that other processes on a shared machine do not slow the probe
down; a model whose full batch would take longer than ``PROBE_SECONDS`` per step is timed on a
smaller batch and scaled linearly), seeded and with
the global RNG state restored; cached per process. A run's CPU time is its steps times the
probe's time per step plus the loop's own work per step (``CPU_STEP_OVERHEAD``), its other
FLOPs (evaluation, gradient-flow measurement) at the probe's FLOP rate, and a fixed
``CPU_RUN_OVERHEAD`` (data, set-up, checkpoints). It is the time on an idle core: smoke runs of
a sweep that shared this machine's two cores with other work took 2-3 times longer. Without the
probe (``probe=False``) an assumed ``ASSUMED_CPU_FLOPS`` is used.

GPU time: the same FLOPs at an assumed sustained ``GPU_FLOPS`` (10 TFLOP/s: an A100- or
H100-class GPU in FP32/TF32 at roughly half of an A100's 19.5 TFLOP/s FP32 peak, a fraction
reached by convolutional nets at batch 128), but never less than a launch-bound floor per step
(``GPU_STEP_SECONDS`` + ``GPU_LAYER_SECONDS`` per weight layer: kernel launches and the Python
loop). Small models (LeNet, MLPs at batch 128) are launch-bound: their GPU time is the floor,
not their FLOPs. Nothing here was measured on a GPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config, Duration, run_id
from sparseflow.data.availability import DatasetInfo, dataset_info
from sparseflow.methods.options import DynamicOptions, GradualOptions, RigLOptions
from sparseflow.methods.registry import method_spec
from sparseflow.sparsity.counts import step_at

#: assumed sustained training throughput of an A100/H100-class GPU on these models (FLOP/s)
GPU_FLOPS = 10e12
#: launch-bound floor of one GPU step: fixed part (s) and per weight layer (s)
GPU_STEP_SECONDS = 1e-3
GPU_LAYER_SECONDS = 5e-5
#: the training loop's own work per step on the CPU (s): learning rate, batch indexing,
#: masking, callbacks; 0.4-0.7 ms measured on this repository's 2-core machine (one thread)
CPU_STEP_OVERHEAD = 0.5e-3
#: per run on the CPU (s): loading the data, set-up, checkpoints (~0.8 s measured)
CPU_RUN_OVERHEAD = 1.0
#: the CPU FLOP rate assumed when the probe is off (FLOP/s)
ASSUMED_CPU_FLOPS = 20e9
#: the time one architecture's probe spends on timed steps (s), after one warm-up step
PROBE_SECONDS = 0.3
#: threads of the probe: a sweep's workers train with one thread each
PROBE_THREADS = 1
#: training one example costs about this many forward passes
TRAIN_FACTOR = 3


def assumptions() -> dict[str, Any]:
    """The cost model's constants and what it leaves out, for the dry run's output."""
    return {
        "flops": "2 x multiply-adds of Linear/Conv layers (forward hooks, one example); "
                 f"training = {TRAIN_FACTOR} x forward; dense products (masks do not lower it)",
        "cpu": "steps x (measured seconds per step of each architecture on this machine "
               f"+ {CPU_STEP_OVERHEAD * 1e3:g} ms of the loop's own work) + "
               f"{CPU_RUN_OVERHEAD:g} s per run, other FLOPs at the probe's rate (probe: "
               f"warm-up steps, then >= 3 steps or {PROBE_SECONDS} s on random inputs, the "
               f"fastest, {PROBE_THREADS} thread, its CPU time); an idle core: runs of a "
               "sweep sharing cores with other work took 2-3x longer on this machine",
        "gpu": f"assumed: {GPU_FLOPS / 1e12:g} TFLOP/s sustained (an A100/H100-class GPU, "
               "FP32/TF32), at least "
               f"{GPU_STEP_SECONDS * 1e3:g} ms + {GPU_LAYER_SECONDS * 1e6:g} us per weight "
               "layer per step (launch-bound small models); not measured on a GPU",
        "not counted": "BatchNorm, activations, the optimiser update, masking and mask "
                       "updates, augmentation as FLOPs (the probe and the per-step overhead "
                       "cover part of them on the CPU); evci2022's signal propagation "
                       "(seconds); the figures and the report",
    }


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of one example through ``model``'s Linear and Conv
    layers, counted with forward hooks (a model on the ``meta`` device computes nothing)."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        per_out = output.numel() // max(1, output.shape[0])
        if isinstance(module, nn.Linear):
            total += per_out * module.in_features
        else:  # a convolution: each output value is (in_channels / groups) x kernel MACs
            conv: Any = module
            total += per_out * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)

    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
        model.train(was)
    finally:
        for h in handles:
            h.remove()
    return total


def weight_layers(model: nn.Module) -> int:
    """Linear and Conv layers of ``model`` (what the launch-bound GPU floor counts)."""
    return sum(isinstance(m, nn.Linear | nn.modules.conv._ConvNd) for m in model.modules())


def run_info(cfg: Config) -> DatasetInfo:
    """The dataset of run ``cfg`` as the run will see it (held-out batches carved), known
    without reading a registered dataset; a dataset of one's own is loaded."""
    from sparseflow.training.sparsifier import heldout_sizes

    kw: dict[str, Any] = {} if cfg.data.n_train is None else {"n_train": cfg.data.n_train}
    kw.update(cfg.dataset_args)
    info = dataset_info(cfg.dataset, heldout=heldout_sizes(cfg), **kw)
    if info is not None:
        return info
    from sparseflow.training.run import load_data

    data = load_data(cfg)
    return DatasetInfo(str(cfg.dataset), tuple(data.input_shape), data.num_classes,
                       len(data.x_train), len(data.x_test))


def _build(cfg: Config, info: DatasetInfo, device: str) -> nn.Module:
    """The run's model as it trains it (small dense narrowed), built on ``device``."""
    from sparseflow.training.run import make_model
    from sparseflow.training.sparsifier import small_dense_widths

    data: Any = SimpleNamespace(input_shape=info.input_shape, num_classes=info.num_classes)
    widths = small_dense_widths(cfg, data) if method_spec(cfg.method).narrows_model else None
    with torch.random.fork_rng(devices=[]), torch.device(device):
        return make_model(cfg, data, widths)


def _arch_key(cfg: Config, info: DatasetInfo) -> tuple[Any, ...]:
    a = cfg.arch
    return (cfg.model, repr(sorted(cfg.model_args.items())), repr(a.widths), a.depth, a.width,
            a.activation, a.batchnorm, a.skip, info.input_shape, info.num_classes,
            cfg.train.batch_size, cfg.method if method_spec(
                cfg.method).narrows_model else "", cfg.sparsity if method_spec(
                cfg.method).narrows_model else 0.0, cfg.distribution if method_spec(
                cfg.method).narrows_model else "")


@dataclass
class Probe:
    """One architecture timed on this CPU: seconds per training step at the run's batch
    (``scaled``: measured on ``batch`` examples and scaled linearly), the steps timed and the
    probe's own wall time."""

    seconds_per_step: float
    batch: int
    scaled: bool
    steps: int
    probe_seconds: float


_PROBES: dict[tuple[Any, ...], Probe] = {}


def probe_seconds() -> float:
    """The wall time every probe of this process has taken so far (s)."""
    return sum(p.probe_seconds for p in _PROBES.values())


def probe_step(cfg: Config, info: DatasetInfo) -> Probe:
    """Time training steps of ``cfg``'s model on this CPU (see the module docstring); cached
    per architecture for the life of the process."""
    key = _arch_key(cfg, info)
    if key in _PROBES:
        return _PROBES[key]
    from sparseflow.training.optim import build_optimizer

    t_start = time.perf_counter()
    batch = cfg.train.batch_size
    threads = torch.get_num_threads()
    torch.set_num_threads(PROBE_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _build(cfg, info, "cpu")
            opt = build_optimizer(cfg.optim, model)
            model.train()

            def step(n: int) -> float:
                x = torch.randn(n, *info.input_shape)
                y = torch.randint(0, info.num_classes, (n,))
                t = time.thread_time()  # CPU time: waiting for a busy core is not counted
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return time.thread_time() - t

            small = max(2, min(batch, 8))  # BatchNorm needs 2 examples
            first = min(step(small), step(small))  # warm-up, and a guess of a full step
            guess = first * batch / small
            n = batch if guess <= PROBE_SECONDS else max(small,
                                                         int(batch * PROBE_SECONDS / guess))
            if n != small:
                step(n)  # warm-up at the probed size
            times: list[float] = []
            while len(times) < 3 or (sum(times) < PROBE_SECONDS and len(times) < 50):
                times.append(step(n))
    finally:
        torch.set_num_threads(threads)
    per = min(times) * batch / n  # other processes on a shared machine slow single steps
    probe = Probe(per, n, n != batch, len(times), time.perf_counter() - t_start)
    _PROBES[key] = probe
    return probe


def _count_flow(cfg: Config, total: int, updates: int) -> int:
    """Gradient-flow measurements of a run: step 0, the log-spaced early steps, every
    ``flow.every`` steps, the evenly spaced points, and before/after every k-th update."""
    from sparseflow.training.flow_callback import evenly_spaced_steps, log_spaced_steps

    f = cfg.flow
    if not f.enabled or not cfg.data.heldout:
        return 0
    steps = {0, *evenly_spaced_steps(total, f.points),
             *log_spaced_steps(min(f.early, total))}
    if f.every > 0:
        steps.update(range(f.every, total + 1, f.every))
    around = 2 * math.ceil(updates / f.around_updates) if f.around_updates and updates else 0
    return len({s for s in steps if 0 <= s <= total}) + around


def _count_updates(cfg: Config, total: int) -> int:
    """Mask updates of a run: SET/RigL every ``update_every`` to ``update_end``; gradual
    pruning every ``prune_every`` from ``prune_begin`` to ``prune_end``; else none."""
    options = method_spec(cfg.method).options
    sp = cfg.sparse
    if any(issubclass(c, DynamicOptions) for c in options):
        return step_at(sp.update_end, total) // sp.update_every
    if any(issubclass(c, GradualOptions) for c in options):
        begin, end = step_at(sp.prune_begin, total), step_at(sp.prune_end, total)
        return max(0, (end - begin) // sp.prune_every + 1)
    return 0


@dataclass
class RunCost:
    """The estimated cost of one run (FLOPs; CPU and GPU seconds: estimates)."""

    run_id: str
    method: str
    model: str
    dataset: str
    sparsity: float  # 0 for dense training
    seed: int
    epochs: float
    steps: int
    batch: int
    n_train: int
    forward_macs: int  # per example
    train_flops: float
    eval_flops: float
    flow_flops: float
    other_flops: float  # RigL's held-out growth gradients
    total_flops: float
    cpu_seconds: float
    gpu_seconds: float
    probe: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (JSON)."""
        return asdict(self)


def run_cost(cfg: Config, *, probe: bool = True) -> RunCost:
    """The estimated cost of training run ``cfg`` (see the module docstring)."""
    info = run_info(cfg)
    try:
        model = _build(cfg, info, "meta")
        macs = forward_macs(model, info.input_shape)
    except (NotImplementedError, RuntimeError):  # a layer without a meta kernel
        model = _build(cfg, info, "cpu")
        macs = forward_macs(model, info.input_shape)
    layers = weight_layers(model)
    fwd = 2.0 * macs  # FLOPs of one example's forward pass
    batch = cfg.train.batch_size
    per_epoch = max(1, info.n_train // batch)
    total = Duration.parse(cfg.train.duration, "train.duration").steps(per_epoch)
    every = max(1, Duration.parse(cfg.train.eval_every, "train.eval_every").steps(per_epoch))
    evals = max(1, total // every + (total % every != 0))  # every ``every`` steps and the end
    updates = _count_updates(cfg, total)
    flows = _count_flow(cfg, total, updates)
    step_flops = TRAIN_FACTOR * fwd * batch
    train = step_flops * total
    evaluation = fwd * info.n_test * evals
    flow = TRAIN_FACTOR * fwd * cfg.data.heldout * flows
    grow = (TRAIN_FACTOR * fwd * cfg.data.heldout * updates
            if any(issubclass(c, RigLOptions) for c in method_spec(cfg.method).options)
            and cfg.sparse.grow_batch == "heldout" else 0.0)
    rest = evaluation + flow + grow
    probed: dict[str, Any] = {}
    if probe and step_flops > 0:
        p = probe_step(cfg, info)
        rate = step_flops / p.seconds_per_step
        cpu = (total * (p.seconds_per_step + CPU_STEP_OVERHEAD) + rest / rate
               + CPU_RUN_OVERHEAD)
        probed = {"seconds_per_step": p.seconds_per_step, "batch": p.batch,
                  "scaled": p.scaled, "steps": p.steps, "flops_per_second": rate,
                  "architecture": " ".join(map(str, _arch_key(cfg, info)))}
    else:
        cpu = (train + rest) / ASSUMED_CPU_FLOPS
    floor = GPU_STEP_SECONDS + GPU_LAYER_SECONDS * layers
    eval_batches = evals * math.ceil(info.n_test / cfg.data.eval_batch_size)
    gpu = (total * max(step_flops / GPU_FLOPS, floor)  # a forward-only batch: a third
           + max(evaluation / GPU_FLOPS, eval_batches * floor / 3)
           + max((flow + grow) / GPU_FLOPS, (flows + updates) * floor))
    spec = method_spec(cfg.method)
    sparsity = cfg.sparsity if spec.factory is not None or spec.narrows_model else 0.0
    return RunCost(run_id(cfg), cfg.method, cfg.model, str(cfg.dataset), sparsity, cfg.seed,
                   total / per_epoch, total, batch, info.n_train, macs, train, evaluation, flow,
                   grow, train + rest, cpu, gpu, probed)


def analysis_cost(cfg: Config, *, forward_examples: float, train_examples: float = 0.0,
                  probe: bool = True) -> dict[str, float]:
    """FLOPs and estimated CPU/GPU seconds of an analysis on ``cfg``'s model: forward passes
    over ``forward_examples`` examples (in batches of 1000) and training steps over
    ``train_examples`` (a curve's fit, at the run's batch size). On the CPU: the FLOPs at the
    probe's rate, the loop's own work per fitting step and ``CPU_RUN_OVERHEAD`` for loading
    the endpoints and the data (a smoke-scale line and curve on LeNet-300-100 took 1.5-2x
    this estimate on this machine)."""
    info = run_info(cfg)
    model = _build(cfg, info, "meta")
    fwd = 2.0 * forward_macs(model, info.input_shape)
    flops = fwd * forward_examples + TRAIN_FACTOR * fwd * train_examples
    if probe:
        p = probe_step(cfg, info)
        rate = TRAIN_FACTOR * fwd * cfg.train.batch_size / p.seconds_per_step
    else:
        rate = ASSUMED_CPU_FLOPS
    floor = GPU_STEP_SECONDS + GPU_LAYER_SECONDS * weight_layers(model)
    launches = math.ceil(forward_examples / 1000) + math.ceil(
        train_examples / cfg.train.batch_size)
    steps = math.ceil(train_examples / cfg.train.batch_size)
    cpu = flops / rate + steps * CPU_STEP_OVERHEAD + CPU_RUN_OVERHEAD
    return {"flops": flops, "cpu_seconds": cpu,
            "gpu_seconds": max(flops / GPU_FLOPS, launches * floor)}
