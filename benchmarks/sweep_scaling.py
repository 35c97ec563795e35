"""Sweep scaling on Dask: the same 8 runs with 2 worker processes vs 1, in one invocation.

Each run is LeNet-300-100 on Fashion-MNIST, static 90% ERK sparsity, ``--steps`` SGD steps
(flow measurement off), seeds 0..7: about 3-5 s per run on one CPU core. Every variant gets a
fresh run store (nothing is skipped) and goes through :func:`run_sweep` exactly as
``sparseflow sweep`` does: LocalCluster start, submission, training in single-thread worker
processes, the client replaying each run's events into the store, cluster shutdown.

Reported:

* wall time with 1 and with 2 workers, and the speedup (target, issue: >= 1.4x on 2 cores);
* **scheduling overhead per run** (1 worker) = (sweep wall time - sum of the runs' own
  ``wall_seconds``) / runs. ``wall_seconds`` is the training loop's own time (steps,
  evaluations, checkpoints), so the difference is everything a run costs besides training:
  LocalCluster start and stop (spread over the runs), Dask submission and result transfer,
  the worker importing sparseflow on first use, loading the dataset and building the model
  for each run, and the client's store writes;
* with ``--inprocess`` (default on) the same 8 runs trained in this process (``workers=0``),
  whose overhead per run is the part that does not come from Dask (data loading, model
  building, store writes); the difference is what Dask itself adds per run;
* the overhead split into what a sweep pays **once** and what each run costs **once the
  process is warm**: the client timestamps each result as it arrives, and for runs after the
  first, (time since the previous result - the run's ``wall_seconds``) is the cost of one
  more run (its set-up, store writes, Dask's hand-over); the median of these is "per run once
  warm", and overhead - runs x that is "per sweep" (cluster start and stop, the worker
  process's imports and first-run warm-up: torch._dynamo, numba's first compile, decoding the
  dataset). Only sequential variants have it (1 worker, in-process);
* the LocalCluster start-up and shutdown time alone (a cluster started and stopped with no
  work), which is paid once per sweep;
* the share of the machine other processes used during each trial: on a shared 2-core
  machine any other load makes the 2-worker timing meaningless, so it is printed per trial
  and a warning says when the trials used were disturbed.

    python benchmarks/sweep_scaling.py [--steps 1000] [--runs 8] [--repeats 1] [--no-inprocess]

With ``--repeats N`` the variants take turns N times and the fastest trial of each is used
(other processes on a shared machine only ever add time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from sparseflow.config import load_config
from sparseflow.sweep.client import run_sweep
from sparseflow.sweep.cluster import connect


def configs(runs: int, steps: int) -> list:
    """The runs of the benchmark sweep."""
    base = ["model=lenet300", "dataset=fashion_mnist", "method=static", "sparsity=0.9",
            "flow.enabled=false", f"train.duration={steps}it", "train.eval_every=1ep",
            "train.checkpoint_every=1ep"]
    return [load_config(None, [*base, f"seed={s}"]) for s in range(runs)]


def timed_sweep(cfgs: list, workers: int, root: Path) -> dict:
    """One sweep into a fresh store: wall time, the runs' own training times, the CPU time
    other processes on the machine used meanwhile, and (sequential variants) the overhead
    split into per sweep and per run once warm."""
    arrivals: list[tuple[float, str]] = []  # (time, run id) of each result, as it came in

    def echo(line: str) -> None:
        if line.startswith("finished "):
            arrivals.append((time.perf_counter(), line.split()[1]))

    busy0, own0 = busy_seconds(), own_cpu_seconds()
    t0 = time.perf_counter()
    out = run_sweep(cfgs, root, workers=workers, progress=False, echo=echo)
    wall = time.perf_counter() - t0
    others = busy_seconds() - busy0 - (own_cpu_seconds() - own0)
    if any(s["status"] != "finished" for s in out):
        raise SystemExit(f"a run did not finish: {[s['status'] for s in out]}")
    train = sum(s["wall_seconds"] for s in out)
    overhead = wall - train
    row = {"workers": workers, "wall_s": wall, "train_s": train,
           "overhead_ms_per_run": 1000 * overhead / len(out),
           "others_share": max(0.0, others) / (wall * (os.cpu_count() or 1))}
    if workers <= 1 and len(arrivals) == len(out) > 2:
        # one run at a time: a result arrives one run (set-up, training, hand-over) after
        # the previous one
        own = {s["run_id"]: s["wall_seconds"] for s in out}
        marginal = statistics.median(t - t_prev - own[rid] for (t_prev, _), (t, rid)
                                     in zip(arrivals, arrivals[1:], strict=False))
        row["warm_ms_per_run"] = 1000 * marginal
        row["per_sweep_s"] = overhead - len(out) * marginal
    return row


def cluster_startup() -> float:
    """Seconds to start and stop the sweep's 1-worker LocalCluster with no work."""
    t0 = time.perf_counter()
    client, cluster = connect(None, 1, 3, 5.0)
    client.close()
    cluster.close()
    return time.perf_counter() - t0


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (user + system) since boot."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the LocalCluster workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per run")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1,
                    help="trials of each variant, interleaved; the fastest of each is used")
    ap.add_argument("--no-inprocess", action="store_true",
                    help="skip the in-process (workers=0) reference")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    cfgs = configs(args.runs, args.steps)
    from sparseflow.training.run import load_data

    load_data(cfgs[0])  # the dataset files are in the page cache for every variant
    print(f"{args.runs} runs: LeNet-300-100 on Fashion-MNIST, static 90%, {args.steps} steps "
          f"each, flow off; {os.cpu_count()} CPU cores; {args.repeats} repeat(s), interleaved")
    variants = [1, 2] + ([] if args.no_inprocess else [0])
    trials: dict[int, list[dict]] = {w: [] for w in variants}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as d:
        for rep in range(args.repeats):
            for w in variants:
                trials[w].append(timed_sweep(cfgs, w, Path(d) / f"r{rep}-w{w}"))
        startup = cluster_startup()
    print(f"{'workers':>10s} {'wall s':>8s} {'sum of runs s':>14s} {'overhead ms/run':>16s} "
          f"{'= per sweep s':>14s} {'+ per run warm ms':>18s} {'other load':>10s}")
    for w in variants:
        for r in trials[w]:
            name = str(w) if w else "0 (inproc)"
            split = (f"{r['per_sweep_s']:14.2f} {r['warm_ms_per_run']:18.0f}"
                     if "warm_ms_per_run" in r else f"{'-':>14s} {'-':>18s}")
            print(f"{name:>10s} {r['wall_s']:8.2f} {r['train_s']:14.2f} "
                  f"{r['overhead_ms_per_run']:16.0f} {split} {100 * r['others_share']:9.0f}%")
    # the least disturbed trial of each variant: other processes only ever add time
    results = [min(trials[w], key=lambda r: r["wall_s"]) for w in variants]
    share = max(r["others_share"] for r in results)
    if share > 0.05:
        print(f"warning: other processes used up to {100 * share:.0f}% of the machine during "
              "the trials used below: the timings are not clean")
    one, two = results[0], results[1]
    speedup = one["wall_s"] / two["wall_s"]
    print(f"speedup 2 workers vs 1: {speedup:.2f}x (target >= 1.4x: "
          f"{'met' if speedup >= 1.4 else 'NOT met'})")
    print(f"scheduling overhead per run (1 worker): {one['overhead_ms_per_run']:.0f} ms "
          f"(LocalCluster start+stop alone: {1000 * startup:.0f} ms per sweep = "
          f"{1000 * startup / args.runs:.0f} ms per run)")
    summary = {"runs": args.runs, "steps": args.steps, "speedup": round(speedup, 3),
               "other_processes_cpu_share": round(share, 3),
               "overhead_ms_per_run_1worker": round(one["overhead_ms_per_run"], 1),
               "cluster_start_stop_s": round(startup, 3),
               "wall_s": {str(r["workers"]): round(r["wall_s"], 3) for r in results}}
    if "warm_ms_per_run" in one:
        print(f"  = {one['per_sweep_s']:.2f} s per sweep (cluster start and stop, the worker's "
              f"imports and first-run warm-up) + {one['warm_ms_per_run']:.0f} ms per run once "
              "warm")
        summary["per_sweep_s_1worker"] = round(one["per_sweep_s"], 3)
        summary["warm_ms_per_run_1worker"] = round(one["warm_ms_per_run"], 1)
    if len(results) > 2:
        dask_only = one["overhead_ms_per_run"] - results[2]["overhead_ms_per_run"]
        print(f"of which Dask (vs training in-process): {dask_only:.0f} ms per run")
        summary["dask_overhead_ms_per_run"] = round(dask_only, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
