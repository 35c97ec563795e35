"""REPRODUCTION.md, written from the stored reproductions rather than copied by hand.

``sparseflow reproduce-doc --root ROOT --out REPRODUCTION.md`` (:func:`write_document`) reads
``ROOT/reproduce/*/claims.json`` (what ``sparseflow reproduce`` writes: the claims with their
verdicts, effects, intervals and rules; the command, seeds, wall time and the environment of the
measurement, ``studies/reproduce.py``) and writes per paper and scale (cpu first, then paper,
then smoke; a user's setting after the preset's own) the setting, the command, the wall time,
the seeds, where and with what it was measured, and one table row per claim: what the paper
reports (the claim's ``reported``, else ``claims.PAPER_REPORTED``), what was measured, the
effect with its 95% interval, the verdict; the verdict rules follow each table. The header
says the file is generated, by which command, and the environments the claims were measured
in.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparseflow.errors import UserError
from sparseflow.studies.claims import (
    FAILED,
    HELD,
    INCONCLUSIVE,
    UNMEASURABLE,
    cell,
    effect_text,
    paper_reported,
)
from sparseflow.studies.provenance import commit

#: the papers in the order the document gives them, with their titles
PAPERS: dict[str, str] = {
    "evci2022": "Evci, Ioannou, Keskin, Dauphin 2022: Gradient Flow in Sparse Neural Networks "
                "and How Lottery Tickets Win",
    "tessera2021": "Tessera, Hooker, Rosman 2021: Keep the Gradients Flowing",
    "evci2019": "Evci, Pedregosa, Gomez, Elsen 2019: The Difficulty of Training Sparse Neural "
                "Networks",
}
#: scales in the order the document gives them (the cpu scale is the one measured here)
SCALES = ("cpu", "paper", "smoke")
#: what each scale is, for the reader
SCALE_WORDS = {
    "smoke": "minutes, tiny budgets: its verdicts are indicative only",
    "cpu": "the largest version that completes on a 2-core CPU machine",
    "paper": "the papers' own settings, for a GPU cluster",
}
NOT_RECORDED = "not recorded"


def load_reproductions(root: str | Path) -> list[dict[str, Any]]:
    """The claims.json of every reproduction under ``ROOT/reproduce``, each with ``dir`` (its
    folder, relative to ROOT), in document order; a file that cannot be read is a one-line
    :class:`UserError` naming it."""
    base = Path(root) / "reproduce"
    found = []
    for path in sorted(base.glob("*/claims.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable claims.json ({e})") from None
        if not isinstance(data, dict) or not {"paper", "scale", "claims"} <= set(data):
            raise UserError(f"{path}: not a claims.json of 'sparseflow reproduce' (no paper, "
                            "scale or claims)")
        found.append({**data, "dir": f"reproduce/{path.parent.name}"})

    def order(d: dict[str, Any]) -> tuple[int, int, int, str]:
        paper = list(PAPERS).index(d["paper"]) if d["paper"] in PAPERS else len(PAPERS)
        scale = SCALES.index(d["scale"]) if d["scale"] in SCALES else len(SCALES)
        return paper, scale, bool(d.get("setting")), d["dir"]

    return sorted(found, key=order)


def _env_line(env: dict[str, Any] | None) -> str:
    if not env:
        return NOT_RECORDED + " (a claims.json written before the environment was recorded)"
    gpu = ", ".join(env.get("gpu") or []) or "no GPU"
    return (f"{env.get('date', '?')}, commit `{env.get('commit', '?')}`, {env.get('cpu', '?')} "
            f"({env.get('cores', '?')} cores, {env.get('threads', '?')} threads), {gpu}, "
            f"torch {env.get('torch', '?')}, Python {env.get('python', '?')}")


def _seconds(s: float | None) -> str:
    if s is None:
        return NOT_RECORDED
    return f"{s:.0f} s" if s < 600 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _counts(claims: Sequence[dict[str, Any]]) -> str:
    verdicts = [c.get("verdict") for c in claims]
    parts = [f"{verdicts.count(v)} {v}" for v in (HELD, FAILED, INCONCLUSIVE, UNMEASURABLE)
             if verdicts.count(v)]
    return ", ".join(parts) or "no claims"


def section(rep: dict[str, Any]) -> list[str]:
    """The Markdown lines of one reproduction (one paper at one scale and setting)."""
    setting = rep.get("setting") or []
    title = f"### {rep['scale']} scale" + (" with " + " ".join(f"`{s}`" for s in setting)
                                           if setting else "")
    preset = rep.get("preset") or {}
    shared = preset.get("shared") or {}
    methods = preset.get("methods") or {}
    runs = rep.get("runs")
    reused = rep.get("runs_reused")
    wall = _seconds(rep.get("wall_seconds"))
    if rep.get("wall_seconds") is not None and runs is not None:
        wall += (f" for training and analyses ({runs} runs"
                 + (f", {reused} of them already in the store" if reused else "") + ")")
    seeds = rep.get("seeds")
    lines = [title, "", "- command: " + (f"`{rep['command']}`" if rep.get("command")
                                         else NOT_RECORDED),
             "- setting: " + (" ".join(f"`{s}`" for s in setting) + " over the preset's base"
                              if setting else "the preset's own")]
    if shared:
        lines.append("- every run: " + " ".join(f"`{k}={_value(v)}`" for k, v in shared.items())
                     + " (and the defaults of `sparseflow run --help`)")
    if methods:
        lines.append("- runs by method: " + ", ".join(f"{k} {v}" for k, v in methods.items()))
    lines += [f"- wall time: {wall}",
              "- seeds: " + (", ".join(map(str, seeds)) if seeds else NOT_RECORDED)
              + (f" (source runs: {', '.join(map(str, rep['source_seeds']))})"
                 if rep.get("source_seeds") else ""),
              f"- measured: {_env_line(rep.get('environment'))}",
              f"- outputs: `ROOT/{rep['dir']}/` (claims.md, claims.json, figures, tables, "
              "report)", "",
              "| # | claim | the paper reports | measured here | effect [95% CI] (n) | verdict |",
              "|---|---|---|---|---|---|"]
    rules = []
    for c in rep["claims"]:
        number = int(c["number"])
        reported = c.get("reported") or paper_reported(number, c["text"])
        effect = effect_text(c.get("effect"), c.get("ci_low"), c.get("ci_high"), c.get("n"))
        lines.append(f"| {number} | {cell(c['text'])} | {cell(reported)} | "
                     f"{cell(c.get('measured', ''))} | {effect} | {c['verdict']} |")
        if c.get("rule"):
            rules.append(f"- claim {number} ({' '.join(c['text'].split()[:8])} ...): "
                         f"{c['rule']}")
    lines += ["", "Verdict rules: " + ("a claim with an effect is judged by its rule below, "
                                       "the others by the checks of docs/science.md "
                                       "section 7." if rules else
                                       "the checks of docs/science.md section 7."), *rules, ""]
    return lines


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _header_env(reps: Sequence[dict[str, Any]]) -> list[str]:
    """The header's table of the measurement environments: one value per field when all
    reproductions agree, else each value with the reproductions measured with it."""
    fields = (("commit", "commit"), ("CPU", "cpu"), ("cores", "cores"), ("threads", "threads"),
              ("torch", "torch"), ("Python", "python"), ("numpy", "numpy"), ("GPU", "gpu"),
              ("date", "date"))
    lines = ["| measured with | |", "|---|---|"]
    recorded = [r for r in reps if r.get("environment")]
    for label, key in fields if recorded else ():
        seen: dict[str, list[str]] = {}
        for rep in recorded:
            value = rep["environment"].get(key)
            text = (", ".join(value) or "none") if isinstance(value, list) else (
                NOT_RECORDED if value is None else str(value))
            if key == "date" and value:
                text = text[:10]
            seen.setdefault(text, []).append(f"{rep['paper']} {rep['scale']}")
        if len(seen) == 1:
            lines.append(f"| {label} | {cell(next(iter(seen)))} |")
        else:
            lines.append(f"| {label} | " + cell("; ".join(f"{v} ({', '.join(w)})"
                                                          for v, w in seen.items())) + " |")
    missing = [f"{r['paper']} {r['scale']}" for r in reps if not r.get("environment")]
    if missing:
        lines.append(f"| not recorded for | {', '.join(missing)} (written before the "
                     "environment was recorded) |")
    return lines


def _wall_cell(rep: dict[str, Any]) -> str:
    """The summary table's wall time, saying when it excludes training (runs reused)."""
    wall = _seconds(rep.get("wall_seconds"))
    reused, runs = rep.get("runs_reused"), rep.get("runs")
    if reused and runs is not None:
        wall += (" (analyses only: every run reused)" if reused >= runs
                 else f" ({reused} of {runs} runs reused)")
    return wall


