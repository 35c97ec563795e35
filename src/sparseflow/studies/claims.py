"""What a reproduced claim is and how it is judged (docs/science.md section 7 and "Statistics").

A ``Claim`` carries the measured values in words and, where the claim compares means over seeds,
its effect, a 95% interval, n and the rule that turned the interval into a verdict: *held*,
*did not hold*, *inconclusive* (the interval spans no effect, or one seed) or *not measurable at
this scale*. The helpers here are shared by the presets (``studies/evci2022.py``,
``studies/evci2019.py``, ``studies/tessera2021.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparseflow.analysis.methods import series_mean
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
    reported: str = ""  # what the paper reports for it ("": see PAPER_REPORTED)


#: what the papers report for the claims of docs/science.md section 7 (section 9: the papers'
#: text and tables; "~" marks a reading of a figure): (claim number, a word of the claim's
#: text that picks the entry, None: any claim of that number, what the paper reports); a
#: claim without an entry is one the paper states without a number
PAPER_REPORTED: tuple[tuple[int, str | None, str], ...] = (
    (1, "dense init", "LeNet5 output std with the dense init at 90% sparsity: ~4e-4 (figure "
        "reading)"),
    (1, "sparsity-aware", "LeNet5 output std with the sparse init: ~1 up to ~80% sparsity "
        "(figure reading)"),
    (2, "lottery", "early ||g||_2: Lottery ~0.05 (figure reading); as this claim's effect "
        "(over Small Dense, the lowest healthy run): 0.05 / 1.1 = ~0.045"),
    (2, None, "early ||g||_2, LeNet5 on MNIST at 95%: Scratch ~0.04, Scratch+ ~1.15, Small "
        "Dense ~1.1, RigL+ ~2.55 (figure reading); as this claim's effect: 0.04 / 1.1 = "
        "~0.036"),
    (3, "inverted", "change of ||g||_2 at RigL inverted+'s early updates: ~0 (figure "
        "reading)"),
    (3, "set", "change of ||g||_2 at early updates: SET+ ~+0.05 to +0.2 against RigL+'s ~+1.2 "
        "to +1.5 (figure reading)"),
    (3, None, "change of ||g||_2 at RigL+'s early mask updates: ~+1.2 to +1.5 (figure "
        "reading)"),
    (4, "ensembl", "5-model ensembles on the test set: tickets 98.58% (one ticket 98.52 ± "
        "0.02), scratch 98.00% (one scratch run 97.04 ± 0.15)"),
    (4, None, "LeNet5: test disagreement with the pruned solution: ticket 0.0089, scratch "
        "0.0278 (as this claim's effect: +0.0189); training loss on the line to pruned peaks "
        "~1.85 from scratch, ~0.03 from the ticket"),
    (6, None, "correlation with test accuracy, sparse MLPs on Fashion-MNIST (the statistic "
        "is not stated): EGF_1 0.373, ||g||_1 0.316, ||g||_2 0.292"),
    (7, "batchnorm helps", "SGD with momentum: p-values of sparse > dense ~1 without "
        "BatchNorm, <= 0.008 with BatchNorm"),
    (7, "adam", "CIFAR-100: Adam + L2 + BatchNorm 1-5% test accuracy, AdamW ~17-28%"),
    (7, "prelu", "PReLU significant (sparse > dense) for all five optimisers, Swish for "
        "three"),
)
NOT_REPORTED = "no number (the paper states it qualitatively)"


def paper_reported(number: int, text: str = "") -> str:
    """What the paper reports for claim ``number`` with claim text ``text`` (the first entry
    of ``PAPER_REPORTED`` of that number whose word is in the text), or that it reports no
    number."""
    low = text.lower()
    return next((value for n, word, value in PAPER_REPORTED
                 if n == number and (word is None or word in low)), NOT_REPORTED)


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
    """Mean ``flow/grad_l2`` over steps 1..``until`` (claim 2's early gradient norm)."""
    return series_mean(store, rid, "flow/grad_l2", until, after=0)


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
    lines += [f"| {c.number} | {cell(c.text)} | {c.verdict} | {cell(c.measured)} | "
              f"{effect_text(c.effect, c.ci_low, c.ci_high, c.n)} |" for c in claims]
    rules = [f"- claim {c.number}: {c.rule}" for c in claims if c.rule]
    return "\n".join(lines + (["", "Verdict rules:", *rules] if rules else [])) + "\n"


def cell(text: str) -> str:
    """``text`` as a Markdown table cell: ``|`` escaped, on one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def effect_text(effect: float | None, low: float | None, high: float | None,
                n: int | None) -> str:
    """``+0.0193 [+0.0110, +0.0280] (n=3)``; ``-`` without an effect; ``no interval`` with
    one seed."""
    if effect is None:
        return "-"
    if low is None or high is None or low != low or high != high:
        return f"{effect:+.4g} (no interval: n={n})"
    return f"{effect:+.4g} [{low:+.4g}, {high:+.4g}] (n={n})"
