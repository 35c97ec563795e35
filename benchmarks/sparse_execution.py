"""Where sparse execution (CSR kernels, ``execution="sparse"``) beats masked dense training.

Five parts, each runnable alone (no flag: all of them, a few minutes on a 2-core CPU):

``--crossover``
    One Linear layer, forward + backward (input gradient, weight gradient, bias gradient):
    the masked path (``F.linear`` on the dense weight with zeros at masked positions, the dense
    dL/dW then multiplied by the mask, as ``execution="masked"`` does) against
    ``sparseflow.sparsity.csr.sparse_linear`` on a ``CSRPattern.from_mask`` (dL/dvalues by
    ``sampled_addmm``). Shapes (out x in) 100x300, 300x784, 10x100, 1024x1024, 2768x2768,
    2768x784 at batch 128, and 300x784 at batch 1 and 32; densities 0.5 ... 0.01; torch threads
    1 and 2. Prints time(masked) / time(sparse) per cell (> 1: sparse is faster) and, per shape
    and thread count, the crossover: the largest density at which sparse is faster. These
    numbers set the ``CROSSOVER_COMPILED`` table of ``sparsity/execution.py`` (one thread, numba
    installed: the compiled kernels) and, run with ``SPARSEFLOW_KERNELS=torch``, its
    ``CROSSOVER`` table (torch's MKL kernels, by thread count).
``--train``
    LeNet-300-100 on Fashion-MNIST, whole training steps (batch of 128 real examples, forward,
    cross-entropy, zero_grad, backward, SGD momentum 0.9 lr 0.1 step, ``sparsifier.step()``):
    dense, static 90% / 98% and RigL 90% (update_every=100, t_end never reached), each masked
    and sparse; static 90% also ``auto``, and ``auto`` with the sparse_pays constants under
    test (``--proposed``, ``--proposed-min-weights``). Blocks of 100 steps, so every RigL block
    holds exactly one mask update; the configurations take turns block by block in a rotating
    order and each repeat's ratio to dense is taken within that repeat. Median steps/s and
    ratio vs dense, checked against the issue's targets (static 90% sparse >= 1.5x, 98% >= 3x,
    RigL >= 1.3x).
``--wide``
    The SC-SDC wide MLP 784-2768-2768-10, batch 128, Adam, at 95% and 99% sparsity: time per
    training step of dense, masked and sparse (few repeats: it is big), and the bytes of
    parameters, gradients and optimiser state (sum of numel * element_size, after a step),
    with the bool masks and the CSR index tensors counted separately. Peak and final RSS of
    each configuration are measured in a fresh subprocess (random inputs, 3 steps, numba
    kernels off) minus those of a subprocess that builds nothing.
``--conv``
    A convolution as unfold + CSR matmul (written here: ``F.unfold``, ``torch.sparse.mm``,
    ``F.fold`` for the input gradient, ``sampled_addmm`` for the weight gradient) against
    ``F.conv2d`` forward + backward, on LeNet-5 shapes (1->6 k5 28x28 pad 2, 6->16 k5 14x14,
    batch 128) and VGG-like ones (64->64 k3 32x32, 256->256 k3 8x8, pad 1, batch 32) at 90%
    and 98% sparsity. The CSR convolution is checked against ``F.conv2d`` first.
``--inference``
    LeNet-300-100 at 90% (ERK): latency of a plain dense ``nn.Sequential`` forward against the
    same weights in the sparsified model with ``execution="sparse"`` (and ``"auto"``), under
    ``torch.no_grad()``, batch 1 and 128. If ``sparseflow.store.sparse_model`` provides
    ``save_sparse_model``/``load_sparse_model``, the loaded model is timed too.

Every comparison is measured side by side in one process, interleaved (the variants take turns
in a rotating order within each repeat), and medians over repeats are printed as markdown
tables. Denormals are flushed. One torch thread unless stated (``--threads``; the crossover
always runs its own list, ``--crossover-threads``). The machine may be shared: each part
waits until other processes leave the CPUs (90 s at most), a crossover cell measured while
they used more than ``--max-other-load`` CPUs is retried, and every part prints how much CPU
other processes took meanwhile.

    python benchmarks/sparse_execution.py [--crossover] [--train] [--wide] [--conv]
        [--inference] [--repeats N] [--threads 1] [--crossover-threads 1 2]
        [--shapes 300x300 256x512 ...]   # other layer shapes for the crossover
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import sparseflow
from sparseflow.data import load_dataset
from sparseflow.models import build_model
from sparseflow.sparsity import execution as sx
from sparseflow.sparsity.csr import CSRPattern, compiled_kernels, sparse_linear

BATCH = 128
DENSITIES = (0.5, 0.3, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01)
SHAPES = ((100, 300), (300, 784), (10, 100), (1024, 1024), (2768, 2768), (2768, 784))
SMALL_BATCHES = ((300, 784), (1, 32))  # shape, extra batch sizes
T_END = 10**9


# -- timing ------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], n: int, sync: Callable[[], object] | None = None) -> float:
    """Seconds per call of ``fn`` over ``n`` calls (garbage collector off). ``sync``: waits
    for queued device work (``torch.cuda.synchronize``), called before and after the block."""
    gc.collect()
    gc.disable()
    try:
        if sync is not None:
            sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if sync is not None:
            sync()
        return (time.perf_counter() - t0) / n
    finally:
        gc.enable()


def calls_for(fns: list[Callable[[], object]], target: float,
              sync: Callable[[], object] | None = None) -> int:
    """Calls per timed block so that the slowest of ``fns`` runs at least ``target`` seconds
    (two warm-up calls each first)."""
    worst = 0.0
    for fn in fns:
        fn()
        worst = max(worst, timed(fn, 1, sync))
    return max(1, math.ceil(target / max(worst, 1e-7)))


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, target: float = 0.02,
                sync: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, one entry per repeat; the functions take turns in a
    rotating order within every repeat (``sync``: see :func:`timed`)."""
    names = list(fns)
    n = calls_for(list(fns.values()), target, sync)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(timed(fns[name], n, sync))
    return out


