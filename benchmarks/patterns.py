"""What a sparsity pattern costs: training steps, RigL mask updates and single layers.

Three parts, each runnable alone (no flag: all of them). Every comparison runs side by side in
one process, interleaved (the variants take turns in a rotating order within each repeat), the
ratio of a variant to its reference is taken within each repeat, and the median over repeats is
printed with its min and max, as Markdown tables. Denormals are flushed; one torch thread
unless ``--threads`` says otherwise.

Patterns (``src/sparseflow/sparsity/patterns.py``): ``unstructured`` 90%, ``2:4`` (50%), ``1:8``
(87.5%; an N:M pattern fixes the sparsity at 1 - N/M), ``block:4x4`` 90%, ``fan_in`` 90% and
``unit`` 90%, with the ERK layer distribution (``--distribution``). A layer whose shape does not
fit a pattern stays dense and the output says which: LeNet-300-100's last layer (10 x 100) does
not split into 4x4 blocks nor into groups of 8 (``dense_last=True``), and its second layer
(100 x 300, fan-in 300) not into groups of 8 either (``exclude=``), so 1:8 sparsifies the first
layer alone.

``--train``
    Whole training steps of LeNet-300-100 on Fashion-MNIST (batch of 128 real examples, forward,
    cross-entropy, zero_grad, backward, SGD lr 0.05 momentum 0.9 step, ``sparsifier.step()``;
    the loop and the shuffled-batch cursor of ``benchmarks/masking.py``): dense against
    ``sparseflow.static`` under every pattern and ``sparseflow.rigl`` (update_every=100, t_end
    never reached, so mask updates are included) under unstructured, 2:4, block:4x4 and fan_in,
    each with ``execution="masked"`` and ``execution="sparse"`` (CSR kernels). After
    ``--warmup`` untimed steps, each repeat runs every configuration for ``--steps`` steps in
    chunks of 100 (one RigL update per full chunk), the configurations taking turns chunk by
    chunk. Prints steps/s and the speed-up against dense (dense time / time; > 1: faster),
    wall-clock and process CPU time, sparse against masked, the realised sparsity, the mask
    updates timed, whether the final masks still hold the pattern, and the mean loss.
``--update``
    One RigL mask update (``sparsifier.step()`` at an update step: the drop and grow of every
    layer, optimiser state reset and, for ``execution="sparse"``, the CSR layers rebuilt) on
    LeNet-300-100 under each pattern, masked and sparse. The structured patterns go through
    ``sparsity.drop_and_grow`` (top-k selection per group), the unstructured one through the
    selection path (top-k / k-th value over indices). The training step before each update (whose
    backward captures the dense gradient RigL grows by) is not timed; ``--train`` includes it.
    Each repeat times ``--updates`` updates of every configuration and ``--steps`` dense
    training steps, in a rotating order; ms per update and the update as a multiple of a dense
    step (within the repeat). One more update per configuration runs under an aten-op timer
    to count its sorts and selections and show where its time goes.
``--layer``
    One Linear layer, 300 x 784 and 1024 x 1024, batch 128, at block:4x4 90% and 2:4: forward
    alone (under ``torch.no_grad()``) and forward + backward (input, weight and bias
    gradients) of dense ``F.linear``, the masked path (``F.linear`` then dL/dW times the mask),
    ``sparseflow.sparsity.csr.sparse_linear`` on ``CSRPattern.from_mask``, and for blocks
    PyTorch's BSR (``weight.to_sparse_bsr((4, 4))``) through ``torch.sparse.mm``, ``@`` and
    ``F.linear``, each probed first: what CPU BSR cannot do (its autograd backward) is said in
    the table. A hand-written BSR layer (forward and input gradient on BSR, W^T's blocks
    gathered by a fixed permutation; weight gradient by CSR ``sampled_addmm`` at the active
    entries) shows what the BSR kernels would give a training step. For 2:4,
    ``torch.sparse.to_sparse_semi_structured`` needs a CUDA GPU: timed in float16 against
    dense float16 on the GPU when ``torch.cuda.is_available()``, otherwise said. Every sparse
    result is checked against the dense one first.

The machine may be shared: unless ``--patience 0``, each part first waits (``--patience``
seconds at most) until other processes leave the CPUs, and each prints how many CPUs other
processes used meanwhile.

    python benchmarks/patterns.py [--train] [--update] [--layer] [--repeats 7] [--steps 200]
        [--threads 1] [--warmup 100] [--updates 5] [--distribution erk] [--patience 90]
        [--max-other-load 0.25] [--no-flush-denormal]

A smoke run (seconds): ``--repeats 1 --steps 5 --warmup 2 --updates 1 --patience 0``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

import sparseflow
from sparseflow.models import build_model
from sparseflow.sparsity.csr import CSRPattern, sparse_linear
from sparseflow.sparsity.kernels import kernel_name
from sparseflow.sparsity.patterns import (
    Pattern,
    achievable_count,
    parse_pattern,
    pattern_violations,
    random_pattern_mask,
)
from sparseflow.sparsity.selection import default_weight_names

# the helpers of the other benchmarks (this folder is no package)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from masking import BATCH, LR, MOMENTUM, Batches, OpTimer, Variant, fmt_ratio, train  # noqa: E402
from sparse_execution import (  # noqa: E402
    OtherLoad,
    interleaved,
    md_table,
    ratio_median,
    rel_err,
    shuffled_data,
    wait_quiet,
)

warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

UPDATE_EVERY = 100
T_END = 10**9  # never reached: every 100th step updates the masks
TRAIN_PATTERNS: tuple[tuple[str, float], ...] = (
    ("unstructured", 0.9), ("2:4", 0.5), ("1:8", 0.875), ("block:4x4", 0.9), ("fan_in", 0.9),
    ("unit", 0.9),
)
RIGL_PATTERNS = ("unstructured", "2:4", "block:4x4", "fan_in")
EXECUTIONS = ("masked", "sparse")
LAYER_SHAPES = ((300, 784), (1024, 1024))
LAYER_PATTERNS: tuple[tuple[str, float], ...] = (("block:4x4", 0.9), ("2:4", 0.5))
SORT_OPS = ("sort", "argsort", "msort")
SELECT_OPS = ("topk", "kthvalue")


def pct(s: float) -> str:
    return f"{100 * s:g}%"


def spread(num: list[float], den: list[float]) -> str:
    """Median [min, max] over repeats of num/den, taken within each repeat."""
    rs = [a / b for a, b in zip(num, den, strict=True)]
    return f"{statistics.median(rs):.2f} [{min(rs):.2f}, {max(rs):.2f}]"


def first_line(e: BaseException, limit: int = 110) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters, safe in a Markdown cell."""
    text = f"{type(e).__name__}: {' '.join(str(e).split())}".replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- patterns on LeNet-300-100 ------------------------------------------------------------------
