"""MMH classification: the rule on planted values, and end to end with FLIPD of an exact score
model that has a planted OD-Mem point and local PCA on data with planted duplicates."""

import warnings

import numpy as np
import pytest
import torch

from lidmem.data.analytic import GaussianMixtureOnSubspaces
from lidmem.estimators import flipd, local_pca
from lidmem.memorization.mmh import MMH_CLASSES, MMHResult, classify_mmh


def test_rule_on_planted_values():
    theta = [-0.03, 1.2, 0.05, 1.02, 0.2, 1.8, 0.6]
    star = [0, 0, 1, 1, 2, 2, 1]
    r = classify_mmh(theta, star)
    assert isinstance(r, MMHResult)
    # duplicate reproduced -> dd; duplicate not reproduced -> none; collapsed circle point -> od;
    # faithful -> none; 2-D data at a 0.2-D model point -> od; 1.8 vs 2 within margin -> none;
    # 0.6 vs 1 within the 0.5 margin -> none
    assert r.mmh_class.tolist() == ["dd_mem", "none", "od_mem", "none", "od_mem", "none", "none"]
    assert np.allclose(r.od_gap, np.asarray(star) - np.asarray(theta))
    assert r.counts() == {"od_mem": 2, "dd_mem": 1, "none": 4}
    assert r.thresholds()["od_margin"] == 0.5 and "lid_star <= 0.5" in r.rule
    # thresholds are arguments: a wider margin drops the 0.6-vs-1 case below it only when smaller
    assert classify_mmh(theta, star, od_margin=0.3).mmh_class[6] == "od_mem"
    assert set(MMH_CLASSES) == {"od_mem", "dd_mem", "none"}


def test_accepts_torch_and_validates():
    r = classify_mmh(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    assert r.mmh_class.tolist() == ["dd_mem", "none"] and r.lid_theta.dtype == np.float64
    with pytest.raises(ValueError, match="same length"):
        classify_mmh([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="od_margin"):
        classify_mmh([0.0], [0.0], od_margin=-1)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        classify_mmh([[0.0]], [[0.0]])
    with pytest.raises(ValueError, match="NaN"):
        classify_mmh([float("nan")], [0.0])


def test_end_to_end_with_exact_model_and_local_pca():
    # Data: 80 points on the x-axis (LID 1), 12 copies of (0, 3) (LID 0 by Prop. 3.1) and one
    # training point x_iso = (2.5, 0) on the line.
    g = np.random.default_rng(0)
    line = np.stack([g.uniform(-2, 2, 80), np.zeros(80)], axis=1)
    x_iso = np.array([[2.5, 0.0]])
    dup = np.tile([[0.0, 3.0]], (12, 1))
    data = np.concatenate([line, x_iso, dup])
    # Model: an exact score of a Gaussian on the x-axis plus point masses at the duplicate (the
    # model follows the data: DD-Mem) and at x_iso (the model overfits one point: OD-Mem).
    model = GaussianMixtureOnSubspaces(dims=[1, 0, 0], ambient_dim=2, weights=[0.8, 0.15, 0.05], scales=1.2, seed=0)
    model.bases = [torch.tensor([[1.0], [0.0]], dtype=torch.float64), torch.zeros(2, 0, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.float64)]
    model.offsets = torch.tensor([[0.0, 0.0], [0.0, 3.0], [2.5, 0.0]], dtype=torch.float64)
    x = torch.as_tensor(data)
    lid_theta = flipd(model, x, t0=0.01)
    # radius=0.0: the neighbourhood restriction of the paper applies to exact duplicates only
    lid_star = local_pca(data, k=10, tau="fo", radius=0.0)
    r = classify_mmh(lid_theta, lid_star)
    assert r.mmh_class[81:].tolist() == ["dd_mem"] * 12
    assert r.mmh_class[80] == "od_mem"
    # line points (away from x_iso) are faithful
    assert (r.mmh_class[:80] == "none").mean() > 0.95
    assert np.median(r.lid_theta[:80]) == pytest.approx(1.0, abs=0.1)


def test_scale_check_flags_incomparable_estimators():
    """LID_theta on another scale than LID_* (as FLIPD at a poorly chosen t0 on an image UNet):
    every ordinary point would be od_mem; the rule says so instead of returning labels silently."""
    from lidmem.memorization.mmh import MMHScaleWarning

    rng = np.random.default_rng(0)
    star = np.r_[np.zeros(10), rng.integers(5, 9, size=90)].astype(float)  # 10 duplicates, 90 ordinary points
    theta_ok = np.r_[rng.normal(0.1, 0.1, 10), star[10:] + rng.normal(0, 0.15, 90)]
    theta_ok[10] = star[10] - 3.0  # one planted OD-Mem point
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = classify_mmh(theta_ok, star)
    assert ok.comparable and abs(ok.scale_offset) < 0.2
    assert ok.counts()["od_mem"] == 1 and ok.mmh_class[10] == "od_mem" and ok.counts()["dd_mem"] == 10
    assert ok.thresholds()["comparable"] is True

    theta_low = theta_ok.copy()
    theta_low[10:] -= 2.0  # whole scale shifted by 2 dimensions
    with pytest.warns(MMHScaleWarning, match=r"median of lid_theta - lid_star is -(1\.9|2\.0)"):
        bad = classify_mmh(theta_low, star)
    assert not bad.comparable and bad.scale_offset == pytest.approx(ok.scale_offset - 2.0)
    assert bad.counts()["od_mem"] > 80  # what the check warns about
    assert bad.thresholds()["comparable"] is False and bad.thresholds()["scale_offset"] < -1.5
    # the criterion is |offset| > od_margin: a margin wider than the shift accepts the inputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert classify_mmh(theta_low, star, od_margin=2.5).comparable
    # only 0-dimensional data: nothing to compare on, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = classify_mmh([0.1, 3.0], [0.0, 0.0])
    assert r.comparable and np.isnan(r.scale_offset) and r.thresholds()["scale_offset"] is None