class OtherLoad:
    """CPUs used by other processes while a block runs (from /proc/stat minus this process's
    own CPU time; None where /proc/stat is missing). This machine may be shared: a cell
    measured while something else ran is retried once the CPUs are quiet."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                vals = [float(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(vals) - vals[3] - vals[4]) / hz  # minus idle and iowait
        t = os.times()
        return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()

    def cpus(self) -> float | None:
        end = self._sample()
        if end is None or self.start is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, busy - own) / max(wall, 1e-9)


def wait_quiet(limit: float = 0.2, patience: float = 90.0) -> float | None:
    """Wait (at most ``patience`` s) until other processes use under ``limit`` CPUs over 2 s;
    returns the last reading."""
    t0 = time.monotonic()
    while True:
        probe = OtherLoad()
        time.sleep(2.0)
        got = probe.cpus()
        if got is None or got < limit or time.monotonic() - t0 > patience:
            return got


def ratio_median(num: list[float], den: list[float]) -> float:
    """Median over repeats of num/den taken within each repeat."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def random_mask(shape: tuple[int, ...], density: float, gen: torch.Generator) -> torch.Tensor:
    """Exactly round(density * numel) (at least 1) active positions, uniformly at random."""
    numel = math.prod(shape)
    k = max(1, round(density * numel))
    flat = torch.zeros(numel, dtype=torch.bool)
    flat[torch.randperm(numel, generator=gen)[:k]] = True
    return flat.view(shape)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|."""
    a, ref = a.detach(), ref.detach()
    return float((a - ref).abs().max()) / max(float(ref.abs().max()), 1e-30)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -- 1. crossover ------------------------------------------------------------------------------
def linear_cell(out_f: int, in_f: int, batch: int, density: float, repeats: int,
                gen: torch.Generator) -> tuple[float, float, float]:
    """(median masked/sparse time ratio, masked ms, sparse ms) for one layer and density."""
    mask = random_mask((out_f, in_f), density, gen)
    w = (torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)) * mask
    x = torch.randn(batch, in_f, generator=gen).requires_grad_()
    g = torch.randn(batch, out_f, generator=gen)
    wd = w.clone().requires_grad_()
    bd = torch.zeros(out_f, requires_grad=True)
    pattern = CSRPattern.from_mask(mask)
    v = pattern.gather(w).requires_grad_()
    bs = torch.zeros(out_f, requires_grad=True)

    def masked() -> None:
        x.grad = wd.grad = bd.grad = None
        F.linear(x, wd, bd).backward(g)
        assert wd.grad is not None
        wd.grad.mul_(mask)  # what the masked execution's gradient hook does

    def sparse() -> None:
        x.grad = v.grad = bs.grad = None
        sparse_linear(x, v, pattern, bs).backward(g)

    t = interleaved({"masked": masked, "sparse": sparse}, repeats)
    return (ratio_median(t["masked"], t["sparse"]), 1e3 * statistics.median(t["masked"]),
            1e3 * statistics.median(t["sparse"]))


def kernels_in_use(threads: int | None = None) -> str:
    """Which CSR kernels ``sparse_linear`` runs on CPU now: compiled (numba) or torch (MKL)."""
    return "compiled (numba)" if compiled_kernels(torch.float32, threads) else "torch (MKL)"


def check_sparse_linear(gen: torch.Generator) -> float:
    """Largest relative difference of sparse_linear's output and gradients to the dense ones."""
    mask = random_mask((50, 70), 0.2, gen)
    w = torch.randn(50, 70, generator=gen) * mask
    x = torch.randn(9, 70, generator=gen, requires_grad=True)
    g = torch.randn(9, 50, generator=gen)
    wd = w.clone().requires_grad_()
    yd = F.linear(x, wd)
    gx_d, gw_d = torch.autograd.grad(yd, [x, wd], g)
    p = CSRPattern.from_mask(mask)
    v = p.gather(w).requires_grad_()
    ys = sparse_linear(x, v, p)
    gx_s, gv_s = torch.autograd.grad(ys, [x, v], g)
    return max(rel_err(ys, yd), rel_err(gx_s, gx_d), rel_err(gv_s, p.gather(gw_d)))


