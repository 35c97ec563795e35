"""A self-contained HTML report of runs, in its own folder, with publication-ready files.

``build_report(root, run_ids, out)`` gathers the runs' summaries and stored metrics, pools runs
that differ only by seed, names them by what they are, and writes ``OUT/index.html`` (figures
embedded as data URIs: no network, no other file needed), ``OUT/figures/*.{pdf,svg,png}`` and
``OUT/tables/*.{csv,tex}``; it never replaces a file it did not write
(:mod:`sparseflow.report.output`). Sections: :mod:`sparseflow.report.sections`. Jinja2 renders
with autoescaping on, so run names and config strings are HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparseflow.errors import UserError
from sparseflow.report.output import ReportOutput, check_out_dir
from sparseflow.report.sections import (
    Report,
    accuracy_section,
    analysis_section,
    flow_section,
    groups_of,
    runs_section,
    signal_section,
    sweep_sections,
)
from sparseflow.store.database import Store, effective_status
from sparseflow.store.paths import store_path

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 32em; }
figcaption { font-size: 0.85em; color: #555; }
td.sig { background: #c8efc8; font-weight: bold; } td.nonsig { background: #f6d5d5; }
</style></head><body>
<h1>{{ title }}</h1>
<p>{{ runs|length }} runs from <code>{{ root }}</code>.</p>
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% if section.text %}<p>{{ section.text }}</p>{% endif %}
{% for table in section.tables %}
<table><tr>{% for h in table.header %}
<th class="{{ 'l' if loop.first else '' }}">{{ h }}</th>{% endfor %}</tr>
{% for row in table.rows %}{% set rowloop = loop %}<tr>{% for c in row %}
<td class="{{ 'l' if loop.first else '' }} {{ table.classes[rowloop.index0][loop.index0] }}">\
{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% for fig in section.figures %}
<figure><img alt="{{ fig.caption }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption>{{ fig.caption }}</figcaption></figure>
{% endfor %}
{% endfor %}
</body></html>
"""


def build_report(root: str | Path, run_ids: Sequence[str] | None = None,
                 out: str | Path | None = None, title: str = "sparseflow report",
                 sweep: Any = None, *, force: bool = False) -> Path:
    """Write the report of ``run_ids`` (all runs of the store when None) into the folder
    ``out`` (default ``ROOT/report``); returns the path of its ``index.html``.

    With ``sweep`` (a Sweep or a sweep file), the report adds the sweep's correlation table and,
    for an SC-SDC sweep, its p-value table coloured by significance. A file in ``out`` that no
    sparseflow report wrote is never replaced (a one-line UserError) unless ``force``.
    """
    try:
        import jinja2
    except ImportError:
        raise UserError("the report needs jinja2 and matplotlib "
                        "(pip install 'sparseflow[analysis]')") from None
    root = Path(root)
    if not store_path(root).exists():
        raise UserError(f"{store_path(root)}: no run store here")
    outdir = Path(out) if out else root / "report"
    check_out_dir(outdir)
    with Store(store_path(root), readonly=True) as store:  # runs are only read
        ids = [store.resolve(r) for r in run_ids] if run_ids else \
            [r["run_id"] for r in store.list_runs()]
        if not ids:
            raise UserError(f"{store_path(root)}: no runs to report")
        runs = [store.get_run(r) for r in ids]
        for r in runs:
            r["status"] = effective_status(r)
        staged = ReportOutput(outdir, force=force)
        try:
            rep = Report(staged)
            groups = groups_of(runs)
            runs_section(rep, runs, groups)
            accuracy_section(rep, groups)
            flow_section(rep, store, groups)
            analysis_section(rep, store, runs, groups)
            signal_section(rep, root)
            if sweep is not None:
                sweep_sections(rep, root, sweep)
            html = jinja2.Environment(autoescape=True).from_string(TEMPLATE).render(
                title=title, root=str(root), runs=runs, sections=rep.sections)
            staged.path("index.html").write_text(html)
        except BaseException:
            staged.discard()
            raise
    return staged.commit()
