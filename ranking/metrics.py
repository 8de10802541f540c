"""Offline metrics of the paper's tables: AUC, normalized entropy (He et al. 2014), relative gains, paired t-tests.

Pure numpy; every function is checked against hand-computed values in tests/unit/test_ranking_metrics.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: the probability a random positive scores above a random negative (ties count half)."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = float(y.sum()), float(len(y) - y.sum())
    if pos == 0 or neg == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    ranks = stats.rankdata(s)  # average ranks: ties count half
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def normalized_entropy(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray) -> float:
    """Log loss divided by the entropy of the background rate (He et al., 2014): 1.0 = no better than the base rate."""
    y = np.asarray(labels, dtype=np.float64)
    rate = float(y.mean())
    if rate in (0.0, 1.0):
        raise ValueError("NE needs both labels present")
    background = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    return log_loss(y, probs) / background


def auc_gain(auc_base: float, auc_new: float) -> float:
    """Relative reduction of 1 - AUC (the paper's "AUC gain"); positive = the new model is better."""
    return ((1 - auc_base) - (1 - auc_new)) / (1 - auc_base)


def ne_gain(ne_base: float, ne_new: float) -> float:
    """Relative reduction of NE; positive = the new model is better."""
    return (ne_base - ne_new) / ne_base


def paired_ttest(base: Sequence[float], new: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test over evaluation subsets: (t statistic, p-value)."""
    if len(base) != len(new) or len(base) < 2:
        raise ValueError("a paired t-test needs two equal-length samples of at least 2")
    res = stats.ttest_rel(np.asarray(new, dtype=np.float64), np.asarray(base, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)
