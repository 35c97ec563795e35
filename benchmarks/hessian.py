"""Top-1 Hessian eigenvalue of LeNet-300-100 on 1000 Fashion-MNIST examples, vs PyHessian.

Set-up: ``build_model("lenet300", (1, 28, 28), 10)`` trained *briefly* (``--train-steps``
SGD steps, lr 0.05, momentum 0.9, batch 128, cycling through shuffled training batches; 300
by default, about 0.8 of an epoch), then put in eval mode. The Hessian is taken on
``load_dataset("fashion_mnist").heldout[0]`` (1000 examples held out of training), mean
cross-entropy, float32, all weights *and biases* (PyHessian differentiates every parameter,
so ours runs with ``masks=None, include_biases=True`` for the comparison).

Timed, interleaved in one process and repeated (median of ``--repeats``):
* ``report``: ``hessian_report(..., top_k=1, per_layer=False, hutchinson_samples=0)`` (one
  Lanczos run for both ends of the spectrum + g^T H g),
* ``top1``: ``hessian_eigenvalues(..., k=1)``, the top-1-only path (Lanczos stopping when the
  top Ritz value's residual is below 1.2e-5 of |lambda|),
* ``pyhessian``: ``pyhessian.hessian(model, F.cross_entropy, data=(x, y), cuda=False)``
  followed by ``.eigenvalues(top_n=1)`` (power iteration, its default ``tol=1e-3`` relative
  change, ``maxIter=100``), and ``pyhessian-tight`` the same with ``tol=1e-6``.
Each timing includes building the gradient graph. PyHessian draws its start vector from the
global RNG, so its value varies between repeats: the table gives the median value and the
worst relative error over the repeats. The reference eigenvalue is ours in float64
with 80 Lanczos steps, on a float64 copy of the model. PyHessian is the optional
``pyhessian`` package (``pip install --no-deps pyhessian``; it needs only torch and numpy);
when it cannot be imported the script says so and times ours alone.

Last, the same top-1 (and bottom-1) for a 90% sparse (ERK, random masks) copy: the
restricted operator PyHessian cannot compute.

    python benchmarks/hessian.py [--train-steps 300] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from sparseflow.data import load_dataset
from sparseflow.flow.hessian import hessian_eigenvalues, hessian_report
from sparseflow.models import build_model
from sparseflow.sparsity import MaskSet, layer_counts, select_weights

try:
    from pyhessian import hessian as PyHessian
except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
    PyHessian = None
    PYHESSIAN_ERROR = f"{type(exc).__name__}: {exc}"
else:
    PYHESSIAN_ERROR = ""


def train_briefly(model: torch.nn.Module, data, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    n, bs = len(data.x_train), 128
    perm = torch.randperm(n, generator=gen)
    model.train()
    for step in range(steps):
        pos = (step * bs) % (n - bs)
        idx = perm[pos : pos + bs]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()


def timed(fn) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def run_pyhessian(model, x, y, tol: float) -> float:
    for p in model.parameters():
        p.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = PyHessian(model, F.cross_entropy, data=(x, y), cuda=False)
        eig, _ = h.eigenvalues(maxIter=100, tol=tol, top_n=1)
    for p in model.parameters():
        p.grad = None
    return float(eig[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sparsity", type=float, default=0.9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = load_dataset("fashion_mnist")
    x, y = data.heldout[0]
    model = build_model("lenet300", (1, 28, 28), 10)
    train_briefly(model, data, args.train_steps)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"LeNet-300-100, {n_params} parameters, trained {args.train_steps} SGD steps; "
        f"Hessian on {len(x)} held-out Fashion-MNIST examples; threads={args.threads}"
    )

    ref64 = copy.deepcopy(model).double()
    ref = hessian_eigenvalues(
        ref64, None, x.double(), y, k=1, include_biases=True, lanczos_steps=80
    )[0]
    print(f"reference top-1 (float64, 80 Lanczos steps): {ref:.6f}")

    last: dict[str, object] = {}

    def report() -> float:
        last["report"] = hessian_report(
            model, None, x, y, top_k=1, per_layer=False, hutchinson_samples=0, include_biases=True
        )
        return last["report"].top[0]

    cases = {
        "report": report,
        "top1": lambda: hessian_eigenvalues(model, None, x, y, k=1, include_biases=True)[0],
    }
    if PyHessian is None:
        print(f"pyhessian NOT available ({PYHESSIAN_ERROR}); timing sparseflow only")
    else:
        cases["pyhessian"] = lambda: run_pyhessian(model, x, y, tol=1e-3)
        cases["pyhessian-tight"] = lambda: run_pyhessian(model, x, y, tol=1e-6)
    times: dict[str, list[float]] = {k: [] for k in cases}
    values: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            dt, val = timed(fn)
            times[name].append(dt)
            values[name].append(val)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'method':<16} {'top-1 (median)':>14} {'max rel. err':>12} {'median s':>9}  all s")
    for name in cases:
        err = max(abs(v - ref) / abs(ref) for v in values[name])
        print(
            f"{name:<16} {statistics.median(values[name]):>14.6f} {err:>12.2e} "
            f"{med[name]:>9.3f}  " + " ".join(f"{t:.3f}" for t in times[name])
        )
    rep = last["report"]
    print(
        f"report: {rep.lanczos_iterations} Lanczos steps (converged={rep.converged}), "
        f"bottom-1 {rep.bottom[0]:.6f} (err bound {rep.bottom_err[0]:.1e}), "
        f"gHg/gg {rep.gHg_over_gg:.4f}"
    )
    if PyHessian is not None:
        for ph in ("pyhessian", "pyhessian-tight"):
            print(
                f"time ratio {ph} / top1   = {med[ph] / med['top1']:.2f}x   "
                f"{ph} / report = {med[ph] / med['report']:.2f}x"
            )

    weights = select_weights(model)
    counts = layer_counts(weights, args.sparsity, "erk")
    masks = MaskSet.random(weights, counts, torch.Generator().manual_seed(0))
    sparse = copy.deepcopy(model)
    masks_sparse = MaskSet({n: p for n, p in select_weights(sparse).items()}, masks.masks)
    masks_sparse.apply_()
    dt, rep = timed(
        lambda: hessian_report(
            sparse, masks_sparse, x, y, top_k=1, per_layer=False, hutchinson_samples=0
        )
    )
    print(
        f"{args.sparsity:.0%} sparse (ERK random masks, weights only, n_active={rep.n_active}): "
        f"top-1 {rep.top[0]:.6f} (err bound {rep.top_err[0]:.1e}), bottom-1 {rep.bottom[0]:.6f} "
        f"(err bound {rep.bottom_err[0]:.1e}), {rep.lanczos_iterations} Lanczos steps, "
        f"{dt:.3f} s"
    )


if __name__ == "__main__":
    main()
