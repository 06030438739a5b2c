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


# ---- bootstrap intervals -------------------------------------------------------------------


def _bootstrap_by_hand(y, s, n_boot, seed, higher=True, q=(0.025, 0.975)):
    """The documented recipe, one resample at a time through auroc / tpr_at_fpr."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    ip = rng.integers(0, len(pos), (n_boot, len(pos)))
    ineg = rng.integers(0, len(neg), (n_boot, len(neg)))
    a, t = [], []
    for b in range(n_boot):
        idx = np.r_[pos[ip[b]], neg[ineg[b]]]
        a.append(auroc(y[idx], s[idx], higher_is_positive=higher))
        t.append(tpr_at_fpr(y[idx], s[idx], higher_is_positive=higher))
    return np.quantile(a, q), np.quantile(t, q)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("higher", [True, False])
def test_bootstrap_matches_recomputation(integer, higher):
    from lidmem.memorization.metrics import bootstrap_interval

    rng = np.random.default_rng(3)
    y = rng.random(150) < 0.2
    s = rng.normal(size=150) + (1.0 if higher else -1.0) * y
    if integer:
        s = np.round(2 * s)  # many ties: both metrics take their tie-aware expected values
    got = bootstrap_interval(y, s, higher_is_positive=higher, n_boot=300, seed=7)
    a, t = _bootstrap_by_hand(y, s, 300, 7, higher)
    np.testing.assert_allclose(got["auroc_ci"], a, atol=1e-12)
    np.testing.assert_allclose(got["tpr_ci"], t, atol=1e-12)
    assert got["n_positive"] == int(y.sum()) and got["note"] is None
    assert got["auroc_ci"][0] < auroc(y, s, higher_is_positive=higher) < got["auroc_ci"][1]


def test_bootstrap_perfect_separation_and_seed():
    from lidmem.memorization.metrics import bootstrap_interval

    y = np.r_[np.ones(30, bool), np.zeros(200, bool)]
    s = np.r_[np.linspace(5, 6, 30), np.linspace(0, 1, 200)]
    got = bootstrap_interval(y, s)
    assert got["auroc_ci"] == [1.0, 1.0] and got["tpr_ci"] == [1.0, 1.0]
    assert bootstrap_interval(y, -s, higher_is_positive=False)["auroc_ci"] == [1.0, 1.0]
    # reversed: every copy ranked last
    assert bootstrap_interval(y, -s)["auroc_ci"] == [0.0, 0.0]
    rng = np.random.default_rng(0)
    z = rng.normal(size=230) + y
    assert bootstrap_interval(y, z, seed=1) == bootstrap_interval(y, z, seed=1)
    assert bootstrap_interval(y, z, seed=1)["auroc_ci"] != bootstrap_interval(y, z, seed=2)["auroc_ci"]


def test_bootstrap_coverage_binormal():
    # positives ~ N(mu, 1), negatives ~ N(0, 1): AUROC = Phi(mu / sqrt 2). The 95% interval must
    # cover it in about 95% of independent data sets (binomial sd over 200 sets: 1.5%).
    from scipy.stats import norm

    from lidmem.memorization.metrics import bootstrap_interval

    mu, truth = 1.0, norm.cdf(1.0 / np.sqrt(2.0))
    rng = np.random.default_rng(11)
    y = np.r_[np.ones(40, bool), np.zeros(160, bool)]
    hits, widths = 0, []
    for i in range(200):
        s = rng.normal(size=200) + mu * y
        lo, hi = bootstrap_interval(y, s, n_boot=400, seed=i)["auroc_ci"]
        hits += lo <= truth <= hi
        widths.append(hi - lo)
    assert 0.89 <= hits / 200 <= 0.99
    # Hanley-McNeil standard error of the AUROC, x 2 x 1.96 is the width of a 95% interval
    q1, q2 = truth / (2 - truth), 2 * truth**2 / (1 + truth)
    se = np.sqrt((truth * (1 - truth) + 39 * (q1 - truth**2) + 159 * (q2 - truth**2)) / (40 * 160))
    assert np.median(widths) == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_few_positives_note_not_nan():
    from lidmem.memorization.metrics import bootstrap_interval, detection_table

    y = np.r_[True, np.zeros(50, bool)]
    s = np.r_[-3.0, np.random.default_rng(0).normal(size=50)]
    got = bootstrap_interval(y, s)
    assert np.isfinite(got["auroc_ci"]).all() and "only 1 positive" in got["note"]
    (row,) = detection_table(y, {"x": s})
    assert row["n_positive"] == 1 and "only 1 positive" in row["ci_note"] and np.isfinite(row["auroc_ci"]).all()
    (row,) = detection_table(np.zeros(5, bool), {"x": np.arange(5.0)}, one_class="note")
    assert row["auroc"] is None and row["auroc_ci"] is None and row["note"]
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval(y, s, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(y, s, level=95)


def test_detection_table_carries_intervals():
    from lidmem.memorization.metrics import bootstrap_interval, detection_table

    rng = np.random.default_rng(5)
    y = rng.random(120) < 0.25
    s = rng.normal(size=120) - y
    (row,) = detection_table(y, {"lid": s}, higher_is_positive=False, seed=4)
    ref = bootstrap_interval(y, s, higher_is_positive=False, seed=4)
    assert row["auroc_ci"] == ref["auroc_ci"] and row["tpr_at_1pct_fpr_ci"] == ref["tpr_ci"]
    assert row["auroc_ci"][0] <= row["auroc"] <= row["auroc_ci"][1]
    (row,) = detection_table(y, {"lid": s}, higher_is_positive=False, interval=False)
    assert row["auroc_ci"] is None
