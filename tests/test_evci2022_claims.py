"""How the evci2022 preset turns per-seed measurements into claims (docs/science.md sections 7
and 8): ratio and difference claims with bootstrap intervals, the ensemble gain of a pair, the
mean change of the gradient norm at mask updates -- on synthetic numbers with known answers."""

from __future__ import annotations

import math
import random

import pytest

from sparseflow.store.database import Store
from sparseflow.studies.claims import FAILED, HELD, INCONCLUSIVE, UNMEASURABLE
from sparseflow.studies.evci2022 import diff_claim, ensemble_gains, ratio_claim, update_change


def _noisy(mean: float, n: int, sd: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def test_a_ratio_far_below_its_threshold_holds_and_one_far_above_does_not():
    low, ref = _noisy(0.05, 5, 0.005, 0), _noisy(1.0, 5, 0.05, 1)
    c = ratio_claim(1, "t", low, ref, 0.1, below=True, measured="m", what="w")
    assert c.verdict == HELD and c.n == 5
    geo = math.exp(sum(map(math.log, low)) / 5 - sum(map(math.log, ref)) / 5)
    assert c.effect == pytest.approx(geo)  # positive values: ratio of geometric means
    assert "geometric means" in c.rule
    assert c.ci_low < c.effect < c.ci_high < 0.1  # the interval excludes the threshold
    assert c.measured.startswith("m: ") and "inconclusive when it spans 0.1" in c.rule
    above = ratio_claim(1, "t", ref, low, 0.1, below=True, measured="m", what="w")
    assert above.verdict == FAILED and above.ci_low > 0.1
    # "above" claims (sparse init keeps its signal): the same interval, the other side
    assert ratio_claim(1, "t", ref, ref, 1 / 3, measured="m", what="w").verdict == HELD


def test_a_ratio_whose_interval_spans_the_threshold_is_inconclusive():
    a, b = [0.3, 0.7, 0.5, 0.2, 0.8], [1.0, 1.0, 1.0, 1.0, 1.0]
    c = ratio_claim(3, "t", a, b, 0.5, below=True, measured="m", what="w")
    assert c.ci_low < 0.5 < c.ci_high and c.verdict == INCONCLUSIVE
    one = ratio_claim(3, "t", [0.01], [1.0], 0.5, below=True, measured="m", what="w")
    assert one.verdict == INCONCLUSIVE and one.effect == pytest.approx(0.01)
    assert one.ci_low is None and one.n == 1  # one seed: no interval
    nan = ratio_claim(3, "t", [float("nan"), 0.1], [1.0, 1.0], 0.5, measured="m", what="w")
    assert nan.verdict == UNMEASURABLE and nan.effect is None


def test_difference_claims_against_zero():
    up = diff_claim(3, "t", _noisy(1.0, 3, 0.1, 2), None, measured="m", what="w")
    assert up.verdict == HELD and up.ci_low > 0
    big, small = _noisy(0.12, 3, 0.01, 3), _noisy(0.05, 3, 0.01, 4)
    c = diff_claim(4, "t", big, small, measured="m", what="w")
    assert c.verdict == HELD and c.effect == pytest.approx(sum(big) / 3 - sum(small) / 3)
    assert diff_claim(4, "t", small, big, measured="m", what="w").verdict == FAILED
    flat = diff_claim(4, "t", [0.1, -0.1, 0.05], [0.0, 0.02, -0.03], measured="m", what="w")
    assert flat.ci_low < 0 < flat.ci_high and flat.verdict == INCONCLUSIVE


def test_ensemble_gain_of_a_pair_is_its_accuracy_over_its_mean_member():
    accuracy = [0.90, 0.89, 0.80]  # pruned, ticket, scratch
    ensembles = {"0,1": 0.90, "0,2": 0.91, "1,2": 0.9, "0,1,2": 0.92}
    gains = ensemble_gains(accuracy, ensembles, 0, [1, 2])
    assert gains == pytest.approx([0.90 - 0.895, 0.91 - 0.85])
    # identical predictions: the ensemble is the model, the gain 0
    assert ensemble_gains([0.7, 0.7], {"0,1": 0.7}, 1, [0]) == pytest.approx([0.0])


def test_change_at_mask_updates_is_the_mean_over_the_first_half(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.start_run("r", {"method": "rigl"})
        store.log_metrics("r", 100, {"flow_update/delta/grad_l2": 1.0})
        store.log_metrics("r", 200, {"flow_update/delta/grad_l2": 3.0})
        store.log_metrics("r", 300, {"flow_update/delta/grad_l2": 100.0})  # second half: left out
        assert update_change(store, "r", 200) == pytest.approx(2.0)
        assert update_change(store, "r", 50) != update_change(store, "r", 50)  # none: NaN
