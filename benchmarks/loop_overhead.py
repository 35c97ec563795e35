"""Samples/s of the sparseflow training loop vs a minimal hand-written PyTorch loop.

Same model (LeNet-300-100), same Fashion-MNIST data, same optimiser (SGD + momentum 0.9), same
batch size; the two are interleaved in one process, repeated, and the median ratio printed. The
hand-written loop is the smallest honest one: it indexes the same shuffled batches, sets the
learning rate of the cosine schedule and accumulates the loss, as any useful loop must. Both
evaluate the test set once at the end (1000 examples).

    python benchmarks/loop_overhead.py [--steps 400] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from sparseflow.config import load_config
from sparseflow.data import load_dataset
from sparseflow.training.loop import Trainer, evaluate
from sparseflow.training.optim import build_optimizer
from sparseflow.training.run import make_model


def hand_written(cfg, data, steps: int) -> float:
    model = make_model(cfg, data)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    x_all, y_all = data.x_train, data.y_train
    bs = cfg.train.batch_size
    spe = len(x_all) // bs
    loss_sum = torch.zeros((), dtype=torch.float64)
    t0 = time.perf_counter()
    perm = None
    for step in range(steps):
        epoch, pos = divmod(step, spe)
        if pos == 0 or perm is None:
            perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(epoch))
        idx = perm[pos * bs : (pos + 1) * bs]
        for g in opt.param_groups:
            g["lr"] = cfg.optim.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        out = model(x_all[idx])
        loss = F.cross_entropy(out, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
    evaluate(model, data.x_test, data.y_test)
    return time.perf_counter() - t0


def sparseflow_loop(cfg, data, steps: int) -> float:
    model = make_model(cfg, data)
    opt = build_optimizer(cfg.optim, model)
    trainer = Trainer(cfg, model, opt, data, device=torch.device("cpu"), progress=True,
                      echo=lambda s: None)
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    data = load_dataset("fashion_mnist")
    data.x_test, data.y_test = data.x_test[:1000], data.y_test[:1000]
    cfg = load_config(None, [f"train.duration={args.steps}it", f"train.eval_every={args.steps}it",
                             "data.eval_batch_size=1000"])
    bs = cfg.train.batch_size
    ratios, t_hand, t_sf = [], [], []
    sparseflow_loop(cfg, data, args.steps)  # warm-up both
    hand_written(cfg, data, args.steps)
    for r in range(args.repeats):
        if r % 2 == 0:
            a = hand_written(cfg, data, args.steps)
            b = sparseflow_loop(cfg, data, args.steps)
        else:
            b = sparseflow_loop(cfg, data, args.steps)
            a = hand_written(cfg, data, args.steps)
        t_hand.append(a)
        t_sf.append(b)
        ratios.append(a / b)  # throughput(sparseflow) / throughput(hand)
    n = args.steps * bs
    print(f"LeNet-300-100 on Fashion-MNIST, batch {bs}, {args.steps} steps, "
          f"{args.threads} thread(s), {args.repeats} interleaved repeats")
    print(f"hand-written loop : {n / statistics.median(t_hand):10.0f} samples/s (median)")
    print(f"sparseflow loop   : {n / statistics.median(t_sf):10.0f} samples/s (median)")
    print(f"throughput ratio sparseflow/hand: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
