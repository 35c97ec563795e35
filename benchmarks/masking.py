"""Time per training step of sparseflow's masking methods relative to dense training.

LeNet-300-100 and LeNet5 on Fashion-MNIST, batch 128, SGD (lr 0.05, momentum 0.9). Variants,
each its own model and optimiser started from the same weights, trained by the same plain loop
(forward, cross-entropy, zero_grad, backward, optimizer.step(), then the method's per-step call):

    dense          no sparsifier
    static         sparseflow.methods.static, 90% ERK (default masking: for SGD, gradients
                   zeroed before the step only, which is exact for torch's SGD/Adam family)
    static-both    the same with masking="both" (gradients before and weights after the step)
    static-w       the same with masking="weights" (weights zeroed after the step only)
    set            sparseflow.methods.set_training, update_every=100 (mask updates included)
    rigl           sparseflow.methods.rigl, update_every=100, dense gradient of the batch
    torch-prune    torch.nn.utils.prune.custom_from_mask with static's masks (w * mask in
                   forward, the way users mask a model with torch alone today)
    grad-pass      not a masking method, a reference: dense training with a backward hook
                   that multiplies every Linear/Conv weight gradient by the scalar 1, i.e.
                   one pass over the gradients without reading a mask (what any exact
                   masking with torch's elementwise kernels pays at least)

Every step reads a different real batch: the training set is shuffled once into one contiguous
copy, cut into batches of 128, and each variant walks the batches in a freshly shuffled order
every epoch (never one repeated batch). Denormals are flushed (see design.md). After a warm-up,
each repeat runs every variant of each model for --steps steps, in chunks of --chunk steps with
the variants taking turns in a rotating order; the ratio of a variant to dense is taken within
the same repeat (the machine may be noisy), and the median over repeats is reported with its
min and max. Wall-clock time (perf_counter) decides the targets; the process CPU-time ratio is
printed beside it, as it is less sensitive to other processes taking the CPU away.

Also times one RigL mask update on LeNet-300-100 in isolation, lists where its time goes (aten
ops, timed one by one) and checks that it selects (k-th value / top-k) and never sorts.

    python benchmarks/masking.py [--steps 300] [--repeats 7] [--threads 1]
                                 [--models lenet300 lenet5] [--chunk 50] [--warmup 100]
                                 [--no-flush-denormal]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torch.utils._python_dispatch import TorchDispatchMode

from sparseflow.data import load_dataset
from sparseflow.methods import rigl, set_training, static
from sparseflow.models import build_model
from sparseflow.sparsity.kernels import kernel_name

BATCH = 128
LR, MOMENTUM = 0.05, 0.9
SPARSITY, DISTRIBUTION, UPDATE_EVERY = 0.9, "erk", 100
T_END = 10**9
MODELS = {"lenet300": "LeNet-300-100", "lenet5": "LeNet5"}
VARIANTS = ("dense", "static", "static-both", "static-w", "set", "rigl", "torch-prune",
            "grad-pass")
TARGETS = {"static": 1.05, "set": 1.10, "rigl": 1.10}  # median time ratio vs dense, at most
SORT_OPS = ("sort", "argsort", "msort")  # full sorts; topk and kthvalue are selections


class Batches:
    """Real shuffled batches of one shared shuffled copy of the training set; per-variant cursor.

    The batch order is reshuffled every epoch (seeded by the epoch), so no batch repeats within
    an epoch and consecutive epochs differ. A batch is a view: fetching one copies nothing.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> None:
        self.x, self.y = x, y
        self.n = len(x) // BATCH
        self.seed = seed
        self.epoch, self.pos = -1, self.n
        self.order: list[int] = []

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos == self.n:
            self.epoch += 1
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            self.order = torch.randperm(self.n, generator=g).tolist()
            self.pos = 0
        i = self.order[self.pos] * BATCH
        self.pos += 1
        return self.x[i : i + BATCH], self.y[i : i + BATCH]


@dataclass
class Variant:
    name: str
    model: nn.Module
    opt: torch.optim.Optimizer
    after: Callable[[], object] | None
    batches: Batches
    sparsifier: Any = None
    wall: list[float] = field(default_factory=list)  # seconds per step, one entry per repeat
    loss: float = float("nan")
    timed_updates: int = 0


def train(v: Variant, steps: int) -> tuple[float, float]:
    """Run ``steps`` training steps of ``v``; returns (wall seconds, process CPU seconds)."""
    model, opt, after, batches = v.model, v.opt, v.after, v.batches
    updates0 = getattr(v.sparsifier, "updates", 0)
    loss_sum = torch.zeros(())
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            x, y = batches.next()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after is not None:
                after()
            loss_sum += loss.detach()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()
    v.loss = float(loss_sum) / steps
    v.timed_updates += getattr(v.sparsifier, "updates", 0) - updates0
    return wall, cpu


