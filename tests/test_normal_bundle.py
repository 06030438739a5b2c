"""Normal-bundle LID against analytic mixtures of known dimension (VP, VE, DDPM; far from the origin)."""

import pytest
import torch

from lidmem import DDPMSchedule, VESDE, VPSDE
from lidmem.data.analytic import GaussianMixtureOnSubspaces
from lidmem.estimators import NormalBundle, normal_bundle
from lidmem.estimators.normal_bundle import gap_rank


def test_recovers_true_lid_on_mixture():
    gm = GaussianMixtureOnSubspaces(dims=[0, 2, 5, 8], ambient_dim=20, seed=0, sde=VPSDE())
    x, lid, _ = gm.sample(300, seed=1)
    est = normal_bundle(gm, x, 0.01, progress=False)
    assert est.dtype == torch.int64 and est.shape == (300,)
    assert float((est == lid).float().mean()) >= 0.95


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), DDPMSchedule.linear()])
def test_points_far_from_origin(sde):
    """Noise must be added around psi x, not around the origin (a public VE sampler ignored x)."""
    gm = GaussianMixtureOnSubspaces(dims=[1, 3, 6], ambient_dim=12, offset_scale=60.0, seed=5, sde=sde)
    x, lid, _ = gm.sample(60, seed=2)
    assert float(x.norm(dim=1).min()) > 100
    est = normal_bundle(gm, x, 0.01, progress=False)
    assert float((est == lid).float().mean()) >= 0.95


def test_all_ranks_reachable_with_gap_rule():
    # full dimension (rank 0 of S) and a point mass (rank d of S) in the same batch
    gm = GaussianMixtureOnSubspaces(dims=[0, 6], ambient_dim=6, scales=1.0, seed=0, sde=VPSDE())
    x, lid, _ = gm.sample(40, seed=0)
    est = normal_bundle(gm, x, 0.01, progress=False)
    assert set(lid.tolist()) == {0, 6}
    assert torch.equal(est, lid)
    sv = torch.tensor([[5.0, 4.0, 0.1], [0.2, 0.1, 0.05], [5.0, 4.9, 4.8]])
    assert gap_rank(sv, 5.0).tolist() == [2, 0, 3]


def test_thresholds_seed_and_class():
    gm = GaussianMixtureOnSubspaces(dims=[3], ambient_dim=8, seed=1)
    x, lid, _ = gm.sample(20, seed=0)
    a, sv = normal_bundle(gm, x, 0.01, seed=3, return_singular_values=True, progress=False)
    assert sv.shape == (20, 8) and bool((sv[:, :-1] >= sv[:, 1:]).all())
    assert torch.equal(a, lid)
    # a float threshold between the normal (~sqrt(k)/sigma) and tangent (~sqrt(k)) singular values
    assert torch.equal(normal_bundle(gm, x, 0.01, threshold=50.0, progress=False), lid)
    # the paper's global 10th percentile: here 3/8 of all singular values are tangent, so the
    # 10th percentile lies among them and some tangent directions count as normal (LID < 3)
    pct = normal_bundle(gm, x, 0.01, threshold="percentile", progress=False)
    assert bool((pct < 3).all())
    assert torch.equal(a, normal_bundle(gm, x, 0.01, seed=3, batch_size=7, progress=False))
    est = NormalBundle(gm, t0=0.01, n_scores=32, seed=3)
    out = est.estimate(x)
    assert est.singular_values_.shape == (20, 8) and torch.equal(out, lid)
    # fewer noisy copies than the codimension caps the rank at k: LID >= d - k
    capped = normal_bundle(gm, x, 0.01, n_scores=2, threshold=5.0, progress=False)
    assert bool((capped == 6).all())


def test_bad_inputs():
    gm = GaussianMixtureOnSubspaces(dims=[1], ambient_dim=4)
    x, _, _ = gm.sample(5, seed=0)
    with pytest.raises(ValueError, match="t0"):
        normal_bundle(gm, x, t0=-0.1)
    with pytest.raises(ValueError, match="n_scores"):
        normal_bundle(gm, x, n_scores=0)
    with pytest.raises(ValueError, match="threshold"):
        normal_bundle(gm, x, threshold="median")
    with pytest.raises(ValueError, match="threshold"):
        normal_bundle(gm, x, threshold=-1.0)
    with pytest.raises(ValueError, match="percentile"):
        normal_bundle(gm, x, threshold="percentile", percentile=150)
    with pytest.raises(ValueError, match="x"):
        normal_bundle(gm, x[:0])
    with pytest.raises(ValueError, match="NaN"):
        normal_bundle(gm, torch.full((2, 4), float("nan")))
