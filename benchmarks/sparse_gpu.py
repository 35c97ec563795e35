"""Sparse execution on a GPU: cuSPARSE CSR and 2:4 semi-structured kernels against dense.

The GPU checks of sparse execution, in one short run (a few minutes on one GPU):

1. **Correctness on the device**: ``sparse_linear`` (cuSPARSE CSR product, ``sampled_addmm``)
   against ``F.linear`` on the masked dense weight, forward and the three gradients, float32.
2. **CSR vs dense**, one Linear layer, forward + backward (input, weight and bias gradients; the
   masked path multiplies the dense weight gradient by the mask, as ``execution="masked"``
   does), shapes 300x784, 1024x1024, 2768x2768, 4096x4096, batch 128 and 1024, densities 0.1,
   0.05, 0.02, 0.01, float32: time(masked) / time(sparse) (> 1: CSR faster). ``auto`` keeps
   every layer masked off the CPU (``sparsity.execution.sparse_pays``), so it can never be
   slower than masked; this table says where a GPU rule could turn CSR on.
3. **2:4 semi-structured** (``torch.sparse.to_sparse_semi_structured``, Ampere or later,
   float16 and bfloat16): forward of a 2:4-masked weight against the dense product, same shapes
   (fan-in a multiple of 64), batch 128 and 1024, with the largest difference to the dense
   result. Forward only: PyTorch's semi-structured tensors are for inference here
   (``sparsity/semi_structured.py``).

Timing: benchmarks/sparse_execution.py's interleaved blocks of calls (at least ``--target``
seconds each, the GPU synchronised around every block), medians of ``--repeats`` blocks. On a
CPU (``--device cpu``) parts 1 and 2 run on the same code paths (MKL or the compiled loops),
part 3 is skipped: that is how the tests keep this script working.

    python benchmarks/sparse_gpu.py                 # CUDA
    python benchmarks/sparse_gpu.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sparseflow.sparsity.csr import CSRPattern, sparse_linear

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sparse_execution import interleaved  # noqa: E402 - the benchmarks' shared timing

SHAPES = ((300, 784), (1024, 1024), (2768, 2768), (4096, 4096))
BATCHES = (128, 1024)
DENSITIES = (0.1, 0.05, 0.02, 0.01)


def medians(fns: dict[str, Callable[[], object]], args: argparse.Namespace,
            device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function: benchmarks/sparse_execution.py's interleaved
    blocks, waiting for the GPU's queued work around each block."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return {k: statistics.median(v)
            for k, v in interleaved(fns, args.repeats, args.target, sync).items()}


def linear_case(out_f: int, in_f: int, batch: int, density: float, device: torch.device,
                gen: torch.Generator) -> tuple:
    """(mask, dense weight, pattern, values, bias, input, upstream gradient) on ``device``."""
    mask = torch.rand(out_f, in_f, generator=gen) < density
    w = torch.randn(out_f, in_f, generator=gen) * mask / in_f ** 0.5
    pattern = CSRPattern.from_mask(mask).to(device)
    x = torch.randn(batch, in_f, generator=gen)
    g = torch.randn(batch, out_f, generator=gen)
    mask, w, x, g = (t.to(device) for t in (mask, w, x, g))
    return mask, w, pattern, pattern.gather(w), torch.zeros(out_f, device=device), x, g


def check(device: torch.device) -> float:
    """Largest relative difference of sparse_linear to the masked dense layer on ``device``."""
    gen = torch.Generator().manual_seed(0)
    mask, w, pattern, v, b, x, g = linear_case(64, 96, 32, 0.2, device, gen)
    wd, bd, xd = (t.clone().requires_grad_() for t in (w, b, x))
    ref = F.linear(xd, wd * mask, bd)
    r_grads = torch.autograd.grad(ref, (xd, wd, bd), g)
    vs, bs, xs = (t.clone().requires_grad_() for t in (v, b, x))
    out = sparse_linear(xs, vs, pattern, bs)
    s_grads = torch.autograd.grad(out, (xs, vs, bs), g)
    pairs = [(out, ref), (s_grads[0], r_grads[0]), (s_grads[1], pattern.gather(r_grads[1])),
             (s_grads[2], r_grads[2])]
    return max(float((a - e).abs().max() / e.abs().max().clamp_min(1e-12))
               for a, e in ((a.detach(), e.detach()) for a, e in pairs))


def csr_table(args: argparse.Namespace, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(1)
    print("## CSR vs masked dense: one Linear layer, forward + backward, float32\n")
    print("| out x in | batch | masked ms | " + " | ".join(f"{d:g}" for d in args.densities)
          + " |")
    print("|---|---|---|" + "---|" * len(args.densities))
    for out_f, in_f in args.shapes:
        for batch in args.batches:
            cells, masked_ms = [], []
            for density in args.densities:
                mask, w, pattern, v, b, x, g = linear_case(out_f, in_f, batch, density, device,
                                                           gen)
                wd, bd = w.clone().requires_grad_(), b.clone().requires_grad_()
                vs, bs = v.clone().requires_grad_(), b.clone().requires_grad_()
                xd = x.clone().requires_grad_()

                def masked(wd=wd, bd=bd, xd=xd, g=g, mask=mask) -> None:
                    xd.grad = wd.grad = bd.grad = None
                    F.linear(xd, wd, bd).backward(g)
                    wd.grad.mul_(mask)

                def sparse(vs=vs, bs=bs, xd=xd, g=g, pattern=pattern) -> None:
                    xd.grad = vs.grad = bs.grad = None
                    sparse_linear(xd, vs, pattern, bs).backward(g)

                t = medians({"masked": masked, "sparse": sparse}, args, device)
                cells.append(f"{t['masked'] / t['sparse']:.2f}")
                masked_ms.append(1e3 * t["masked"])
            print(f"| {out_f}x{in_f} | {batch} | {statistics.median(masked_ms):.3f} | "
                  + " | ".join(cells) + " |", flush=True)
    print("\nCells: time(masked) / time(sparse); > 1: CSR faster. `auto` runs masked on a GPU "
          "(never slower than masked by construction).\n")


def two_four_mask(out_f: int, in_f: int, gen: torch.Generator) -> torch.Tensor:
    """A random 2:4 mask: 2 of every 4 consecutive inputs of each row."""
    scores = torch.rand(out_f, in_f // 4, 4, generator=gen)
    keep = scores.argsort(-1)[..., 2:]
    mask = torch.zeros(out_f, in_f // 4, 4, dtype=torch.bool)
    mask.scatter_(-1, keep, True)
    return mask.reshape(out_f, in_f)


def semi_structured_table(args: argparse.Namespace, device: torch.device) -> None:
    from torch.sparse import to_sparse_semi_structured

    gen = torch.Generator().manual_seed(2)
    print("## 2:4 semi-structured vs dense: forward of one Linear layer\n")
    print("| out x in | batch | dtype | dense ms | 2:4 ms | dense / 2:4 | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for out_f, in_f in args.shapes:
        if in_f % 64 or out_f % 64:
            print(f"| {out_f}x{in_f} | | | | | skipped: sides must be multiples of 64 | |")
            continue
        for dtype in (torch.float16, torch.bfloat16):
            w = (torch.randn(out_f, in_f, generator=gen) * two_four_mask(out_f, in_f, gen))
            w = w.to(device=device, dtype=dtype)
            try:
                ws = to_sparse_semi_structured(w)
            except (RuntimeError, ValueError, NotImplementedError) as e:
                print(f"| {out_f}x{in_f} | | {str(dtype).split('.')[-1]} | | | not supported here: "
                      f"{' '.join(str(e).split())[:80]} | |")
                continue
            for batch in args.batches:
                x = torch.randn(batch, in_f, generator=gen).to(device=device, dtype=dtype)
                ref = F.linear(x, w)
                diff = float((F.linear(x, ws) - ref).abs().max() / ref.abs().max())
                t = medians({"dense": lambda x=x, w=w: F.linear(x, w),
                             "2:4": lambda x=x, ws=ws: F.linear(x, ws)}, args, device)
                print(f"| {out_f}x{in_f} | {batch} | {str(dtype).split('.')[-1]} | "
                      f"{1e3 * t['dense']:.4f} | {1e3 * t['2:4']:.4f} | "
                      f"{t['dense'] / t['2:4']:.2f} | {diff:.1e} |", flush=True)
    print()


def parse_shape(text: str) -> tuple[int, int]:
    out_f, in_f = text.lower().split("x")
    return int(out_f), int(in_f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="one small shape, density and batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.02, help="seconds per timed block")
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=list(SHAPES))
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    ap.add_argument("--semi-structured", action="store_true",
                    help="part 3 on a non-CUDA device too (it reports what is not supported)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("sparse_gpu.py: no CUDA device here (use --device cpu for a smoke run)")
    if args.quick:
        args.shapes, args.batches, args.densities = [(64, 128), (30, 50)], [32], [0.05]
        args.repeats, args.target = 2, 0.002
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}\n")
    print(f"sparse_linear vs masked F.linear on {device}: largest relative difference "
          f"{check(device):.1e}\n")
    csr_table(args, device)
    if device.type == "cuda" or args.semi_structured:
        semi_structured_table(args, device)


if __name__ == "__main__":
    main()