def _times_one(param: torch.Tensor) -> None:
    """Backward hook of the grad-pass reference: one in-place pass over the gradient."""
    assert param.grad is not None
    param.grad.mul_(1.0)


def make_variants(key: str, x: torch.Tensor, y: torch.Tensor) -> list[Variant]:
    """Every variant of one model, all from the same initial weights and the same masks."""
    torch.manual_seed(0)
    init_state = build_model(key, tuple(x.shape[1:]), 10).state_dict()

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        m = build_model(key, tuple(x.shape[1:]), 10)
        m.load_state_dict(init_state)
        return m, torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)

    sp = dict(sparsity=SPARSITY, distribution=DISTRIBUTION)
    dyn = dict(t_end=T_END, update_every=UPDATE_EVERY)
    out: list[Variant] = []
    masks: dict[str, torch.Tensor] = {}
    for name in VARIANTS:  # "static" comes before "torch-prune", which reuses its masks
        m, opt = fresh()
        s = None
        if name == "static":
            s = static(m, opt, **sp)
            masks = {n: t.clone() for n, t in s.masks.masks.items()}
        elif name == "static-both":
            s = static(m, opt, masking="both", **sp)
        elif name == "static-w":
            s = static(m, opt, masking="weights", **sp)
        elif name == "set":
            s = set_training(m, opt, **sp, **dyn)
        elif name == "rigl":
            s = rigl(m, opt, **sp, **dyn)
        elif name == "grad-pass":
            for pname, param in m.named_parameters():
                if pname in masks:
                    param.register_post_accumulate_grad_hook(_times_one)
        elif name == "torch-prune":
            for pname, mask in masks.items():
                module, _, attr = pname.rpartition(".")
                prune.custom_from_mask(m.get_submodule(module), attr, mask)
            opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
        after = s.step if s is not None else None
        out.append(Variant(name, m, opt, after, Batches(x, y, seed=len(out)), s))
    return out


