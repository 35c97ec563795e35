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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sparseflow.errors import UserError
from sparseflow.studies import evci2019, evci2022, tessera2021
from sparseflow.studies.claims import claims_markdown
from sparseflow.studies.figures import PaperFigure, draw_figures
from sparseflow.studies.setting import check_setting, parse_setting

PAPERS = ("evci2022", "tessera2021", "evci2019")
SCALES = ("smoke", "cpu", "paper")
#: per paper: the function that trains its preset and judges its claims
PRESETS = {"evci2022": evci2022.evci2022, "tessera2021": tessera2021.tessera2021,
           "evci2019": evci2019.evci2019}
#: per paper, the keys the study varies itself (a setting of one is refused) and why
VARIED: dict[str, dict[str, str]] = {"evci2022": evci2022.VARIED,
                                     "tessera2021": tessera2021.VARIED,
                                     "evci2019": evci2019.VARIED}


def reproduce(paper: str, scale: str, root: str | Path, *, overrides: Sequence[str] = (),
              config_file: str | Path | None = None, workers: int | None = None,
              progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the preset, evaluate its claims, write claims.md/claims.json and an HTML report.

    ``config_file`` (YAML) and ``overrides`` (``KEY=VALUE``, later wins) are the user's setting
    over the preset's base, for every run, read like ``sparseflow run``'s; a key the study
    varies itself (``VARIED``) or a bad key or value is a ``ConfigError`` before anything
    trains. Returns ``paper``, ``scale``, ``setting`` (the ``KEY=VALUE`` texts, empty for the
    preset's own), ``claims``, ``dir`` (``ROOT/reproduce/PAPER-SCALE``, ``-DIGEST`` added for a
    setting) and ``report`` (None when jinja2/matplotlib are missing).
    """
    if paper not in PRESETS:
        raise UserError(f"reproduce: unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise UserError(f"--scale: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    setting = parse_setting(config_file, overrides)
    check_setting(setting, VARIED[paper], f"reproduce {paper}")
    root = Path(root)
    figures: list[PaperFigure] = []
    claims, runs = PRESETS[paper](root, scale, workers, progress, echo, setting=setting,
                                  figures=figures)
    outdir = root / "reproduce" / (f"{paper}-{scale}"
                                   + (f"-{setting.digest}" if setting.pairs else ""))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "claims.json").write_text(json.dumps(
        {"paper": paper, "scale": scale, "setting": setting.items,
         "claims": [asdict(c) for c in claims]}, indent=1))
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
            "figures": drawn}
