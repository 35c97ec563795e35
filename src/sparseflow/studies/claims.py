"""What a reproduced claim is and how it is judged (docs/science.md section 7 and "Statistics").

A ``Claim`` carries the measured values in words and, where the claim compares means over seeds,
its effect, a 95% interval, n and the rule that turned the interval into a verdict: *held*,
*did not hold*, *inconclusive* (the interval spans no effect, or one seed) or *not measurable at
this scale*. The helpers here are shared by the presets (``studies/evci2022.py``,
``studies/evci2019.py``, ``studies/tessera2021.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseflow.config import Config, run_id
from sparseflow.errors import UserError
from sparseflow.store.database import Store

HELD, FAILED, UNMEASURABLE = "held", "did not hold", "not measurable at this scale"
INCONCLUSIVE = "inconclusive"


@dataclass
class Claim:
    """One claim of docs/science.md section 7 with what was measured."""

    number: int
    text: str
    verdict: str
    measured: str
    effect: float | None = None  # the measured effect (what it is: ``rule``)
    ci_low: float | None = None  # its 95% interval
    ci_high: float | None = None
    n: int | None = None  # seeds (per side) the interval is over
    rule: str = ""  # how the interval became the verdict


def finite(v: float) -> float | None:
    """``v``, or None for NaN / infinity (claims.json stays plain JSON)."""
    return v if v == v and abs(v) != float("inf") else None


def interval_verdict(low: float, high: float, threshold: float = 0.0, *,
                     below: bool = False) -> str:
    """The verdict of an effect's interval against ``threshold``: the claim holds when the
    interval lies above it (``below``: under it), does not hold when it lies on the other side,
    and is inconclusive when it spans the threshold or is undefined (one seed)."""
    if not (low == low and high == high):
        return INCONCLUSIVE
    if below:
        return HELD if high < threshold else (FAILED if low > threshold else INCONCLUSIVE)
    return HELD if low > threshold else (FAILED if high < threshold else INCONCLUSIVE)


def seeds_for(scale: str) -> list[int]:
    """The seeds a claim that compares means is measured on: one at smoke scale, else 0-2."""
    return [0] if scale == "smoke" else [0, 1, 2]


def run_all(configs: list[Config], root: Path, workers: int | None, progress: bool,
             echo: Callable[[str], None]) -> None:
    from sparseflow.sweep.client import run_sweep

    run_sweep(configs, root, workers=workers, progress=progress, echo=echo)


def finished_summary(store: Store, cfg: Config) -> dict[str, Any]:
    run = store.get_run(run_id(cfg)) or {}
    if run.get("status") != "finished":
        raise UserError(f"run {run_id(cfg)} ({cfg.method}) did not finish: "
                        f"{run.get('status', 'missing')}")
    return run["summary"]


def early_mean(store: Store, rid: str, until: int) -> float:
    vals = [v for s, v in store.series(rid, "flow/grad_l2") if 0 < s <= until and v is not None]
    return statistics.mean(vals) if vals else float("nan")


def verdict(ok: bool | None) -> str:
    return UNMEASURABLE if ok is None else (HELD if ok else FAILED)


def claims_markdown(paper: str, scale: str, claims: list[Claim],
                    setting: Sequence[str] = ()) -> str:
    """The claims table as Markdown, after a line with the setting (the user's ``KEY=VALUE``
    settings over the preset's base, or that it is the preset's own)."""
    where = ("the preset's base with " + " ".join(f"`{s}`" for s in setting) if setting
             else "the preset's own")
    lines = [f"# {paper}, {scale} scale", "", f"setting: {where}", "",
             "| # | claim | verdict | measured | effect [95% CI] (n) |",
             "|---|---|---|---|---|"]
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines += [f"| {c.number} | {cell(c.text)} | {c.verdict} | {cell(c.measured)} | "
              f"{effect_text(c.effect, c.ci_low, c.ci_high, c.n)} |" for c in claims]
    rules = [f"- claim {c.number}: {c.rule}" for c in claims if c.rule]
    return "\n".join(lines + (["", "Verdict rules:", *rules] if rules else [])) + "\n"


def effect_text(effect: float | None, low: float | None, high: float | None,
                n: int | None) -> str:
    """``+0.0193 [+0.0110, +0.0280] (n=3)``; ``-`` without an effect; ``no interval`` with
    one seed."""
    if effect is None:
        return "-"
    if low is None or high is None or low != low or high != high:
        return f"{effect:+.4g} (no interval: n={n})"
    return f"{effect:+.4g} [{low:+.4g}, {high:+.4g}] (n={n})"