def fits(shape: tuple[int, ...], pattern: Pattern) -> bool:
    """Whether a weight of ``shape`` can hold ``pattern`` (N:M: fan-in a multiple of M; blocks:
    both sides multiples of B)."""
    try:
        achievable_count(shape, 0, pattern)
    except ValueError:
        return False
    return True


def keep_dense(model: nn.Module, pattern: str) -> tuple[bool, tuple[str, ...], list[str]]:
    """(dense_last, exclude, every weight kept dense) so that ``pattern`` fits each weight that
    is sparsified: the last layer by ``dense_last``, any other misfit by ``exclude``."""
    pat = parse_pattern(pattern)
    names = default_weight_names(model)
    params = dict(model.named_parameters())
    misfit = [n for n in names if not fits(tuple(params[n].shape), pat)]
    dense_last = bool(misfit) and misfit[-1] == names[-1]
    exclude = tuple(n for n in misfit if not (dense_last and n == names[-1]))
    return dense_last, exclude, misfit


def kept_dense_note(model: nn.Module, pattern: str) -> str:
    dense_last, exclude, misfit = keep_dense(model, pattern)
    if not misfit:
        return ""
    params = dict(model.named_parameters())
    how = " and ".join(p for p in (f"exclude={list(exclude)}" if exclude else "",
                                   "dense_last=True" if dense_last else "") if p)
    shapes = ", ".join(f"{n} ({'x'.join(map(str, params[n].shape))})" for n in misfit)
    return f"{pattern}: {shapes} kept dense ({how}): the shape does not fit the pattern"


@dataclass(frozen=True)
class Config:
    method: str  # "dense", "static" or "rigl"
    pattern: str = "unstructured"
    sparsity: float = 0.0
    execution: str = "masked"

    @property
    def name(self) -> str:
        if self.method == "dense":
            return "dense"
        return f"{self.method} {self.pattern} {pct(self.sparsity)} {self.execution}"


def train_configs() -> list[Config]:
    out = [Config("dense")]
    for pattern, sparsity in TRAIN_PATTERNS:
        methods = ("static", "rigl") if pattern in RIGL_PATTERNS else ("static",)
        out += [Config(m, pattern, sparsity, ex) for m in methods for ex in EXECUTIONS]
    return out


