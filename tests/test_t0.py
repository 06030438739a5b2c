"""The label-free FLIPD t0 (lidmem.estimators.t0) against known nearest-neighbour scales and an exact-score audit."""

import math

import numpy as np
import pytest
import torch

from lidmem import VESDE, VPSDE
from lidmem.estimators.t0 import nearest_neighbour_scale, t0_for_noise_ratio, t0_from_training_data
from lidmem.estimators import FLIPD, LocalPCA
from lidmem.memorization.audit import TrainingImages, audit_memorization
from lidmem.memorization.metrics import auroc


def _lattice(h: float) -> np.ndarray:
    """Points of a 6x6x6 grid with spacing h in R^3 (every nearest-neighbour distance is h), each row
    duplicated 3 times (duplicates must not count as neighbours at distance 0)."""
    g = np.stack(np.meshgrid(*[np.arange(6) * h] * 3, indexing="ij"), -1).reshape(-1, 3)
    return np.repeat(g, 3, axis=0)


def test_nearest_neighbour_scale_ignores_duplicates():
    assert nearest_neighbour_scale(_lattice(0.25)) == pytest.approx(0.25, rel=1e-6)
    assert nearest_neighbour_scale(_lattice(0.25), quantile=0.1, max_points=50) == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(ValueError, match="distinct"):
        nearest_neighbour_scale(np.zeros((5, 3)))


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()])
def test_t0_noise_matches_nearest_neighbour_gap(sde):
    x = _lattice(0.25)
    t0 = t0_from_training_data(sde, x, factor=2.0)
    tt = torch.tensor(t0, dtype=torch.float64)
    # sigma / psi * sqrt(d) = factor * r_nn with d = 3, r_nn = 0.25
    assert float(sde.sigma(tt) / sde.psi(tt)) * math.sqrt(3) == pytest.approx(2.0 * 0.25, rel=1e-4)


def test_t0_for_noise_ratio_clips_and_validates():
    assert t0_for_noise_ratio(VPSDE(), 1e-9) == pytest.approx(1e-5)
    assert t0_for_noise_ratio(VPSDE(), 1e9) == 1.0
    with pytest.raises(ValueError, match="ratio"):
        t0_for_noise_ratio(VPSDE(), -1.0)
    with pytest.raises(TypeError, match="SDE"):
        t0_for_noise_ratio("vp", 0.1)


def test_auto_t0_separates_point_masses_in_exact_score_audit(point_mass_images):
    # three training images duplicated 20x (point masses) and 300 distinct images of an 8-dim
    # Gaussian, d = 64; the exact score of the mixture is the model. t0="auto" must land where
    # FLIPD reads ~0 at the copies and stays clearly positive elsewhere.
    gm, train, samples = point_mass_images
    tr = TrainingImages(train, [f"t{i}" for i in range(len(train))])
    res = audit_memorization(gm, tr, samples=samples, lid_theta=FLIPD(gm, t0="auto", trace="exact"), t0_sweep=[0.01, 1.0],
                             normal_bundle=None, lid_star=LocalPCA(k=30), progress=False)
    t0 = res.summary["settings"]["flipd_t0_used"]
    assert t0 == pytest.approx(t0_from_training_data(gm.sde, train))
    assert 1e-3 < t0 < 0.3
    flipd = res.samples["lid_theta_flipd"].to_numpy()
    assert np.abs(flipd[:12]).max() < 0.5 and np.median(flipd[12:]) > 4
    assert auroc(np.r_[np.ones(12), np.zeros(40)], flipd, higher_is_positive=False) == 1.0
    sweep = {r["t0"]: r for r in res.summary["flipd_t0_sweep"]}
    assert set(sweep) == {0.01, 1.0} and abs(sweep[0.01]["median_flipd_copies"]) < 0.5
    assert res.samples["lid_theta_nb"].isna().all()  # nb_max_dim=0 skips the normal bundle


def test_patches_planted_data_set():
    from lidmem.data.images import load_patches_with_duplicates

    d = load_patches_with_duplicates()
    assert d.images.shape == (590, 1, 16, 16) and d.duplicated.sum() == 200
    assert -1.0 <= d.images.min() and d.images.max() <= 1.0
    flat = d.images.reshape(590, -1)
    assert len(np.unique(flat, axis=0)) == 400  # 10 tiles repeated 20x among 400 distinct tiles
    assert len(np.unique(flat[d.duplicated], axis=0)) == 10


def test_rgb_patches_planted_data_set():
    """The 32x32 RGB tiles of the training benchmarks: deterministic under the seed, in range,
    10 tiles x 20 copies among 400 distinct, real colour, and tile i is the photo's pixels."""
    from sklearn.datasets import load_sample_images

    from lidmem.data.images import load_patches_with_duplicates

    d = load_patches_with_duplicates(size=32, channels=3, downsample=1)
    assert d.images.shape == (590, 3, 32, 32) and d.images.dtype == np.float32 and d.duplicated.sum() == 200
    assert d.images.min() == -1.0 and d.images.max() == 1.0
    flat = d.images.reshape(590, -1)
    assert len(np.unique(flat, axis=0)) == 400 and len(np.unique(flat[d.duplicated], axis=0)) == 10
    assert np.abs(d.images[:, 0] - d.images[:, 2]).mean() > 0.05  # colour, not grey in 3 channels
    tile = int(d.source_index[0])  # 13 x 20 tiles of 32 px in each 427 x 640 photo, china first
    photo = load_sample_images().images[tile // 260]
    r, c = divmod(tile % 260, 20)
    np.testing.assert_allclose(d.images[0], photo[32 * r:32 * r + 32, 32 * c:32 * c + 32].transpose(2, 0, 1) * (2 / 255) - 1, atol=1e-6)
    again = load_patches_with_duplicates(size=32, channels=3, downsample=1)
    other = load_patches_with_duplicates(size=32, channels=3, downsample=1, seed=1)
    assert np.array_equal(again.images, d.images) and again.ids == d.ids and not np.array_equal(other.images, d.images)
    with pytest.raises(ValueError, match="channels"):
        load_patches_with_duplicates(channels=2)
    with pytest.raises(ValueError, match="n_images"):
        load_patches_with_duplicates(size=32, channels=3)  # 2x downsampled: only 120 tiles of 32 px