def crossover(args: argparse.Namespace) -> None:
    gen = torch.Generator().manual_seed(0)
    print("## Crossover: one Linear layer, forward + backward, time(masked) / time(sparse)\n")
    print("sparse_linear vs F.linear (output, input and weight gradients): largest difference "
          f"{check_sparse_linear(gen):.1e} of the largest magnitude\n")
    if args.shapes:
        cells = [(s, BATCH) for s in args.shapes]
    else:
        cells = [(s, BATCH) for s in SHAPES]
        shape, batches = SMALL_BATCHES
        cells += [(shape, b) for b in batches]
    summary: list[list[str]] = []
    for threads in args.crossover_threads:
        torch.set_num_threads(threads)
        print(f"### {threads} thread(s): {kernels_in_use()} CSR kernels\n")
        header = ["out x in", "batch", "masked ms"] + [f"{d:g}" for d in DENSITIES] + [
            "crossover"]
        rows = []
        for (o, i), b in cells:
            ratios, dense_ms, flagged = [], [], []
            for d in DENSITIES:
                for _attempt in range(3):
                    load = OtherLoad()
                    r, md, _ = linear_cell(o, i, b, d, args.repeats, gen)
                    other = load.cpus()
                    if other is None or other < args.max_other_load:
                        break
                    print(f"  .. {o}x{i} b{b} d{d}: other processes used {other:.2f} CPUs; "
                          "retrying when quiet", file=sys.stderr, flush=True)
                    wait_quiet(args.max_other_load)
                else:
                    flagged.append(d)
                ratios.append(r)
                dense_ms.append(md)
            faster = [d for d, r in zip(DENSITIES, ratios, strict=True) if r > 1.0]
            best = max(faster) if faster else None
            # densities at or below the crossover where sparse is nevertheless slower
            holes = [d for d, r in zip(DENSITIES, ratios, strict=True)
                     if best is not None and d < best and r <= 1.0]
            cross = "none" if best is None else f"{best:g}" + (
                f" (not below: {', '.join(f'{h:g}' for h in holes)})" if holes else "")
            rows.append([f"{o}x{i}", str(b), f"{statistics.median(dense_ms):.3f}"]
                        + [f"{r:.2f}" + ("*" if d in flagged else "")
                           for d, r in zip(DENSITIES, ratios, strict=True)] + [cross])
            summary.append([str(threads), f"{o}x{i}", str(b), str(o * i), cross])
            print(f"  .. {o}x{i} batch {b}: {cross}", file=sys.stderr, flush=True)
        print(md_table(header, rows))
        print()
    torch.set_num_threads(args.threads)
    print("Ratio > 1: sparse faster. crossover: the largest density at which sparse was "
          "faster ('not below': smaller densities where it was not); 'masked ms': median "
          "masked time per step over the densities; *: other processes used more than "
          f"{args.max_other_load} CPUs during all 3 tries of that cell.\n")
    print(md_table(["threads", "out x in", "batch", "weights", "crossover density"], summary))
    print()


# -- shared training helpers ------------------------------------------------------------------
def Batches(x: torch.Tensor, y: torch.Tensor, seed: int) -> Any:  # noqa: N802 - a class
    """The shuffled-batch cursor of benchmarks/masking.py (one implementation for both)."""
    from masking import Batches as Shuffled

    return Shuffled(x, y, seed=seed)


@dataclass
class Run:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    sp: Any
    batches: Batches
    times: list[float] = field(default_factory=list)  # seconds per step, per repeat
    updates: int = 0
    loss: float = float("nan")


def train_steps(r: Run, steps: int) -> float:
    """``steps`` training steps; returns seconds per step."""
    loss_sum = torch.zeros(())
    u0 = getattr(r.sp, "updates", 0)
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = r.batches.next()
            loss = F.cross_entropy(r.model(x), y)
            r.opt.zero_grad()
            loss.backward()
            r.opt.step()
            if r.sp is not None:
                r.sp.step()
            loss_sum += loss.detach()
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    r.updates += getattr(r.sp, "updates", 0) - u0
    r.loss = float(loss_sum) / steps
    return dt / steps