def make_variant(cfg: Config, init: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 seed: int, distribution: str) -> Variant:
    """A model from ``init``, its SGD optimiser and sparsifier (same masks for the same
    method and pattern: the sparsifiers share seed 0)."""
    m = build_model("lenet300", tuple(x.shape[1:]), 10)
    m.load_state_dict(init)
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
    sp: Any = None
    if cfg.method != "dense":
        dense_last, exclude, _ = keep_dense(m, cfg.pattern)
        if cfg.method == "static":
            sp = sparseflow.static(m, opt, sparsity=cfg.sparsity, distribution=distribution,
                                   pattern=cfg.pattern, execution=cfg.execution,
                                   dense_last=dense_last, exclude=exclude)
        else:
            sp = sparseflow.rigl(m, opt, sparsity=cfg.sparsity, distribution=distribution,
                                 pattern=cfg.pattern, execution=cfg.execution,
                                 dense_last=dense_last, exclude=exclude, t_end=T_END,
                                 update_every=UPDATE_EVERY)
    after = sp.step if sp is not None else None
    return Variant(cfg.name, m, opt, after, Batches(x, y, seed=seed), sp)


def sparsity_of(v: Variant) -> tuple[float, float]:
    """(sparsity over the sparsified weights, over every Linear weight of the model)."""
    masks = v.sparsifier.masks
    zeros = sum(int((~m).sum()) for m in masks.masks.values())
    total = sum(mod.in_features * mod.out_features for mod in v.model.modules()
                if isinstance(mod, nn.Linear))
    return masks.sparsity(), zeros / total


def pattern_holds(v: Variant) -> bool:
    pat = v.sparsifier.pattern
    return all(not pattern_violations(m, pat) for m in v.sparsifier.masks.masks.values())


def sparse_layers(v: Variant) -> str:
    """How many sparsified layers run on CSR kernels (execution="sparse" only)."""
    ex = v.sparsifier.execution.executions()
    return f"{sum(e == 'sparse' for e in ex.values())}/{len(ex)}"


def data_and_init() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    x, y = shuffled_data()
    torch.manual_seed(0)
    init = build_model("lenet300", tuple(x.shape[1:]), 10).state_dict()
    return x, y, init


