"""Detection metrics: tie-aware TPR@FPR against constructed scores with known answers."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from lidmem.memorization.metrics import auroc, detection_metrics, tpr_at_fpr


def _best_tpr_no_ties(y, s, fpr):
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    ok = fprs <= fpr + 1e-12
    return tprs[ok].max() if ok.any() else 0.0


def test_all_scores_tied_known_answer():
    # 10 positives and 100 negatives share one score; 1 negative is allowed at 1% FPR. In a random
    # order each positive lands in one of the 101 gaps between negatives, so on average 2/101 of
    # them precede the second negative.
    y = np.r_[np.ones(10, bool), np.zeros(100, bool)]
    s = np.zeros(110)
    assert tpr_at_fpr(y, s, fpr=0.01) == pytest.approx(2 / 101)
    assert tpr_at_fpr(y, s, fpr=0.01, ties="strict") == 0.0
    assert auroc(y, s) == pytest.approx(0.5)


def test_integer_score_copies_share_lowest_value():
    # LID-like integer score, low = copy: 20 copies and 5 non-copies at 0, 95 non-copies at 3.
    y = np.r_[np.ones(20, bool), np.zeros(100, bool)]
    s = np.r_[np.zeros(25), np.full(95, 3.0)]
    # 1 negative allowed among the 5 tied at 0: 20 * 2 / 6 positives expected before the 2nd
    assert tpr_at_fpr(y, s, higher_is_positive=False) == pytest.approx(20 * 2 / 6 / 20)
    assert tpr_at_fpr(y, s, higher_is_positive=False, ties="strict") == 0.0
    res = detection_metrics("lid", y, s, higher_is_positive=False)
    assert res.tpr_at_1pct_fpr == pytest.approx(1 / 3)
    assert res.n_tied == 120


def test_expected_value_matches_random_tie_breaking():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + 1.5 * y)  # a few integer levels: many ties
    mc = np.mean([_best_tpr_no_ties(y, s + 1e-6 * rng.random(300), 0.05) for _ in range(2000)])
    assert tpr_at_fpr(y, s, fpr=0.05) == pytest.approx(mc, abs=0.01)


def test_no_ties_same_as_roc_curve():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.random(200) < 0.4
        s = rng.normal(size=200) + y
        for f in (0.0, 0.01, 0.1, 1.0):
            assert tpr_at_fpr(y, s, fpr=f) == pytest.approx(_best_tpr_no_ties(y, s, f))
            assert tpr_at_fpr(y, s, fpr=f, ties="strict") == pytest.approx(_best_tpr_no_ties(y, s, f))


def test_bad_ties_argument():
    with pytest.raises(ValueError, match="ties="):
        tpr_at_fpr([0, 1], [0.0, 1.0], ties="random")