def run_interleaved(runs: list[Run], steps: int, repeats: int) -> None:
    turn = 0
    for _ in range(repeats):
        k = turn % len(runs)
        turn += 1
        for r in runs[k:] + runs[:k]:
            r.times.append(train_steps(r, steps))


def shuffled_data() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("fashion_mnist")
    perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
    return data.x_train[perm].contiguous(), data.y_train[perm].contiguous()


# -- 2. training steps, LeNet-300-100 ----------------------------------------------------------
TRAIN_CONFIGS = (
    # name, method, sparsity, execution
    ("dense", None, 0.0, None),
    ("static 90% masked", "static", 0.9, "masked"),
    ("static 90% sparse", "static", 0.9, "sparse"),
    ("static 90% auto", "static", 0.9, "auto"),
    ("static 98% masked", "static", 0.98, "masked"),
    ("static 98% sparse", "static", 0.98, "sparse"),
    ("static 98% auto", "static", 0.98, "auto"),
    ("rigl 90% masked", "rigl", 0.9, "masked"),
    ("rigl 90% sparse", "rigl", 0.9, "sparse"),
    ("rigl 90% auto", "rigl", 0.9, "auto"),
)
TRAIN_TARGETS = {"static 90% sparse": 1.5, "static 98% sparse": 3.0, "rigl 90% sparse": 1.3}


def make_run(name: str, key: str, method: str | None, sparsity: float, execution: str | None,
             init: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, seed: int,
             opt_fn: Callable[[nn.Module], torch.optim.Optimizer], distribution: str,
             widths: tuple[int, ...] | None = None) -> Run:
    kw = {"widths": widths} if widths else {}
    m = build_model(key, tuple(x.shape[1:]), 10, **kw)
    m.load_state_dict(init)
    opt = opt_fn(m)
    sp = None
    if method == "static":
        sp = sparseflow.static(m, opt, sparsity=sparsity, distribution=distribution,
                               execution=execution)
    elif method == "rigl":
        sp = sparseflow.rigl(m, opt, sparsity=sparsity, distribution=distribution,
                             t_end=T_END, update_every=100, execution=execution)
    return Run(name, m, opt, sp, Batches(x, y, seed))


