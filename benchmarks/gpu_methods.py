"""One epoch of every registered method on CIFAR-shaped data, in bf16 on a GPU.

The GPU check of mixed precision across methods: ResNet-20 on synthetic CIFAR-shaped images
(3x32x32, 10 classes, random normal pixels, CIFAR's crop and flip on the device; ``--n``
images, one epoch; a held-out batch for SNIP and GraSP), each method at 90% sparsity (ERK)
with ``train.precision=bf16``, built
and trained exactly as ``sparseflow run`` builds and trains (benchmarks/throughput.py's
``build``, with the method's own options). Per method it prints the wall time, the last
loss, the realised sparsity, whether every masked weight is exactly zero after training, and
the mask updates (every fifth of the epoch where the method has ``update_every``); methods
that read another run (lottery tickets, masks from a source run)
are listed as skipped. A method that fails is reported with its error and the others go on;
the exit status is 1 if any failed.

    python benchmarks/gpu_methods.py                      # CUDA, bf16, 10,000 images
    python benchmarks/gpu_methods.py --device cpu --quick # the tests' smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import torch

from sparseflow.config import load_config
from sparseflow.errors import UserError
from sparseflow.methods.registry import method_names, options_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import synthetic, trainer_for  # noqa: E402 - shared with throughput.py

SPARSITY = 0.9


class NeedsSource(Exception):
    """The method reads another run (a lottery ticket, a source run's masks)."""


def _no_sources(cfg: object) -> dict:
    raise NeedsSource


def run_method(method: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Train one epoch of ``method``; returns what the table prints."""
    steps = args.n // args.batch
    options = options_of(method)
    sparse = [f"sparsity={SPARSITY}"] if "sparsity" in options else []
    if "update_every" in options:  # four mask updates in the epoch, in bf16
        sparse.append(f"sparse.update_every={max(1, steps // 5)}")
    cfg = load_config(None, ["model=resnet20", "dataset=cifar10", f"method={method}", *sparse,
                             f"train.precision={args.precision}",
                             f"train.batch_size={args.batch}", "train.duration=1ep",
                             "train.eval_every=1000000it", "flow.enabled=false",
                             f"device={device.type}", f"data.heldout={args.batch}",
                             "data.augment=true"])
    data = synthetic((3, 32, 32), 10, args.n, augment=True)
    gen = torch.Generator().manual_seed(1)  # the held-out batch SNIP / GraSP score on
    data.heldout = [(torch.randn(args.batch, 3, 32, 32, generator=gen),
                     torch.randint(0, 10, (args.batch,), generator=gen))]
    trainer, sparsifier = trainer_for(cfg, data, device, steps, steps, _no_sources)
    trainer.total_steps = steps
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    out = {"wall": wall, "steps": steps}
    if sparsifier is not None:
        masks = sparsifier.masks
        zero = all(bool((p.detach()[~masks[n]] == 0).all()) for n, p in masks.params.items())
        out.update(sparsity=masks.sparsity(), masked_zero=zero,
                   updates=getattr(sparsifier, "updates", 0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--n", type=int, default=10_000, help="synthetic training images")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered")
    ap.add_argument("--quick", action="store_true", help="64 images, batch 16")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_methods.py: no CUDA device here (use --device cpu for a smoke run)")
    if args.quick:
        args.n, args.batch = 64, 16
    methods = args.methods or method_names()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}; ResNet-20, synthetic 3x32x32, {args.n} images, "
          f"batch {args.batch}, {args.precision}, {SPARSITY:.0%} ERK\n")
    print("| method | steps | wall s | sparsity | masked weights zero | mask updates | note |")
    print("|---|---|---|---|---|---|---|")
    failed = 0
    for method in methods:
        try:
            r = run_method(method, args, device)
        except NeedsSource:
            print(f"| {method} | | | | | | skipped: reads another run |", flush=True)
            continue
        except (UserError, RuntimeError, ValueError) as e:
            failed += 1
            msg = " ".join(str(e).split())[:120]
            print(f"| {method} | | | | | | FAILED: {type(e).__name__}: {msg} |", flush=True)
            continue
        sp = f"{r['sparsity']:.3f}" if "sparsity" in r else ""
        zero = ("yes" if r["masked_zero"] else "NO") if "masked_zero" in r else ""
        if zero == "NO":
            failed += 1
        print(f"| {method} | {r['steps']} | {r['wall']:.2f} | {sp} | {zero} | "
              f"{r.get('updates', '')} | |", flush=True)
    print(f"\n{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
