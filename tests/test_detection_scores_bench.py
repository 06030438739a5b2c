"""The label-free scores of benchmarks/detection_scores.py on a planted ground truth (no model):
each score is checked against the value it must take, so a broken formula fails."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lidmem.memorization.metrics import auroc

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "detection_scores.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("detection_scores_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def planted(seed: int = 0):
    """300 samples, 40 copies; FLIPD = 3 log PNG + signal(t0) with a copy signal of -2 at every
    time, PNG lengths chosen so that copies are the *complex* images (raw FLIPD misranks them)."""
    rng = np.random.default_rng(seed)
    n, n_ref, window = 300, 200, np.array([0.005, 0.01, 0.02, 0.04])
    copy = np.zeros(n, bool)
    copy[:40] = True
    png_s = np.where(copy, rng.uniform(300, 400, n), rng.uniform(100, 300, n))
    png_ref = rng.uniform(100, 400, n_ref)
    slope_t = np.log(window) - np.log(window).mean()  # FLIPD rises with log t0 by 0.5 (others) / 1.5 (copies)
    sig_s = rng.normal(0, 0.3, (n, 1)) - 2.0 * copy[:, None] + (0.5 + 1.0 * copy[:, None]) * slope_t
    curve = 3 * np.log(png_s)[:, None] + sig_s
    ref_curve = 3 * np.log(png_ref)[:, None] + rng.normal(0, 0.3, (n_ref, 1)) + 0.5 * slope_t
    # training rows: 0..n_ref-1 are the reference; each sample's nearest neighbour is its own row n_ref + i
    nn_curve = curve - 1.0  # every nearest training image sits 1 below its sample: the difference is exactly 1
    r = {"window": window, "times": np.unique(np.concatenate([window, [1e-3, 0.5]])), "copy": copy,
         "train_rows": np.arange(n_ref + n), "ref_rows": np.arange(n_ref), "nn": n_ref + np.arange(n),
         "train_curve": np.vstack([ref_curve, nn_curve]), "png_samples": png_s, "png_train": np.concatenate([png_ref, png_s])}
    full = np.zeros((n, len(r["times"])))
    full[:, np.searchsorted(r["times"], window)] = curve
    r["curve"] = full
    return r, curve, ref_curve


def test_scores_match_their_definitions(bench):
    r, curve, ref = planted()
    t0 = 0.02
    s = bench.label_free_scores(r, t0)
    k = 2
    np.testing.assert_allclose(s["raw FLIPD"][0], curve[:, k])
    med, mad = np.median(ref[:, k]), 1.4826 * np.median(np.abs(ref[:, k] - np.median(ref[:, k])))
    np.testing.assert_allclose(s["robust z vs training FLIPD"][0], (curve[:, k] - med) / mad)
    np.testing.assert_allclose(s["minus nearest training image's FLIPD"][0], 1.0)
    z_all = (curve - np.median(ref, 0)) / (1.4826 * np.median(np.abs(ref - np.median(ref, 0)), 0))
    np.testing.assert_allclose(s["multi-t0 mean robust z (factors 0.5-4)"][0], z_all.mean(1))
    # slope against log t0: 0.5 for the others, 1.5 for copies (noise is constant across t0)
    slope = s["multi-t0 slope d FLIPD / d log t0"][0]
    np.testing.assert_allclose(slope, np.where(r["copy"], 1.5, 0.5), atol=1e-9)
    np.testing.assert_allclose(s["FLIPD / PNG length (audit lid_theta_png)"][0], curve[:, k] / r["png_samples"])
    with pytest.raises(ValueError, match="not among the computed times"):
        bench.label_free_scores(r, 0.03)


def test_png_residual_removes_the_planted_complexity_confound(bench):
    r, _, _ = planted()
    s = bench.label_free_scores(r, 0.02)
    y = r["copy"]
    raw = auroc(y, s["raw FLIPD"][0], higher_is_positive=False)
    res = auroc(y, s["PNG residual: FLIPD - fit(log PNG) on training"][0], higher_is_positive=False)
    assert raw < 0.6  # copies are complex: raw FLIPD misranks them
    assert res > 0.99  # the fit on training images recovers the -2 copy signal
    assert auroc(y, s["multi-t0 slope (high = copy)"][0], higher_is_positive=True) == 1.0