def executions_of(r: Run) -> str:
    if r.sp is None or r.sp.execution.mode == "masked":
        return ""
    ex = r.sp.execution.executions()
    return ", ".join(f"{n.split('.')[-2] if n.count('.') else n}:{e[0]}" for n, e in ex.items())


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x, y = shuffled_data()
    torch.manual_seed(0)
    init = build_model("lenet300", tuple(x.shape[1:]), 10).state_dict()

    def sgd(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    runs = [make_run(n, "lenet300", meth, s, ex, init, x, y, i, sgd, args.distribution)
            for i, (n, meth, s, ex) in enumerate(TRAIN_CONFIGS)]
    for r in runs:  # warm-up: one block each (RigL's first update included)
        train_steps(r, args.train_steps)
        r.updates = 0
    repeats = args.repeats_train or args.repeats + 4
    run_interleaved(runs, args.train_steps, repeats)
    dense = runs[0]
    print(f"## Training steps: LeNet-300-100, Fashion-MNIST, batch {BATCH}, SGD lr 0.1 momentum "
          f"0.9, {args.distribution.upper()}, {args.threads} thread(s), {kernels_in_use()} CSR "
          "kernels\n")
    print(f"{repeats} interleaved repeats of {args.train_steps} steps per configuration (rotating "
          f"order) after one warm-up block; ratio = median over repeats of dense time / time.\n")
    rows, verdicts = [], []
    for r in runs:
        ratio = ratio_median(dense.times, r.times)
        lo = min(a / b for a, b in zip(dense.times, r.times, strict=True))
        hi = max(a / b for a, b in zip(dense.times, r.times, strict=True))
        upd = str(r.updates) if r.sp is not None and "rigl" in r.name else ""
        sparsity = f"{r.sp.masks.sparsity():.3f}" if r.sp is not None else ""
        rows.append([r.name, f"{1 / statistics.median(r.times):.0f}",
                     f"{1e3 * statistics.median(r.times):.3f}", f"{ratio:.2f}",
                     f"[{lo:.2f}, {hi:.2f}]", sparsity, upd, f"{r.loss:.3f}", executions_of(r)])
        if r.name in TRAIN_TARGETS:
            verdicts.append((r.name, TRAIN_TARGETS[r.name], ratio))
    print(md_table(["configuration", "steps/s", "ms/step", "speed-up vs dense", "[min, max]",
                    "sparsity", "timed mask updates", "loss*", "layers (s=sparse, m=masked)"],
                   rows))
    print("\n* mean training loss over the last block (every configuration trains).\n")
    table = ("CROSSOVER_COMPILED", sx.CROSSOVER_COMPILED) if compiled_kernels(
        torch.float32) else ("CROSSOVER", sx.CROSSOVER)
    print(f"auto: sparse_pays with sparsity.execution.{table[0]} = {table[1]}.\n")
    seen = set()
    for r in runs:
        if r.sp is not None and (r.name.split()[0], r.name.split()[1]) not in seen:
            seen.add((r.name.split()[0], r.name.split()[1]))
            print(f"- {r.name.split()[0]} {r.name.split()[1]} densities: " + ", ".join(
                f"{n} {d:.3f}" for n, d in r.sp.masks.densities().items()))
    print()
    for name, target, got in verdicts:
        print(f"- {'PASS' if got >= target else 'FAIL'}: {name} >= {target}x dense: "
              f"{got:.2f}x")
    print()


# -- 3. the wide MLP: time and memory ----------------------------------------------------------
WIDE = (2768, 2768)


def tensor_bytes(ts: list[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in ts:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def memory_of(r: Run) -> dict[str, int]:
    """Bytes of parameters, gradients, optimiser state, masks and CSR index tensors."""
    params = list(r.model.parameters())
    state = [t for s in r.opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    out = {"params": tensor_bytes(params),
           "grads": tensor_bytes([p.grad for p in params if p.grad is not None]),
           "optimizer state": tensor_bytes(state), "masks": 0, "other masks": 0,
           "CSR indices": 0}
    if r.sp is not None:
        out["masks"] = tensor_bytes(list(r.sp.masks.masks.values()))
        # the sparsifier's ever-active masks and the masked path's float mask factors
        other = list(getattr(r.sp, "ever_active", {}).values())
        other += list(getattr(r.sp.masks, "_factors", {}).values())
        out["other masks"] = tensor_bytes(other)
        idx = []
        for mod in r.sp.execution.modules.values():
            if mod.is_sparse and mod.csr is not None:
                c = mod.csr
                idx += [c.index, c.crow, c.col, c.t_crow, c.t_col, c.t_perm]
        out["CSR indices"] = tensor_bytes(idx)
    return out


def wide_configs(levels: tuple[float, ...]) -> list[tuple[str, str | None, float, str | None]]:
    out: list[tuple[str, str | None, float, str | None]] = [("dense", None, 0.0, None)]
    for s in levels:
        out += [(f"{s:.0%} masked", "static", s, "masked"),
                (f"{s:.0%} sparse", "static", s, "sparse")]
    return out


def rss_child(spec: str) -> None:
    """(subprocess) Peak RSS in KiB after building one wide configuration and 3 Adam steps on
    random data; spec 'none' builds nothing."""
    name, method, sparsity, execution, distribution = json.loads(spec)
    torch.set_num_threads(1)
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    if name != "none":
        torch.manual_seed(0)
        m = build_model("mlp", (1, 28, 28), 10, widths=WIDE)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        sp = None
        if method:
            sp = sparseflow.static(m, opt, sparsity=sparsity, distribution=distribution,
                                   execution=execution)
        for _ in range(3):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sp is not None:
                sp.step()
    # VmHWM, not getrusage: ru_maxrss survives exec, so a child would report its parent's peak
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines()
                  if ":" in line)
    print(json.dumps({k: int(status[k].split()[0]) for k in ("VmHWM", "VmRSS")}))


def peak_rss(spec: list[Any]) -> dict[str, int]:
    """{"VmHWM": peak, "VmRSS": current} in KiB of a fresh process running ``rss_child``."""
    env = {**os.environ, "SPARSEFLOW_KERNELS": "torch"}  # numba's JIT would add ~150 MiB
    out = subprocess.run([sys.executable, __file__, "--rss-child", json.dumps(spec)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wide(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x, y = shuffled_data()
    torch.manual_seed(0)
    init = build_model("mlp", tuple(x.shape[1:]), 10, widths=WIDE).state_dict()

    def adam(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(m.parameters(), lr=1e-3)

    configs = wide_configs(tuple(args.wide_sparsity))
    runs = [make_run(n, "mlp", meth, s, ex, init, x, y, i, adam, args.wide_distribution,
                     widths=WIDE) for i, (n, meth, s, ex) in enumerate(configs)]
    for r in runs:
        train_steps(r, 2)
    repeats = args.repeats_wide or max(3, args.repeats - 2)
    run_interleaved(runs, args.wide_steps, repeats)
    dense = runs[0]
    print(f"## Wide MLP 784-2768-2768-10 (SC-SDC), batch {BATCH}, Adam lr 1e-3, "
          f"{args.wide_distribution.upper()}, {args.threads} thread(s), {kernels_in_use()} CSR "
          "kernels\n")
    print(f"{repeats} interleaved repeats of {args.wide_steps} steps per configuration.\n")
    rows = []
    for r in runs:
        masked_peer = next((q for q in runs if q.name == r.name.replace("sparse", "masked")),
                           None)
        vs_masked = (f"{ratio_median(masked_peer.times, r.times):.2f}"
                     if masked_peer is not None and masked_peer is not r else "")
        rows.append([r.name, f"{1e3 * statistics.median(r.times):.1f}",
                     f"{ratio_median(dense.times, r.times):.2f}", vs_masked,
                     f"{r.sp.masks.sparsity():.3f}" if r.sp is not None else "",
                     f"{r.loss:.3f}"])
    print(md_table(["configuration", "ms/step", "speed-up vs dense", "speed-up vs masked",
                    "sparsity", "loss*"], rows))
    print("\n* mean training loss over the last block.\n")
    mem_rows = []
    rss: dict[str, dict[str, int]] = {}
    if not args.no_rss and os.path.exists("/proc/self/status"):
        base = peak_rss(["none", None, 0.0, None, args.wide_distribution])
        for n, meth, s, ex in configs:
            got = peak_rss([n, meth, s, ex, args.wide_distribution])
            rss[n] = {k: got[k] - base[k] for k in got}
    for r in runs:
        m = memory_of(r)
        core = m["params"] + m["optimizer state"]
        total = core + m["grads"] + m["masks"] + m["other masks"] + m["CSR indices"]
        mem_rows.append([r.name, f"{m['params']:,}", f"{m['optimizer state']:,}", f"{core:,}",
                         f"{m['grads']:,}", f"{m['masks']:,}", f"{m['other masks']:,}",
                         f"{m['CSR indices']:,}", f"{total:,}",
                         f"{rss[r.name]['VmHWM'] / 1024:.0f}" if r.name in rss else "",
                         f"{rss[r.name]['VmRSS'] / 1024:.0f}" if r.name in rss else ""])
    print("Memory after a step, bytes (numel * element_size; 'params + state' is what the "
          "optimiser sees; masks: the bool masks, 1 byte per weight; other masks: the "
          "sparsifier's bool ever-active masks and any float mask factors of the masked path; "
          "CSR indices: the patterns' index tensors: int64 flat positions and permutation, "
          "int32 row pointers and columns):\n")
    print(md_table(["configuration", "params", "optimizer state", "params + state", "grads",
                    "masks", "other masks", "CSR indices", "all", "peak RSS, MiB",
                    "RSS after 3 steps, MiB"], mem_rows))
    if rss:
        print("\nRSS: a fresh process (random batch, 3 steps; SPARSEFLOW_KERNELS=torch, so "
              "no numba JIT) minus one that imports the same and builds nothing; the peak "
              "includes building the dense model and its masks, and freed memory the allocator "
              "keeps counts too.")
    print()


# -- 4. convolution: unfold + CSR vs F.conv2d --------------------------------------------------
class _CSRConv(torch.autograd.Function):
    """conv2d (stride 1) with a CSR weight: y = W_csr @ unfold(x); see the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                pattern: CSRPattern, k: int, pad: int) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, k, padding=pad)  # (n, cin*k*k, L)
        ck, length = cols.shape[1], cols.shape[2]
        c2 = cols.transpose(0, 1).reshape(ck, n * length)  # (cin*k*k, n*L)
        y = torch.sparse.mm(pattern.matrix(values), c2)  # (cout, n*L)
        y = y + bias[:, None]
        ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        ctx.save_for_backward(c2, values)
        ctx.pattern, ctx.meta = pattern, (n, h, w, k, pad, length)
        return y.view(-1, n, length).transpose(0, 1).reshape(n, -1, ho, wo)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[Any, ...]:
        c2, values = ctx.saved_tensors
        pattern: CSRPattern = ctx.pattern
        n, h, w, k, pad, length = ctx.meta
        cout = pattern.shape[0]
        g2 = gy.reshape(n, cout, length).transpose(0, 1).reshape(cout, n * length)
        gcols = torch.sparse.mm(pattern.transposed(values), g2)  # (cin*k*k, n*L)
        gcols = gcols.view(-1, n, length).transpose(0, 1)
        gx = F.fold(gcols, (h, w), k, padding=pad)
        gv = torch.sparse.sampled_addmm(pattern.matrix(values), g2, c2.t(), beta=0.0).values()
        return gx, gv, g2.sum(1), None, None, None


CONV_SHAPES = (
    # label, cin, cout, k, hw, pad, batch
    ("LeNet-5 conv1 1->6 k5 28x28", 1, 6, 5, 28, 2, 128),
    ("LeNet-5 conv2 6->16 k5 14x14", 6, 16, 5, 14, 0, 128),
    ("VGG 64->64 k3 32x32", 64, 64, 3, 32, 1, 32),
    ("VGG 256->256 k3 8x8", 256, 256, 3, 8, 1, 32),
)


def conv_cell(cin: int, cout: int, k: int, hw: int, pad: int, batch: int, sparsity: float,
              repeats: int, gen: torch.Generator) -> tuple[float, float, float, float]:
    """(median conv2d/CSR time ratio, conv2d ms, CSR ms, largest relative error) of one
    convolution at one sparsity; the CSR result is checked against F.conv2d first."""
    mask = random_mask((cout, cin * k * k), 1 - sparsity, gen)
    w2 = torch.randn(cout, cin * k * k, generator=gen) * mask / math.sqrt(cin * k * k)
    x = torch.randn(batch, cin, hw, hw, generator=gen).requires_grad_()
    wd = w2.view(cout, cin, k, k).clone().requires_grad_()
    mask4 = mask.view(cout, cin, k, k)
    bd = torch.zeros(cout, requires_grad=True)
    pattern = CSRPattern.from_mask(mask)
    v = pattern.gather(w2).requires_grad_()
    bs = torch.zeros(cout, requires_grad=True)
    ho = hw + 2 * pad - k + 1
    g = torch.randn(batch, cout, ho, ho, generator=gen)
    yd = F.conv2d(x, wd, bd, padding=pad)
    gx_d, gw_d = torch.autograd.grad(yd, [x, wd], g)
    ys = _CSRConv.apply(x, v, bs, pattern, k, pad)
    gx_s, gv_s = torch.autograd.grad(ys, [x, v], g)
    err = max(rel_err(ys, yd), rel_err(gx_s, gx_d),
              rel_err(gv_s, pattern.gather(gw_d.view(cout, -1))))

    def dense_fn() -> None:
        x.grad = wd.grad = bd.grad = None
        F.conv2d(x, wd, bd, padding=pad).backward(g)
        assert wd.grad is not None
        wd.grad.mul_(mask4)  # what the masked execution's gradient hook does

    def csr_fn() -> None:
        x.grad = v.grad = bs.grad = None
        _CSRConv.apply(x, v, bs, pattern, k, pad).backward(g)

    t = interleaved({"dense": dense_fn, "csr": csr_fn}, repeats)
    return (ratio_median(t["dense"], t["csr"]), 1e3 * statistics.median(t["dense"]),
            1e3 * statistics.median(t["csr"]), err)


def conv(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"## Convolution: unfold + CSR vs F.conv2d, forward + backward, {args.threads} "
          "thread(s)\n")
    rows = []
    worst_err = 0.0
    for label, cin, cout, k, hw, pad, batch in CONV_SHAPES:
        for sparsity in (0.9, 0.98):
            r, dense_ms, csr_ms, err = conv_cell(cin, cout, k, hw, pad, batch, sparsity,
                                                 args.repeats, gen)
            worst_err = max(worst_err, err)
            rows.append([label, str(batch), f"{sparsity:.0%}", f"{dense_ms:.2f}",
                         f"{csr_ms:.2f}", f"{r:.2f}",
                         f"{1 / r:.1f}x slower" if r < 1 else f"{r:.1f}x faster"])
    print(f"unfold+CSR vs F.conv2d (output, input and weight gradients): largest difference "
          f"{worst_err:.1e} of the largest magnitude\n")
    print(md_table(["shape", "batch", "sparsity", "conv2d ms", "unfold+CSR ms",
                    "conv2d time / CSR time", "CSR is"], rows))
    print()


# -- 5. inference ------------------------------------------------------------------------------
def sequential_copy(model: nn.Module) -> nn.Sequential:
    """A plain nn.Sequential with LeNet-300-100's dense weights (zeros at masked positions)."""
    linears = [model.hidden[0].linear, model.hidden[1].linear, model.out]
    seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                        nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        for dst, src in zip([seq[1], seq[3], seq[5]], linears, strict=True):
            dst.weight.copy_(src.state_dict()["weight"])
            dst.bias.copy_(src.bias)
    return seq.eval()


def export_module() -> Any:
    try:
        mod = importlib.import_module("sparseflow.store.sparse_model")
    except ImportError:
        return None
    return mod if hasattr(mod, "load_sparse_model") else None


def inference(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {}
    for ex in ("sparse", "auto"):
        torch.manual_seed(0)
        m = build_model("lenet300", (1, 28, 28), 10)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        sp = sparseflow.static(m, opt, sparsity=0.9, distribution=args.distribution,
                               execution=ex)
        models[f"execution={ex}"] = m.eval()
        if ex == "sparse":
            models = {"dense nn.Sequential": sequential_copy(m), **models}
            masks = {n: t.clone() for n, t in sp.masks.masks.items()}
            print(f"## Inference: LeNet-300-100, 90% {args.distribution.upper()}, "
                  f"torch.no_grad(), {args.threads} thread(s)\n")
            print("densities: " + ", ".join(f"{n} {d:.3f}" for n, d in
                                            sp.masks.densities().items()))
        else:
            print("execution=auto runs: " + ", ".join(
                f"{n} {e}" for n, e in sp.execution.executions().items()) + "\n")
    exp = export_module()
    if exp is not None and hasattr(exp, "save_sparse_model"):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.pt")
            arch = {"name": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10,
                    "options": {}}
            try:
                exp.save_sparse_model(models["execution=sparse"], path, arch=arch,
                                      masks=masks)
                models["load_sparse_model"] = exp.load_sparse_model(path).eval()
                print("load_sparse_model layers: " + ", ".join(
                    f"{n} {type(mod).__name__}" for n, mod in
                    models["load_sparse_model"].named_modules()
                    if isinstance(mod, nn.Linear)) + "\n")
            except Exception as e:  # noqa: BLE001 - the API is not settled yet
                print(f"(sparseflow.store.sparse_model present but not timed: "
                      f"{type(e).__name__}: {e})\n")
    elif exp is None:
        print("(sparseflow.store.sparse_model.load_sparse_model not available: skipped)\n")
    rows = []
    for batch in (1, BATCH):
        xb = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            ref = models["dense nn.Sequential"](xb)
            err = max(float((m(xb) - ref).abs().max()) for m in models.values())

            t = interleaved({k: partial(m, xb) for k, m in models.items()}, args.repeats + 4,
                            target=0.02)
        base = t["dense nn.Sequential"]
        for k in models:
            rows.append([str(batch), k, f"{1e6 * statistics.median(t[k]):.1f}",
                         f"{ratio_median(base, t[k]):.2f}"])
        rows.append([str(batch), "(max abs diff to dense)", f"{err:.1e}", ""])
    print(md_table(["batch", "model", "latency us (median)", "speed-up vs dense"], rows))
    print()


# -- main --------------------------------------------------------------------------------------
PARTS = {"crossover": crossover, "train": train, "wide": wide, "conv": conv,
         "inference": inference}


def parse_shape(text: str) -> tuple[int, int]:
    out, _, inp = text.lower().partition("x")
    return int(out), int(inp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for p in PARTS:
        ap.add_argument(f"--{p}", action="store_true", help=f"run the {p} part")
    ap.add_argument("--repeats", type=int, default=5,
                    help="interleaved repeats per comparison (train: +4, wide: -2, min 3)")
    ap.add_argument("--repeats-train", type=int, default=None)
    ap.add_argument("--repeats-wide", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (not --crossover)")
    ap.add_argument("--crossover-threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--train-steps", type=int, default=100,
                    help="steps per block (a multiple of RigL's update_every=100)")
    ap.add_argument("--distribution", default="erk", help="train/inference layer distribution")
    ap.add_argument("--wide-distribution", default="uniform")
    ap.add_argument("--wide-sparsity", type=float, nargs="+", default=[0.95, 0.99])
    ap.add_argument("--wide-steps", type=int, default=5)
    ap.add_argument("--no-rss", action="store_true", help="wide: skip the peak-RSS subprocesses")
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=None, metavar="OUTxIN",
                    help="crossover: these layer shapes at batch 128 instead of the default set")
    ap.add_argument("--max-other-load", type=float, default=0.25,
                    help="crossover: retry a cell (up to 3 tries) if other processes used more "
                         "CPUs than this while it ran; every part waits for this before it "
                         "starts (90 s at most)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    torch.set_flush_denormal(True)
    chosen = [p for p in PARTS if getattr(args, p)] or list(PARTS)
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; parts: {', '.join(chosen)}\n")
    for p in chosen:
        t = time.perf_counter()
        if p != "crossover":  # the crossover checks every cell itself
            wait_quiet(args.max_other_load)
        load = OtherLoad()
        PARTS[p](args)
        other = load.cpus()
        print(f"({p}: {time.perf_counter() - t:.0f} s; other processes used "
              f"{'?' if other is None else f'{other:.2f}'} CPUs on average meanwhile)\n",
              flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