# -- 1. training steps --------------------------------------------------------------------------
def train_part(args: argparse.Namespace) -> None:
    x, y, init = data_and_init()
    configs = train_configs()
    runs = [make_variant(c, init, x, y, i, args.distribution) for i, c in enumerate(configs)]
    for v in runs:
        train(v, args.warmup)
        v.timed_updates = 0
    wall: dict[str, list[float]] = {v.name: [] for v in runs}  # seconds per repeat
    cpu: dict[str, list[float]] = {v.name: [] for v in runs}
    chunks = [UPDATE_EVERY] * (args.steps // UPDATE_EVERY)
    if args.steps % UPDATE_EVERY:
        chunks.append(args.steps % UPDATE_EVERY)
    turn = 0
    for _ in range(args.repeats):
        w_rep = {v.name: 0.0 for v in runs}
        c_rep = {v.name: 0.0 for v in runs}
        for n in chunks:  # every configuration runs each chunk; who goes first rotates
            k = turn % len(runs)
            turn += 1
            for v in runs[k:] + runs[:k]:
                w, c = train(v, n)
                w_rep[v.name] += w
                c_rep[v.name] += c
        for v in runs:
            wall[v.name].append(w_rep[v.name])
            cpu[v.name].append(c_rep[v.name])
            v.wall.append(w_rep[v.name] / args.steps)

    print(f"## Training steps: LeNet-300-100, Fashion-MNIST, batch {BATCH}, SGD lr {LR} "
          f"momentum {MOMENTUM}, {args.distribution.upper()}, {args.threads} thread(s)\n")
    print(f"{args.repeats} interleaved repeats of {args.steps} steps per configuration (chunks "
          f"of up to {UPDATE_EVERY}, rotating order) after {args.warmup} warm-up steps; RigL "
          f"updates its masks every {UPDATE_EVERY} steps. Speed-up = dense time / time within "
          "each repeat: median [min, max] over repeats (> 1: faster than dense).\n")
    dense = wall["dense"]
    rows = []
    for v in runs:
        speed = [d / t for d, t in zip(dense, wall[v.name], strict=True)]
        cpu_speed = ratio_median(cpu["dense"], cpu[v.name])
        vs_masked = sparsity = updates = holds = layers = ""
        if v.sparsifier is not None:
            s_sp, s_all = sparsity_of(v)
            sparsity = f"{s_sp:.3f} / {s_all:.3f}"
            holds = "yes" if pattern_holds(v) else "**no**"
            if v.name.startswith("rigl"):
                updates = str(v.timed_updates)
            if v.name.endswith(" sparse"):
                peer = v.name.removesuffix(" sparse") + " masked"
                vs_masked = f"{ratio_median(wall[peer], wall[v.name]):.2f}"
                layers = sparse_layers(v)
        rows.append([v.name, f"{1 / statistics.median(v.wall):.0f}",
                     f"{1e3 * statistics.median(v.wall):.3f}", fmt_ratio(speed),
                     f"{cpu_speed:.3f}", vs_masked, layers, sparsity, updates, holds,
                     f"{v.loss:.3f}"])
    print(md_table(["configuration", "steps/s", "ms/step", "speed-up vs dense [min, max]",
                    "CPU-time speed-up", "sparse vs masked", "CSR layers", "sparsity: "
                    "sparsified / all weights", "timed mask updates", "pattern holds",
                    "loss*"], rows))
    print(f"\n* mean training loss over the configuration's last {chunks[-1]} steps (every "
          "configuration trains). 'sparse vs masked': masked time / sparse time of the same "
          "method and pattern. 'CSR layers': sparsified layers held on CSR kernels (a layer "
          "the distribution leaves dense stays masked).\n")
    notes = [kept_dense_note(runs[0].model, p) for p, _ in TRAIN_PATTERNS]
    for note in filter(None, notes):
        print(f"- {note}")
    seen: set[Pattern] = set()
    for v in runs:
        if v.sparsifier is not None and v.sparsifier.pattern not in seen:
            seen.add(v.sparsifier.pattern)
            print(f"- {v.sparsifier.pattern} layer densities: " + ", ".join(
                f"{n} {d:.3f}" for n, d in v.sparsifier.masks.densities().items()))
    print()


# -- 2. one RigL mask update --------------------------------------------------------------------
def prepare_update(v: Variant) -> None:
    """One training step (untimed) after which ``v``'s sparsifier.step() updates the masks."""
    s = v.sparsifier
    s.step_count = (s.step_count // UPDATE_EVERY + 1) * UPDATE_EVERY - 1  # the next step is due
    s._sync_grad_masking()  # so backward leaves the gradients dense (captures them, if sparse)
    xb, yb = v.batches.next()
    loss = F.cross_entropy(v.model(xb), yb)
    v.opt.zero_grad()
    loss.backward()
    v.opt.step()  # RigL's pre-step hook keeps the dense gradient of this batch


def timed_update(v: Variant, timer: OpTimer | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one mask update of ``v`` (its training step prepared first)."""
    prepare_update(v)
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        if timer is None:
            stats = v.sparsifier.step()
        else:
            with timer:
                stats = v.sparsifier.step()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()
    if stats is None:
        raise RuntimeError(f"{v.name}: the timed step did not update the masks")
    return wall, cpu


def update_part(args: argparse.Namespace) -> None:
    x, y, init = data_and_init()
    configs = [Config("rigl", p, s, ex) for p, s in TRAIN_PATTERNS for ex in EXECUTIONS]
    dense = make_variant(Config("dense"), init, x, y, 0, args.distribution)
    runs = [make_variant(c, init, x, y, i + 1, args.distribution)
            for i, c in enumerate(configs)]
    train(dense, args.warmup)
    for v in runs:
        timed_update(v)  # warm-up: caches, JIT-compiled kernels
    items: list[Variant] = [dense, *runs]
    wall: dict[str, list[float]] = {v.name: [] for v in items}  # seconds per update / step
    cpu: dict[str, list[float]] = {v.name: [] for v in items}
    for r in range(args.repeats):
        k = r % len(items)
        for v in items[k:] + items[:k]:
            if v is dense:
                w, c = train(v, args.steps)
                wall[v.name].append(w / args.steps)
                cpu[v.name].append(c / args.steps)
            else:
                got = [timed_update(v) for _ in range(args.updates)]
                wall[v.name].append(statistics.fmean(t[0] for t in got))
                cpu[v.name].append(statistics.fmean(t[1] for t in got))
    ops: dict[str, dict[str, list[float]]] = {}
    for v in runs:
        timer = OpTimer()
        timed_update(v, timer)
        ops[v.name] = timer.ops

    step_ms = 1e3 * statistics.median(wall["dense"])
    print(f"## One RigL mask update: LeNet-300-100, {args.distribution.upper()}, "
          f"{args.threads} thread(s)\n")
    print(f"sparsifier.step() at an update step (drop fraction ~0.3), the mean of "
          f"{args.updates} update(s) per configuration in each of {args.repeats} interleaved "
          f"repeats; a dense training step (batch {BATCH}) timed over {args.steps} steps in the "
          f"same repeats: median {step_ms:.3f} ms. 'x dense step': update time / dense step "
          "time within each repeat, median [min, max].\n")
    rows = []
    for v in runs:
        pat = v.sparsifier.pattern
        mult = [u / d for u, d in zip(wall[v.name], wall["dense"], strict=True)]
        o = ops[v.name]
        sorts = sum(int(o[n][0]) for n in SORT_OPS if n in o)
        selects = sum(int(o[n][0]) for n in SELECT_OPS if n in o)
        top = sorted(o.items(), key=lambda kv: -kv[1][1])[:3]
        rows.append([str(pat), v.name.rsplit(" ", 1)[1],
                     "drop_and_grow (per-group selection)" if pat.structured else "selection",
                     f"{1e3 * statistics.median(wall[v.name]):.3f}",
                     f"{1e3 * statistics.median(cpu[v.name]):.3f}", fmt_ratio(mult),
                     str(sorts), str(selects),
                     ", ".join(f"{n} x{int(c)} {1e3 * t:.2f}" for n, (c, t) in top),
                     "yes" if pattern_holds(v) else "**no**"])
    print(md_table(["pattern", "execution", "path", "ms/update", "CPU ms", "x dense step "
                    "[min, max]", "sort calls", "topk/kthvalue calls", "top aten ops (ms, "
                    "timed one by one)", "pattern holds"], rows))
    print("\nThe training step before each update is not timed (for execution=sparse its "
          "backward also computes the dense dL/dW that RigL grows by); the --train part "
          "includes it. The aten ops are those of one more update, each op timed on its own "
          "(their sum exceeds the update's time). drop_and_grow's groups: N:M groups of M "
          "entries, fan_in rows, one group of all blocks (block) or units (unit). With "
          "execution=sparse the sorts include the argsort of CSRPattern.from_mask (one per "
          "CSR layer rebuilt).\n")
    for note in filter(None, (kept_dense_note(dense.model, p) for p, _ in TRAIN_PATTERNS)):
        print(f"- {note}")
    print()


# -- 3. one layer -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BSRLayout:
    """A block mask as BSR indices of W and W^T, and the maps between value orders.

    Values are ``(blocks, B, B)`` in block row-major order; ``t_perm`` orders the blocks of
    W^T (each then transposed); ``from_csr[j]`` is the flat values position of the j-th entry
    of the element CSR pattern ``csr`` of the same mask.
    """

    shape: tuple[int, int]
    block: int
    crow: torch.Tensor
    col: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_perm: torch.Tensor
    csr: CSRPattern
    from_csr: torch.Tensor

    @classmethod
    def from_mask(cls, mask: torch.Tensor, block: int) -> BSRLayout:
        out, inp = (int(s) for s in mask.shape)
        rb, cb = out // block, inp // block
        bmask = mask[::block, ::block]
        bidx = bmask.reshape(-1).nonzero().squeeze(1)
        brow, bcol = bidx // cb, bidx % cb
        crow = torch.zeros(rb + 1, dtype=torch.int64)
        crow[1:] = torch.bincount(brow, minlength=rb).cumsum(0)
        t_perm = torch.argsort(bcol * rb + brow)
        t_crow = torch.zeros(cb + 1, dtype=torch.int64)
        t_crow[1:] = torch.bincount(bcol, minlength=cb).cumsum(0)
        csr = CSRPattern.from_mask(mask)
        ordinal = torch.full((rb * cb,), -1, dtype=torch.int64)
        ordinal[bidx] = torch.arange(bidx.numel())
        i, j = csr.index // inp, csr.index % inp
        k = ordinal[(i // block) * cb + j // block]
        if bool((k < 0).any()):
            raise ValueError("BSRLayout: the mask is not made of whole blocks")
        from_csr = k * block * block + (i % block) * block + j % block
        return cls((out, inp), block, crow, bcol, t_crow, brow[t_perm], t_perm, csr, from_csr)

    def values(self, dense: torch.Tensor) -> torch.Tensor:
        """The active blocks of a dense W, ``(blocks, B, B)``."""
        b = self.block
        flat = torch.zeros(self.from_csr.numel(), dtype=dense.dtype)
        flat[self.from_csr] = self.csr.gather(dense)
        assert flat.numel() == self.col.numel() * b * b
        return flat.view(-1, b, b)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_bsr_tensor(self.crow, self.col, values, self.shape,
                                       check_invariants=False)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        vt = values[self.t_perm].transpose(1, 2).contiguous()
        return torch.sparse_bsr_tensor(self.t_crow, self.t_col, vt,
                                       (self.shape[1], self.shape[0]), check_invariants=False)


class _BSRLinear(torch.autograd.Function):
    """y = x W^T + b with W in BSR: forward and dL/dx on BSR kernels (W^T's blocks gathered),
    dL/dvalues by CSR sampled_addmm at the active entries (CPU BSR has no sampled product)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
                layout: BSRLayout) -> torch.Tensor:
        xt = x.t().contiguous()
        y = torch.sparse.mm(layout.matrix(values), xt).t() + bias
        ctx.save_for_backward(xt, values)
        ctx.layout = layout
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xt, values = ctx.saved_tensors
        layout: BSRLayout = ctx.layout
        gt = gy.t().contiguous()
        gx = torch.sparse.mm(layout.transposed(values), gt).t()
        csr = layout.csr
        sampled = torch.sparse.sampled_addmm(csr.matrix(values.new_zeros(csr.nnz)), gt, xt.t(),
                                             beta=0.0).values()
        gv = values.new_empty(values.numel())
        gv[layout.from_csr] = sampled
        return gx, gv.view_as(values), gy.sum(0), None


def bsr_forms() -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The ways to multiply by a BSR weight: ``(x, W_bsr) -> x W^T``."""
    return {
        "torch.sparse.mm(W_bsr, x^T)": lambda x, w: torch.sparse.mm(w, x.t().contiguous()).t(),
        "W_bsr @ x^T": lambda x, w: (w @ x.t()).t(),
        "F.linear(x, W_bsr)": lambda x, w: F.linear(x, w),
    }


def _autograd_step(form: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, g: torch.Tensor) -> None:
    """Forward + autograd backward through one of :func:`bsr_forms`."""
    x.grad = w.grad = None
    (form(x, w) + bias).backward(g)


def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


@dataclass
class LayerRow:
    name: str
    fwd: Callable[[], object] | None = None
    fwd_bwd: Callable[[], object] | None = None
    note: str = ""


def layer_rows(out_f: int, in_f: int, pat: Pattern, mask: torch.Tensor,
               gen: torch.Generator) -> list[LayerRow]:
    """The variants of one layer and pattern: timed callables, or a note saying why not."""
    w = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f) * mask
    x = torch.randn(BATCH, in_f, generator=gen)
    g = torch.randn(BATCH, out_f, generator=gen)
    bias = torch.randn(out_f, generator=gen) * 0.1
    ref = F.linear(x, w, bias)
    xg = x.clone().requires_grad_()
    wd = w.clone().requires_grad_()
    bd = bias.clone().requires_grad_()
    F.linear(xg, wd, bd).backward(g)
    assert xg.grad is not None and wd.grad is not None
    ref_gx, ref_gw = xg.grad.clone(), wd.grad.clone()
    rows: list[LayerRow] = []

    def dense_fb() -> None:
        xg.grad = wd.grad = bd.grad = None
        F.linear(xg, wd, bd).backward(g)

    def masked_fb() -> None:
        xg.grad = wd.grad = bd.grad = None
        F.linear(xg, wd, bd).backward(g)
        assert wd.grad is not None
        wd.grad.mul_(mask)  # what the masked execution's gradient hook does

    rows.append(LayerRow("dense F.linear", partial(F.linear, x, w, bias), dense_fb))
    rows.append(LayerRow("masked (F.linear, dL/dW * mask)", None, masked_fb,
                         "forward = dense F.linear"))

    csr = CSRPattern.from_mask(mask)
    v = csr.gather(w).requires_grad_()
    bs = bias.clone().requires_grad_()
    xs = x.clone().requires_grad_()
    ys = sparse_linear(xs, v, csr, bs)
    ys.backward(g)
    assert xs.grad is not None and v.grad is not None
    err = max(rel_err(ys, ref), rel_err(xs.grad, ref_gx), rel_err(v.grad, csr.gather(ref_gw)))

    def csr_fb() -> None:
        xs.grad = v.grad = bs.grad = None
        sparse_linear(xs, v, csr, bs).backward(g)

    rows.append(LayerRow("CSR sparse_linear", partial(sparse_linear, x, v.detach(), csr, bias),
                         csr_fb, f"max rel. diff {err:.0e}"))

    if pat.kind == "block":
        b = pat.block
        wb = w.to_sparse_bsr((b, b))
        for label, form in bsr_forms().items():
            row = LayerRow(f"BSR {label}")
            try:
                y = form(x, wb) + bias
                row.fwd = partial(lambda f, ww: f(x, ww) + bias, form, wb)
                notes = [f"max rel. diff {rel_err(y, ref):.0e}"]
            except Exception as e:  # noqa: BLE001 - report what CPU BSR cannot do
                rows.append(LayerRow(row.name, note=f"forward unsupported: {first_line(e)}"))
                continue
            wg = w.to_sparse_bsr((b, b)).requires_grad_()
            xb = x.clone().requires_grad_()
            try:
                (form(xb, wg) + bias).backward(g)
                row.fwd_bwd = partial(_autograd_step, form, xb, wg, bias, g)
                notes.append("autograd backward works")
            except Exception as e:  # noqa: BLE001
                notes.append(f"no autograd backward: {first_line(e, 130)}")
                try:  # the input gradient alone, weight fixed
                    xb.grad = None
                    (form(xb, wb) + bias).backward(g)
                    notes.append("dL/dx alone (weight fixed) works")
                except Exception as e2:  # noqa: BLE001
                    same = first_line(e2) == first_line(e)
                    notes.append("nor dL/dx alone (weight fixed)" + (
                        "" if same else f": {first_line(e2, 130)}"))
            row.note = "; ".join(notes)
            rows.append(row)

        layout = BSRLayout.from_mask(mask, b)
        vb = layout.values(w).requires_grad_()
        bb = bias.clone().requires_grad_()
        xh = x.clone().requires_grad_()
        yh = _BSRLinear.apply(xh, vb, bb, layout)
        yh.backward(g)
        assert xh.grad is not None and vb.grad is not None
        err = max(rel_err(yh, ref), rel_err(xh.grad, ref_gx),
                  rel_err(vb.grad, layout.values(ref_gw)))

        def bsr_fb() -> None:
            xh.grad = vb.grad = bb.grad = None
            _BSRLinear.apply(xh, vb, bb, layout).backward(g)

        rows.append(LayerRow("BSR hand-written (BSR y, dL/dx; CSR sampled dL/dW)",
                             partial(_BSRLinear.apply, x, vb.detach(), bias, layout), bsr_fb,
                             f"max rel. diff {err:.0e}"))
    return rows


def cuda_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                     target: float = 0.02) -> dict[str, list[float]]:
    """Seconds per call on the GPU (synchronised around each block), rotating order."""
    names = list(fns)
    worst = 0.0
    for fn in fns.values():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        worst = max(worst, (time.perf_counter() - t0) / 10)
    n = max(1, math.ceil(target / max(worst, 1e-7)))
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(n):
                fns[name]()
            torch.cuda.synchronize()
            out[name].append((time.perf_counter() - t0) / n)
    return out


def semi_structured_rows(out_f: int, in_f: int, mask: torch.Tensor, repeats: int,
                         gen: torch.Generator) -> list[list[str]]:
    """Table rows for ``to_sparse_semi_structured`` (2:4 on a CUDA GPU, float16), timed
    against dense float16 F.linear on the same GPU; a row saying why not otherwise."""
    head = [f"{out_f}x{in_f}", "2:4", f"{float(mask.float().mean()):.3f}"]
    name = "torch.sparse.to_sparse_semi_structured"
    if not torch.cuda.is_available():
        return [head + [name, "n/a", "", "n/a", "",
                        "needs a CUDA GPU (compute capability >= 8.0): "
                        "torch.cuda.is_available() is False here, not timed"]]
    dev, dt = torch.device("cuda"), torch.float16
    try:
        from torch.sparse import to_sparse_semi_structured

        w = ((torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)) * mask).to(dev, dt)
        x = torch.randn(BATCH, in_f, generator=gen).to(dev, dt)
        g = torch.randn(BATCH, out_f, generator=gen).to(dev, dt)
        bias = torch.zeros(out_f, device=dev, dtype=dt)
        ws = to_sparse_semi_structured(w)
        ref = F.linear(x, w, bias)
        err = rel_err(F.linear(x, ws, bias).float(), ref.float())
    except Exception as e:  # noqa: BLE001 - shapes and dtypes it refuses, old GPUs
        return [head + [name, "n/a", "", "n/a", "", f"failed: {first_line(e)}"]]
    xg = x.clone().requires_grad_()
    wd = w.clone().requires_grad_()
    bd = bias.clone().requires_grad_()

    def dense_fb() -> None:
        xg.grad = wd.grad = bd.grad = None
        F.linear(xg, wd, bd).backward(g)

    def dense_dx() -> None:
        xg.grad = bd.grad = None
        F.linear(xg, w, bd).backward(g)

    def semi_dx() -> None:
        xg.grad = bd.grad = None
        F.linear(xg, ws, bd).backward(g)

    fwd = {"dense": no_grad(partial(F.linear, x, w, bias)),
           "semi": no_grad(partial(F.linear, x, ws, bias))}
    fb: dict[str, Callable[[], object]] = {"dense": dense_fb, "dense dx": dense_dx}
    note = f"max rel. diff {err:.0e}"
    try:
        semi_dx()
        fb["semi"] = semi_dx
        note += "; backward: dL/dx and dL/db only (no dL/dW through a semi-structured weight)"
    except Exception as e:  # noqa: BLE001
        note += f"; no backward: {first_line(e, 90)}"
    tf = cuda_interleaved(fwd, repeats)
    tb = cuda_interleaved(fb, repeats)
    gpu = torch.cuda.get_device_name()
    rows = [head + [f"CUDA fp16 dense F.linear ({gpu})",
                    f"{1e3 * statistics.median(tf['dense']):.4f}", "1.00",
                    f"{1e3 * statistics.median(tb['dense']):.4f}", "1.00",
                    "reference of the CUDA rows"],
            head + ["CUDA fp16 dense, no dL/dW", "", "",
                    f"{1e3 * statistics.median(tb['dense dx']):.4f}",
                    f"{ratio_median(tb['dense'], tb['dense dx']):.2f}", "weight frozen"]]
    semi_fb = (f"{1e3 * statistics.median(tb['semi']):.4f}" if "semi" in tb else "n/a")
    semi_ratio = (f"{ratio_median(tb['dense'], tb['semi']):.2f} (vs no dL/dW: "
                  f"{ratio_median(tb['dense dx'], tb['semi']):.2f})" if "semi" in tb else "")
    rows.append(head + [f"CUDA fp16 {name}", f"{1e3 * statistics.median(tf['semi']):.4f}",
                        f"{ratio_median(tf['dense'], tf['semi']):.2f}", semi_fb, semi_ratio,
                        note])
    return rows


def layer_part(args: argparse.Namespace) -> None:
    gen = torch.Generator().manual_seed(0)
    print(f"## One Linear layer, batch {BATCH}, {args.threads} thread(s)\n")
    print(f"{args.repeats} interleaved repeats (rotating order, blocks of >= 20 ms); ms per "
          "call (median) and speed-up = dense F.linear time / time within each repeat "
          "(median [min, max]; > 1: faster than dense). Forward under torch.no_grad(); "
          "forward + backward computes the input, weight and bias gradients. 'max rel. "
          "diff': against dense F.linear, output and gradients, relative to the largest "
          "magnitude.\n")
    table = []
    for out_f, in_f in LAYER_SHAPES:
        for text, sparsity in LAYER_PATTERNS:
            pat = parse_pattern(text)
            mask = random_pattern_mask((out_f, in_f), round((1 - sparsity) * out_f * in_f), pat,
                                       gen)
            density = float(mask.float().mean())
            rows = layer_rows(out_f, in_f, pat, mask, gen)
            fwd = {r.name: no_grad(r.fwd) for r in rows if r.fwd is not None}
            fb = {r.name: r.fwd_bwd for r in rows if r.fwd_bwd is not None}
            tf = interleaved(fwd, args.repeats)
            tb = interleaved(fb, args.repeats)
            base = rows[0].name
            for r in rows:
                table.append([f"{out_f}x{in_f}", str(pat), f"{density:.3f}", r.name,
                              f"{1e3 * statistics.median(tf[r.name]):.3f}" if r.name in tf
                              else "n/a",
                              spread(tf[base], tf[r.name]) if r.name in tf else "",
                              f"{1e3 * statistics.median(tb[r.name]):.3f}" if r.name in tb
                              else "n/a",
                              spread(tb[base], tb[r.name]) if r.name in tb else "", r.note])
            if pat.kind == "nm" and (pat.n, pat.m) == (2, 4):
                table += semi_structured_rows(out_f, in_f, mask, args.repeats, gen)
            print(f"  .. {out_f}x{in_f} {pat} done", file=sys.stderr, flush=True)
    print(md_table(["out x in", "pattern", "density", "variant", "forward ms", "fwd speed-up",
                    "fwd+bwd ms", "fwd+bwd speed-up", "note"], table))
    print()


# -- main ---------------------------------------------------------------------------------------
PARTS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": train_part, "update": update_part, "layer": layer_part}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for p in PARTS:
        ap.add_argument(f"--{p}", action="store_true", help=f"run the {p} part")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats per part")
    ap.add_argument("--steps", type=int, default=200,
                    help="train: timed steps per configuration per repeat (chunks of 100, one "
                         "RigL update each); update: dense reference steps per repeat")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--warmup", type=int, default=UPDATE_EVERY,
                    help="untimed training steps per configuration first (train, update)")
    ap.add_argument("--updates", type=int, default=5,
                    help="update: timed mask updates per configuration per repeat")
    ap.add_argument("--distribution", default="erk", help="layer distribution (train, update)")
    ap.add_argument("--patience", type=float, default=90.0,
                    help="seconds each part waits at most for other processes to leave the "
                         "CPUs (0: do not wait)")
    ap.add_argument("--max-other-load", type=float, default=0.25,
                    help="CPUs other processes may use for a part to start without waiting")
    ap.add_argument("--no-flush-denormal", dest="flush_denormal", action="store_false",
                    help="leave denormal floats alone (default: flush them to zero)")
    args = ap.parse_args()
    if min(args.repeats, args.steps, args.updates, args.threads) < 1 or args.warmup < 0:
        ap.error("--repeats, --steps, --updates and --threads must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    chosen = [p for p in PARTS if getattr(args, p)] or list(PARTS)
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), "
          f"flush denormal {args.flush_denormal}, masking kernel {kernel_name()}, CUDA "
          f"{torch.cuda.is_available()}; load average {os.getloadavg()[0]:.2f}; parts: "
          f"{', '.join(chosen)}\n")
    for p in chosen:
        t = time.perf_counter()
        if args.patience > 0:
            wait_quiet(args.max_other_load, args.patience)
        load = OtherLoad()
        PARTS[p](args)
        other = load.cpus()
        print(f"({p}: {time.perf_counter() - t:.0f} s; other processes used "
              f"{'?' if other is None else f'{other:.2f}'} CPUs on average meanwhile)\n",
              flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