class OpTimer(TorchDispatchMode):
    """Counts and times every aten op dispatched inside it: {name: [calls, seconds]}."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, list[float]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        dt = time.perf_counter() - t0
        row = self.ops.setdefault(func.overloadpacket.__name__, [0, 0.0])
        row[0] += 1
        row[1] += dt
        return out


def rigl_update(x: torch.Tensor, y: torch.Tensor, trials: int = 20
                ) -> tuple[float, float, dict[str, list[float]]]:
    """One RigL ``step()`` that updates the masks (LeNet-300-100, 90% ERK): median wall and CPU
    ms over ``trials``, and the aten ops of one more such update ({name: [calls, seconds]})."""
    torch.manual_seed(0)
    m = build_model("lenet300", tuple(x.shape[1:]), 10)
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
    s = rigl(m, opt, sparsity=SPARSITY, distribution=DISTRIBUTION, t_end=T_END,
             update_every=UPDATE_EVERY)
    batches = Batches(x, y, seed=99)

    def one(timer: OpTimer | None = None) -> tuple[float, float]:
        xb, yb = batches.next()
        s.step_count = (s.step_count // UPDATE_EVERY + 1) * UPDATE_EVERY - 1  # next step is due
        s._sync_grad_masking()  # so backward leaves the gradients dense, as in training
        loss = F.cross_entropy(m(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()  # RigL's pre-step hook keeps the dense gradient of this batch
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        if timer is None:
            stats = s.step()
        else:
            with timer:
                stats = s.step()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if stats is None:
            raise RuntimeError("the timed RigL step did not update the masks")
        return wall, cpu

    for _ in range(3):
        one()
    times = [one() for _ in range(trials)]
    timer = OpTimer()
    one(timer)
    return (1e3 * statistics.median(t[0] for t in times),
            1e3 * statistics.median(t[1] for t in times), timer.ops)


def check_masks(v: Variant) -> str:
    """Realised sparsity over the sparsified weights, and whether masked weights are zero."""
    s = v.sparsifier
    zero = all(bool((p.detach()[~s.masks[n]] == 0).all()) for n, p in s.masks.params.items())
    return f"sparsity {s.masks.sparsity():.4f}, masked weights zero: {zero}"


def fmt_ratio(rs: list[float]) -> str:
    return f"{statistics.median(rs):.3f} [{min(rs):.3f}, {max(rs):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per variant per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--chunk", type=int, default=50,
                    help="a repeat's steps run in chunks of this many per variant, the variants "
                         "taking turns chunk by chunk (so a burst of machine noise hits all)")
    ap.add_argument("--warmup", type=int, default=UPDATE_EVERY,
                    help="untimed steps per variant before the repeats")
    ap.add_argument("--no-flush-denormal", dest="flush_denormal", action="store_false",
                    help="leave denormal floats alone (default: flush them to zero)")
    args = ap.parse_args()
    if args.steps < 1 or args.repeats < 1 or args.chunk < 1 or args.warmup < 0:
        ap.error("--steps, --repeats and --chunk must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)

    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    data = load_dataset("fashion_mnist")
    perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
    x, y = data.x_train[perm].contiguous(), data.y_train[perm].contiguous()

    runs = {key: make_variants(key, x, y) for key in args.models}
    for variants in runs.values():
        for v in variants:
            train(v, args.warmup)
            v.timed_updates = 0
    ratios = {key: {v.name: [] for v in vs} for key, vs in runs.items()}
    cpu_ratios = {key: {v.name: [] for v in vs} for key, vs in runs.items()}
    prune_over_static = {key: [] for key in runs}
    chunks = [args.chunk] * (args.steps // args.chunk)
    if args.steps % args.chunk:
        chunks.append(args.steps % args.chunk)
    turn = 0
    for _ in range(args.repeats):
        for key, variants in runs.items():
            wall = {v.name: 0.0 for v in variants}
            cpu = {v.name: 0.0 for v in variants}
            for n in chunks:  # every variant runs each chunk; who goes first rotates
                k = turn % len(variants)
                turn += 1
                for v in variants[k:] + variants[:k]:
                    w, c = train(v, n)
                    wall[v.name] += w
                    cpu[v.name] += c
            for v in variants:
                v.wall.append(wall[v.name] / args.steps)
                ratios[key][v.name].append(wall[v.name] / wall["dense"])
                cpu_ratios[key][v.name].append(cpu[v.name] / cpu["dense"])
            prune_over_static[key].append(wall["torch-prune"] / wall["static"])
    upd_wall, upd_cpu, ops = rigl_update(x, y)

    print(f"Fashion-MNIST, batch {BATCH}, SGD lr {LR} momentum {MOMENTUM}, "
          f"{SPARSITY:.0%} {DISTRIBUTION.upper()}, update interval {UPDATE_EVERY}; "
          f"{args.threads} thread(s), flush denormal {args.flush_denormal}, masking kernel "
          f"{kernel_name()} (SPARSEFLOW_KERNELS)")
    print(f"{args.repeats} interleaved repeats of {args.steps} steps per variant (chunks of "
          f"{args.chunk}, rotating order) after {args.warmup} warm-up steps; "
          f"load average {load_before:.2f} at start")
    verdicts = []
    for key, variants in runs.items():
        print(f"\n{MODELS[key]}")
        print(f"  {'variant':<12} {'ms/step':>8}  {'wall vs dense: median [min, max]':<33}"
              f"{'cpu vs dense':>12}  {'loss*':>6}  {'mask updates':>12}")
        for v in variants:
            upd = str(v.timed_updates) if v.name in ("set", "rigl") else ""
            print(f"  {v.name:<12} {1e3 * statistics.median(v.wall):8.3f}  "
                  f"{fmt_ratio(ratios[key][v.name]):<33}"
                  f"{statistics.median(cpu_ratios[key][v.name]):12.3f}  {v.loss:6.3f}  "
                  f"{upd:>12}")
        ps = prune_over_static[key]
        print(f"  time ratio torch.nn.utils.prune / sparseflow static: {fmt_ratio(ps)}")
        for v in variants:
            if v.sparsifier is not None:
                print(f"  {v.name:<12} {check_masks(v)}")
        for name, limit in TARGETS.items():
            med = statistics.median(ratios[key][name])
            verdicts.append((MODELS[key], f"{name} <= {limit:.2f}x dense", f"{med:.3f}x",
                             med <= limit))
        med = statistics.median(ps)
        verdicts.append((MODELS[key], "torch-prune slower than static", f"{med:.3f}x",
                         med > 1.0))
    print(f"\n* loss: mean training loss over the variant's last {chunks[-1]} steps "
          "(a sanity check that every variant trains)")

    print(f"\nOne RigL mask update on LeNet-300-100 (sparsifier.step() at an update step, "
          f"median of 20): {upd_wall:.3f} ms wall, {upd_cpu:.3f} ms CPU")
    total = sum(t for _, t in ops.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1][1])[:8]
    print(f"  its aten ops, timed one by one ({1e3 * total:.3f} ms in all): " + ", ".join(
        f"{name} x{c} {1e3 * t:.3f} ms" for name, (c, t) in top))
    sorts = {n: c for n, (c, _) in ops.items() if n in SORT_OPS}
    print(f"  selection: {ops.get('kthvalue', [0])[0]} kthvalue calls; "
          f"sort/argsort/msort calls: {sum(sorts.values())}"
          + (f" {sorts}" if sorts else ""))
    verdicts.append(("LeNet-300-100", "RigL update never sorts", f"{len(sorts)} sort ops",
                     not sorts))

    print("\nTargets (median wall-clock ratio over repeats):")
    for model_name, target, got, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {model_name:<14} {target:<34} {got}")
    print(f"\ntotal time {time.perf_counter() - t_start:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
