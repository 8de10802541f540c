"""AUC, NE, gains and the paired t-test against values computed by hand."""

from __future__ import annotations

import math

import pytest

from ranking.metrics import auc, auc_gain, log_loss, ne_gain, normalized_entropy, paired_ttest


def test_auc_counts_ordered_pairs_and_ties_half() -> None:
    # positives 0.8, 0.4; negatives 0.5, 0.4, 0.1: pairs won 0.8>{0.5,0.4,0.1} = 3, 0.4>0.1 = 1, 0.4=0.4 half
    assert auc([1, 0, 1, 0, 0], [0.8, 0.5, 0.4, 0.4, 0.1]) == pytest.approx((3 + 1 + 0.5) / 6)
    assert auc([0, 1], [0.1, 0.9]) == 1.0 and auc([0, 1], [0.9, 0.1]) == 0.0
    with pytest.raises(ValueError):
        auc([1, 1], [0.2, 0.3])


def test_normalized_entropy_by_hand() -> None:
    y, p = [1, 0, 0, 0], [0.5, 0.2, 0.2, 0.1]
    ll = -(math.log(0.5) + 2 * math.log(0.8) + math.log(0.9)) / 4
    assert log_loss(y, p) == pytest.approx(ll)
    background = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert normalized_entropy(y, p) == pytest.approx(ll / background)
    assert normalized_entropy(y, [0.25] * 4) == pytest.approx(1.0)  # predicting the base rate is NE 1


def test_gains_are_relative_reductions() -> None:
    assert auc_gain(0.80, 0.81) == pytest.approx(0.05)  # 1-AUC 0.20 -> 0.19
    assert ne_gain(0.90, 0.891) == pytest.approx(0.01)
    assert auc_gain(0.8, 0.79) < 0 and ne_gain(0.9, 0.95) < 0


def test_paired_ttest_by_hand() -> None:
    base, new = [1.0, 2.0, 3.0], [1.5, 2.5, 3.7]
    d = [0.5, 0.5, 0.7]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t, p = paired_ttest(base, new)
    assert t == pytest.approx(mean / (sd / math.sqrt(3)))
    assert 0 < p < 0.05
