"""Training time with gradient-flow measurement at the default interval vs without it.

LeNet-300-100 on Fashion-MNIST, RigL at 90% (so the before/after-update measurements are
included too), the same run with ``flow.enabled`` on and off, interleaved in one process and
repeated; prints the median time ratio. Each measurement is a forward and backward pass on the
1000-example held-out batch.

    python benchmarks/flow_overhead.py [--steps 3000] [--repeats 3] [--method rigl]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from sparseflow.config import FlowConfig, load_config
from sparseflow.training.run import execute


def one_run(overrides: list[str], root: str) -> float:
    cfg = load_config(None, overrides)
    t0 = time.perf_counter()
    execute(cfg, root=root, progress=False, echo=lambda s: None, force=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="rigl")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = [f"method={args.method}", "sparsity=0.9", f"train.duration={args.steps}it",
            "train.eval_every=1000000it", "train.checkpoint_every=1000000it",
            f"threads={args.threads}"]
    ratios, t_on, t_off = [], [], []
    with tempfile.TemporaryDirectory() as root:
        one_run(base + ["train.duration=200it"], root)  # warm-up (data loading, allocator)
        for r in range(args.repeats):
            order = [True, False] if r % 2 == 0 else [False, True]
            times = {}
            for on in order:
                times[on] = one_run(base + [f"flow.enabled={str(on).lower()}"], root)
            t_on.append(times[True])
            t_off.append(times[False])
            ratios.append(times[True] / times[False])
    f = FlowConfig()
    sparse = "" if args.method == "dense" else " 90%"
    print(f"LeNet-300-100 / Fashion-MNIST, {args.method}{sparse}, {args.steps} steps, "
          f"flow.every={f.every}, {f.points} evenly spaced points, before/after every "
          f"{f.around_updates}th mask update")
    print(f"without measurement: {statistics.median(t_off):.2f} s (median of {args.repeats})")
    print(f"with measurement   : {statistics.median(t_on):.2f} s")
    print(f"time ratio with/without: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.05")


if __name__ == "__main__":
    main()