def document(root: str | Path, *, command: str = "") -> str:
    """REPRODUCTION.md as text from the reproductions under ``root`` (see the module
    docstring); ``command`` is the command line named as its generator."""
    reps = load_reproductions(root)
    if not reps:
        raise UserError(f"{Path(root) / 'reproduce'}: no reproduction here (no */claims.json; "
                        "run 'sparseflow reproduce PAPER --scale cpu' first); nothing written")
    command = command or f"sparseflow reproduce-doc --root {root}"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = ["# Reproducing the papers' claims", "",
             f"<!-- generated by `{command}`: edit the generator (studies/document.py) or "
             "rerun the presets, not this file -->",
             f"This file is generated by `{command}` from the `claims.json` that "
             "`sparseflow reproduce PAPER --scale SCALE` writes into "
             "`ROOT/reproduce/PAPER-SCALE/` (with `claims.md`, the paper's figures and "
             f"tables and an HTML report). Generated {now} at commit `{commit()}`; the "
             "environments below are those recorded when the claims were measured.", "",
             "Each command trains its preset (a resumable sweep: finished runs are reused), "
             "runs the analyses and judges each claim of docs/science.md section 7: "
             f"*{HELD}*, *{FAILED}*, *{INCONCLUSIVE}* (the 95% interval of the effect spans "
             f"the threshold, or there is one seed) or *{UNMEASURABLE}*. "
             "`sparseflow reproduce PAPER --scale SCALE --dry-run` lists every run of a "
             "preset with its estimated cost before anything trains.", ""]
    lines += _header_env(reps) + ["", "| paper | scale | setting | verdicts | wall time |",
                                  "|---|---|---|---|---|"]
    lines += [f"| {r['paper']} | {r['scale']} | "
              f"{cell(' '.join(r.get('setting') or []) or 'preset')} | "
              f"{_counts(r['claims'])} | {_wall_cell(r)} |" for r in reps]
    lines += ["", "Scales: " + "; ".join(f"*{k}*: {v}" for k, v in SCALE_WORDS.items()) + ".",
              ""]
    for paper in dict.fromkeys(r["paper"] for r in reps):
        lines += [f"## {PAPERS.get(paper, paper)} (`{paper}`)", ""]
        for rep in (r for r in reps if r["paper"] == paper):
            lines += section(rep)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_document(root: str | Path, out: str | Path, *, command: str = "") -> str:
    """Write :func:`document` to ``out`` (``-``: return it only); returns the text."""
    text = document(root, command=command)
    if str(out) != "-":
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return text
