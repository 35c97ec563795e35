"""The ``sparseflow`` commands: each only calls the library and prints (text formatting:
``analysis/text.py``). Bad input (any :class:`sparseflow.errors.UserError`) prints one line on
stderr and exits 2.

What is checked of a command's paths and environment before it writes (``_check_args``) is in
``cli/checks.py``; :func:`main` calls it before the command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparseflow.cli.checks import _check_args
from sparseflow.cli.parser import EXIT_USAGE, _UsageError, build_parser
from sparseflow.errors import UserError


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None, so the JSON output is strict."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def cmd_run(args: argparse.Namespace) -> int:
    from sparseflow.config import load_config, run_id
    from sparseflow.training.distributed import dist_info
    from sparseflow.training.run import execute, resolve_device

    cfg = load_config(args.config, args.overrides)
    resolve_device(cfg.device)  # device=cuda without CUDA: an error before anything is written
    main_rank = dist_info().main
    echo = (lambda s: print(s, file=sys.stderr)) if args.json else None
    if main_rank and not args.json:  # with --json, stderr holds only messages and errors
        print(f"run {run_id(cfg)}: {cfg.method} {cfg.model} on {cfg.dataset}, seed {cfg.seed}")
    summary = execute(cfg, root=args.root, progress=not args.no_progress, echo=echo,
                      force=args.force, name=args.name, tags=args.tag)
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()  # no rank tears the process group down while another still uses it
        tdist.destroy_process_group()
    if main_rank and args.json:
        print(json.dumps(_finite(summary), sort_keys=True))
    elif main_rank:
        from sparseflow.analysis.text import summary_text

        print(summary_text(summary))
    return 0 if summary.get("status") in ("finished", "diverged") else 1


def cmd_config(args: argparse.Namespace) -> int:
    from sparseflow.config import config_to_yaml, load_config, run_id

    cfg = load_config(args.config, args.overrides)
    print(f"# run id: {run_id(cfg)}")
    print(config_to_yaml(cfg), end="")
    return 0


def _open_store(root: str | None, must_exist: bool = True, readonly: bool = False
                ):  # noqa: ANN202
    """The run store under ``root``; ``readonly`` for commands that only read (a read-only
    folder works, nothing is created or changed)."""
    from sparseflow.store.database import Store
    from sparseflow.store.paths import default_root, store_path

    path = store_path(Path(root) if root else default_root())
    if (must_exist or readonly) and not path.exists():
        raise UserError(f"{path}: no run store here (run 'sparseflow run' first or pass --root)")
    return Store(path, readonly=readonly)


def cmd_runs(args: argparse.Namespace) -> int:
    from sparseflow.analysis.text import run_text, runs_table
    from sparseflow.store.database import effective_status

    if args.runs_command is None:
        raise UserError("runs: expected an action: list, show or export")
    with _open_store(args.root, readonly=True) as store:
        if args.runs_command == "list":
            from sparseflow import typed
            from sparseflow.analysis.catalog import filter_runs, parse_where, sort_runs
            from sparseflow.config import Config

            where = parse_where(args.where, Config)
            rows = store.list_runs()
            for r in rows:
                r["status"] = effective_status(r)
            if args.status:
                rows = [r for r in rows if r["status"] == args.status]
            rows = filter_runs(rows, where, args.tag)
            if args.sort:
                rows = sort_runs(rows, args.sort, typed.leaf_names(Config))
            if args.json:
                for r in rows:
                    print(json.dumps({k: r[k] for k in ("run_id", "name", "tags", "status",
                                                         "method", "dataset", "model", "seed",
                                                         "config", "summary")}))
            else:
                print(runs_table(rows))
            return 0
        if args.runs_command == "show":
            rid = store.resolve(args.run_id)
            run = store.get_run(rid)
            run["status"] = effective_status(run)
            metrics = store.metrics(rid)
            if args.json:
                print(json.dumps({**run, "metrics": metrics}, sort_keys=True))
            else:
                print(run_text(run, metrics))
            return 0
        if args.runs_command == "export":
            from sparseflow.store.export import export_table

            out = args.out or f"{args.table}.{args.format}"
            n = export_table(store, args.table, args.format, out)
            if out != "-":
                print(f"wrote {n} rows to {out}", file=sys.stderr)
            return 0
    return EXIT_USAGE


def cmd_export(args: argparse.Namespace) -> int:
    from sparseflow.analysis.endpoints import dataset_for, model_widths, resolve_endpoint
    from sparseflow.store.sparse_model import (
        check_writable,
        info_text,
        model_architecture,
        save_sparse_model,
    )

    if args.step is not None and "@" in args.run_id:
        raise UserError(f"RUN: {args.run_id!r} names a step already; drop --step or the @STEP")
    if args.out:
        check_writable(args.out, args.force)  # before anything is loaded
    spec = args.run_id if args.step is None else f"{args.run_id}@{args.step}"
    cache: dict[str, Any] = {}
    with _open_store(args.root, readonly=True) as store:
        ep = resolve_endpoint(spec, store, cache)
    cfg, data = ep.config, dataset_for(ep.config, cache)
    widths = model_widths(cfg, data)
    info = save_sparse_model(
        ep.model, args.out or f"{ep.run_id}-step{ep.step}.sparse.pt",
        arch=model_architecture(cfg, data.input_shape, data.num_classes, widths),
        masks=ep.masks, dtype=args.dtype, force=args.force,
        source={"run_id": ep.run_id, "step": ep.step, "method": cfg.method,
                "dataset": cfg.dataset, "sparsity": cfg.sparsity})
    print(info_text(info))
    return 0


def _root(args: argparse.Namespace) -> Path:
    from sparseflow.store.paths import default_root

    return Path(args.root) if args.root else default_root()


def cmd_analyze(args: argparse.Namespace) -> int:
    from sparseflow.analysis import runs as analyses
    from sparseflow.analysis.text import curve_text, hessian_text, interpolation_text, table_text

    cmd = args.analyze_command
    if cmd is None:
        raise UserError("analyze: expected an analysis: hessian, signal, interpolate, curve, "
                        "compare, correlate or methods")
    if cmd in ("hessian", "interpolate", "curve", "compare"):
        with _open_store(args.root, readonly=True):
            pass  # a clear error when there is no store
    root = _root(args)
    if cmd == "correlate":
        res, show = analyses.correlate(root, args.file), table_text
    elif cmd == "methods":
        from sparseflow.analysis.methods import method_comparison

        if not 0.0 < args.early <= 1.0:
            raise UserError(f"--early: expected a fraction of training in (0, 1], got "
                            f"{args.early}")
        res = method_comparison(root, args.file, early_fraction=args.early, out=args.out)
        show = table_text
    elif cmd == "interpolate":
        res = analyses.interpolate_runs(root, args.a, args.b, alphas=args.alphas,
                                        split=args.split, mask=args.mask,
                                        bn_reset=not args.no_bn_reset, out=args.out,
                                        progress=not args.no_progress)
        show = interpolation_text
    elif cmd == "curve":
        res = analyses.curve_runs(root, args.a, args.b, kind=args.kind, subspace=args.subspace,
                                  epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                  seed=args.seed, points=args.points, out=args.out,
                                  progress=not args.no_progress)
        show = curve_text
    elif cmd == "compare":
        res, show = analyses.compare_runs(root, args.runs, out=args.out), table_text
    elif cmd == "hessian":
        spec = args.run_id if args.step is None else f"{args.run_id}@{args.step}"
        res = analyses.hessian_of_run(root, spec, top_k=args.top_k, include_biases=args.biases,
                                      samples=args.samples, per_layer=not args.no_per_layer,
                                      batch_size=args.batch_size,
                                      progress=not args.no_progress)
        show = hessian_text
    elif cmd == "signal":
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise UserError(f"--input-shape: expected integers like 1,28,28, got "
                            f"{args.input_shape!r}") from None
        res = analyses.signal_study(root, args.model, args.sparsities, args.inits,
                                    masks=args.masks, repeats=args.repeats, batch=args.batch,
                                    seed=args.seed, input_shape=shape, out=args.out)
        show = table_text
    else:
        return EXIT_USAGE
    if args.json:
        print(json.dumps(_finite({k: v for k, v in res.items() if k != "table"}),
                         sort_keys=True))
    else:
        print(show(res))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from sparseflow.sweep.client import results_table, run_sweep
    from sparseflow.sweep.spec import load_sweep
    from sparseflow.sweep.status import status_table

    files = list(args.file)
    if files[0] == "status":
        if len(files) != 2:
            raise UserError("sweep status: expected one sweep file")
        print(status_table(load_sweep(files[1]), _root(args)))
        return 0
    if len(files) != 1:
        raise UserError("sweep: expected one sweep file (or 'status FILE')")
    sweep = load_sweep(files[0])
    summaries = run_sweep(sweep, _root(args), workers=args.workers, scheduler=args.scheduler,
                          dry_run=args.dry_run, retries=args.retries,
                          progress=not args.no_progress,
                          echo=lambda m: print(m, file=sys.stderr))
    if args.json:
        for s in summaries:
            print(json.dumps(_finite(s), sort_keys=True))
    elif not args.dry_run:
        print(results_table(summaries))
    bad = [s for s in summaries if s.get("status") in ("failed", "blocked")]
    return 1 if bad else 0


def cmd_scsdc(args: argparse.Namespace) -> int:
    from sparseflow.analysis import runs as analyses
    from sparseflow.sweep.client import run_sweep
    from sparseflow.sweep.spec import load_sweep

    sweep = load_sweep(args.file)
    if not sweep.scsdc:
        raise UserError(f"{args.file}: not an SC-SDC sweep (it has no 'scsdc' section)")
    if not args.no_run:
        run_sweep(sweep, _root(args), workers=args.workers, scheduler=args.scheduler,
                  progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr))
    res = analyses.scsdc_results(_root(args), args.file)
    if args.json:
        print(json.dumps(_finite(res), sort_keys=True))
        return 0
    print(analyses.format_scsdc(res["rows"]))
    print(f"written to {res['dir']}" + (f" ({res['pending']} runs not finished)"
                                        if res["pending"] else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sparseflow.studies.demo import default_study

    res = default_study(_root(args), epochs=args.epochs, overrides=args.overrides,
                        config_file=args.config, workers=args.workers,
                        progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr))
    if res["setting"]:
        print("setting: " + " ".join(res["setting"]))
    print("test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in res["accuracy"].items()
                                        if v is not None))
    print("loss barrier on the straight line to the pruned solution: "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["barrier_to_pruned"].items()))
    print(f"report: {res['report']}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from sparseflow.studies.reproduce import reproduce

    if args.no_probe and not args.dry_run:
        raise UserError("reproduce: --no-probe goes with --dry-run")
    res = reproduce(args.paper, args.scale, _root(args), overrides=args.overrides,
                    config_file=args.config, workers=args.workers,
                    progress=not args.no_progress, echo=lambda m: print(m, file=sys.stderr),
                    dry_run=args.dry_run, probe=not args.no_probe)
    if args.dry_run and not args.json:
        from sparseflow.studies.dryrun import dry_run_text

        print(dry_run_text(res))
        return 0
    if args.json:
        print(json.dumps(_finite(res), sort_keys=True))
        return 0
    from sparseflow.analysis.text import claims_text

    head, _, rest = claims_text(res).partition("\n")
    if res["setting"]:  # the setting under the title line
        head += "\nsetting: " + " ".join(res["setting"])
    print(f"{head}\n{rest}" if rest else head)
    return 0


def cmd_reproduce_doc(args: argparse.Namespace) -> int:
    from sparseflow.studies.document import write_document

    root = _root(args)
    command = "sparseflow reproduce-doc" + (f" --root {args.root}" if args.root else "") + (
        f" --out {args.out}" if args.out != "REPRODUCTION.md" else "")
    text = write_document(root, args.out, command=command)
    if args.out == "-":
        print(text, end="")
    else:
        print(f"written to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sparseflow.report.html import build_report

    runs = list(args.runs or [])
    sweep = None
    if args.sweep:
        from sparseflow.config import run_id
        from sparseflow.sweep.spec import expand, load_sweep

        sweep = load_sweep(args.sweep)
        runs += [run_id(c) for c in expand(sweep)]
    path = build_report(_root(args), runs or None, args.out, title=args.title, sweep=sweep,
                        force=args.force)
    print(f"report written to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparseflow`` command."""
    handlers = {"run": cmd_run, "config": cmd_config, "runs": cmd_runs,
                "analyze": cmd_analyze, "sweep": cmd_sweep, "scsdc": cmd_scsdc,
                "report": cmd_report, "reproduce": cmd_reproduce,
                "reproduce-doc": cmd_reproduce_doc, "demo": cmd_demo,
                "export": cmd_export}
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise _UsageError(f"expected a command: {', '.join(handlers)} "
                              "(see 'sparseflow --help')")
        _check_args(args)
        return handlers[args.command](args)
    except UserError as e:
        print(f"sparseflow: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        from sparseflow.training.interrupts import Interrupted

        if isinstance(e, Interrupted):
            print(f"sparseflow: interrupted at step {e.step} (checkpoint saved; run the same "
                  "command to resume)", file=sys.stderr)
        else:
            print("sparseflow: aborted (nothing saved since the last checkpoint; run the same "
                  "command to resume from it)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0

