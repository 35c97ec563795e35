"""The first runs of a paper preset at paper scale, trained for a short duration on a device:
the measured time per epoch and the wall clock the preset's full duration would take.

A ``paper`` preset (``sparseflow reproduce PAPER --scale paper``) trains hundreds of runs for
hundreds of epochs; this trains its first ``--runs`` runs (the plan's order: for tessera2021
the 1-hidden-layer SC-SDC pair, sparse 3076 units against dense 308) exactly as the preset
configures them, for ``--duration`` instead (e.g. ``10ep``), on ``--device``, in a fresh store,
and prints per run the wall time, steps, seconds per epoch, the preset's epochs and the hours
they would take at that rate, and the test accuracy reached. Setting keys (``--set``) apply to
every run as ``reproduce --set`` would (``data.root=...`` where the dataset lives).

    python benchmarks/paper_runs.py --device cuda --paper tessera2021 --runs 2 --duration 10ep
    python benchmarks/paper_runs.py --device cpu --duration 20it     # the tests' smoke run
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time

from sparseflow.config import Duration
from sparseflow.data.availability import dataset_info
from sparseflow.errors import UserError
from sparseflow.studies.setting import parse_setting
from sparseflow.training.run import execute
from sparseflow.training.sparsifier import heldout_sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", default="tessera2021",
                    choices=["tessera2021", "evci2022", "evci2019"])
    ap.add_argument("--runs", type=int, default=2, help="the plan's first runs to train")
    ap.add_argument("--duration", default="10ep", help="each run's training, e.g. 10ep, 200it")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="settings over the preset, for every run")
    args = ap.parse_args()
    study = importlib.import_module(f"sparseflow.studies.{args.paper}")
    full = study.plan("paper", parse_setting(None, args.set))[:args.runs]
    short = study.plan("paper", parse_setting(
        None, [*args.set, f"train.duration={args.duration}", f"device={args.device}"]))
    short = short[:args.runs]
    print(f"{args.paper} at paper scale: the first {len(short)} runs, {args.duration} each, "
          f"on {args.device}\n")
    print("| run | method | model | widths | wall s | steps | s/epoch | preset epochs | "
          "preset h (this rate) | test accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for cfg, paper_cfg in zip(short, full, strict=True):
            info = dataset_info(cfg.dataset, heldout=heldout_sizes(cfg) or ())
            steps_per_epoch = info.n_train // cfg.train.batch_size if info else 0
            t0 = time.perf_counter()
            summary = execute(cfg, root=root, progress=False, echo=lambda s: None)
            wall = time.perf_counter() - t0
            steps = int(summary.get("steps", 0))
            epochs = steps / steps_per_epoch if steps_per_epoch else float("nan")
            per_epoch = wall / epochs if epochs else float("nan")
            preset_epochs = (Duration.parse(paper_cfg.train.duration).steps(steps_per_epoch)
                             / steps_per_epoch) if steps_per_epoch else float("nan")
            a = cfg.arch
            widths = a.widths or (f"{a.depth}x{a.width}" if a.width else "")
            acc = summary.get("test_accuracy")
            print(f"| {summary.get('run_id', '')} | {cfg.method} | {cfg.model} | {widths} | "
                  f"{wall:.1f} | {steps} | {per_epoch:.2f} | {preset_epochs:.0f} | "
                  f"{per_epoch * preset_epochs / 3600:.2f} | "
                  f"{'' if acc is None else f'{acc:.4f}'} |", flush=True)
    print("\nWall time includes each run's set-up, evaluation and checkpoints; the preset's "
          "hours assume the measured rate holds for its whole duration, one run at a time.")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a bad --set key or value, a missing dataset: one line, exit 2
        print(f"paper_runs.py: {e}", file=sys.stderr)
        sys.exit(2)
