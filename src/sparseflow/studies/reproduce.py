"""One-command checks of each paper's claims (docs/science.md section 7) at three scales.

``reproduce(paper, scale, root)`` trains the preset's runs (a sweep: resumable, skipped when
done), runs the analyses, and returns each claim with the measured values and a verdict: held,
did not hold, or not measurable at this scale.

Scales: ``smoke`` finishes in minutes on a laptop (and in CI): the claims are checked on tiny
budgets, so their verdicts are indicative only; ``cpu`` is the largest version that completes on
a 2-core machine in about an hour (Fashion-MNIST, LeNet5 / LeNet-300-100 / MLPs); ``paper`` is
for a GPU cluster: VGG-16 on CIFAR-10 for Evci et al. 2022, the paper's SC-SDC widths 308..2768
over 500 epochs for Tessera et al. 2021, and (a stand-in: ResNet-50/ImageNet is not shipped)
50-epoch LeNet-300-100 paths and curves for Evci et al. 2019.

Any setting: ``reproduce(..., overrides=["dataset=digits"], config_file=...)`` (the CLI's
``-c FILE`` / ``--set KEY=VALUE``, read as ``sparseflow run`` reads them) puts the user's
settings over the preset's base in every run (``studies/setting.py``); a key the study varies
itself (``VARIED``: methods, inits, seeds) is refused. The claims are measured on that setting
(evci2022's signal propagation on the study's own model and input shape, not the paper's
LeNet5); the outputs go to ``reproduce/PAPER-SCALE-DIGEST`` and record the setting.

Before anything is scheduled every dataset of the planned runs (the preset's ``plan`` and the
source runs the sweep adds) must be here or downloadable now (``dryrun.check_data``); else one
line names the dataset, where it was looked for and how to provide it, and nothing is trained.
``dry_run=True`` trains nothing and writes nothing: it lists every run with its estimated cost
(``studies/dryrun.py``, ``studies/cost.py``). claims.json records what REPRODUCTION.md is
written from (``studies/document.py``): the command line, the seeds, the wall time of training
and analyses, how many runs the store already held, and the environment of the measurement
(``studies/provenance.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sparseflow.config import Config
from sparseflow.errors import UserError
from sparseflow.studies import dryrun, evci2019, evci2022, tessera2021
from sparseflow.studies.claims import claims_markdown
from sparseflow.studies.figures import PaperFigure, draw_figures
from sparseflow.studies.provenance import environment, reproduce_command
from sparseflow.studies.setting import Setting, check_setting, parse_setting

PAPERS = ("evci2022", "tessera2021", "evci2019")
SCALES = ("smoke", "cpu", "paper")
#: per paper: the function that trains its preset and judges its claims
PRESETS = {"evci2022": evci2022.evci2022, "tessera2021": tessera2021.tessera2021,
           "evci2019": evci2019.evci2019}
#: per paper: its preset's module (``plan``, ``VARIED``; ``analysis_plan`` if it lists the
#: analyses it runs after training, for the dry run's cost)
MODULES = {"evci2022": evci2022, "tessera2021": tessera2021, "evci2019": evci2019}
#: per paper: the runs its preset trains itself at a scale (sources are added by the sweep)
PLANS: dict[str, Callable[[str, Setting], list[Config]]] = {
    "evci2022": evci2022.plan, "tessera2021": tessera2021.plan, "evci2019": evci2019.plan}
#: per paper, the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, dict[str, str]] = {"evci2022": evci2022.VARIED,
                                     "tessera2021": tessera2021.VARIED,
                                     "evci2019": evci2019.VARIED}


def reproduce(paper: str, scale: str, root: str | Path, *, overrides: Sequence[str] = (),
              config_file: str | Path | None = None, workers: int | None = None,
              progress: bool = True, echo: Callable[[str], None] = print,
              dry_run: bool = False, probe: bool = True) -> dict[str, Any]:
    """Train the preset, evaluate its claims, write claims.md/claims.json and an HTML report.

    ``config_file`` (YAML) and ``overrides`` (``KEY=VALUE``, later wins) are the user's setting
    over the preset's base, for every run, read like ``sparseflow run``'s; a key the study
    varies itself (``VARIED``) or a bad key or value is a ``ConfigError`` before anything
    trains. A dataset that is neither here nor downloadable now is a one-line ``UserError``
    before anything trains. Returns ``paper``, ``scale``, ``setting`` (the ``KEY=VALUE`` texts,
    empty for the preset's own), ``claims``, ``dir`` (``ROOT/reproduce/PAPER-SCALE``,
    ``-DIGEST`` added for a setting), ``report`` (None when jinja2/matplotlib are missing),
    ``figures`` and what claims.json records besides the claims: ``command``, ``seeds`` (of
    the preset's runs; ``source_seeds``: of the source runs they need), ``preset`` (the
    settings every run shares, runs per method), ``runs``, ``runs_reused`` (finished in the
    store before), ``wall_seconds`` (training and analyses) and ``environment``
    (:func:`~sparseflow.studies.provenance.environment`, taken when the run starts).

    ``dry_run``: train, download and write nothing; return :func:`~sparseflow.studies.dryrun.
    dry_run`'s listing of every run (sources included) with its estimated cost, the analyses,
    the data status and the totals (``probe=False``: CPU time at an assumed rate instead of
    timing a few steps of each architecture).
    """
    if paper not in PRESETS:
        raise UserError(f"reproduce: unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise UserError(f"--scale: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    setting = parse_setting(config_file, overrides)
    check_setting(setting, VARIED[paper], f"reproduce {paper}")
    root = Path(root)
    configs = PLANS[paper](scale, setting)  # every config checked before anything runs
    command = reproduce_command(paper, scale, setting.items, workers)
    if dry_run:
        planner = getattr(MODULES[paper], "analysis_plan", None)
        return dryrun.dry_run(paper, scale, configs, root, setting=setting.items,
                              command=command, probe=probe,
                              analyses=planner(scale, configs) if planner else None)
    env = environment()
    planned = dryrun.planned_runs(configs)
    dryrun.check_data([p.config for p in planned], f"reproduce {paper} --scale {scale}")
    from sparseflow.sweep.status import stored_runs

    reused = sum(r.get("status") == "finished"
                 for r in stored_runs(root, [p.run_id for p in planned]).values())
    figures: list[PaperFigure] = []
    t0 = time.perf_counter()
    claims, runs = PRESETS[paper](root, scale, workers, progress, echo, setting=setting,
                                  figures=figures)
    shared = {k: v for k in ("dataset", "model")  # named even at their defaults
              if len({v := getattr(c, k) for c in configs}) == 1}
    shared.update(dryrun.settings_of(configs, [])[0])
    methods: dict[str, int] = {}
    for p in planned:
        methods[p.config.method] = methods.get(p.config.method, 0) + 1
    record = {"command": command, "seeds": sorted({p.config.seed for p in planned if p.point}),
              "source_seeds": sorted({p.config.seed for p in planned if not p.point}),
              "preset": {"shared": shared, "methods": methods},
              "runs": len(planned), "runs_reused": reused,
              "wall_seconds": round(time.perf_counter() - t0, 1), "environment": env}
    outdir = root / "reproduce" / (f"{paper}-{scale}"
                                   + (f"-{setting.digest}" if setting.pairs else ""))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "claims.json").write_text(json.dumps(
        {"paper": paper, "scale": scale, "setting": setting.items,
         "claims": [asdict(c) for c in claims], **record}, indent=1))
    drawn = draw_figures(figures, outdir)
    captions = {f"{kind}/{f.name}": f.caption for f in figures for kind in ("figures", "tables")}
    (outdir / "claims.md").write_text(
        claims_markdown(paper, scale, claims, setting.items)
        + ("\n## Figures and tables\n\n" + "\n".join(
            f"- [{captions.get(w.rsplit('.', 1)[0], w)}]({w})" for w in drawn) + "\n"
           if drawn else ""))
    report = None
    title = f"{paper} ({scale} scale" + (f", {setting.describe()})" if setting.pairs else ")")
    try:
        from sparseflow.report.html import build_report

        report = str(build_report(root, runs, outdir / "report", title=title))
    except UserError:
        pass  # jinja2/matplotlib missing: the claims table is the result
    return {"paper": paper, "scale": scale, "setting": setting.items,
            "claims": [asdict(c) for c in claims], "dir": str(outdir), "report": report,
            "figures": drawn, **record}

