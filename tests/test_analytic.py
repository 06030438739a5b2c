"""The analytic Gaussian-mixture score oracle against autograd of its own closed-form density."""

import math

import pytest
import torch

from lidmem import DDPMSchedule, VESDE, VPSDE
from lidmem.data.analytic import GaussianMixtureOnSubspaces, GaussianOnSubspace


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), DDPMSchedule.linear()])
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5])
def test_score_is_gradient_of_log_density(sde, t):
    gm = GaussianMixtureOnSubspaces(dims=[0, 2, 5, 8], ambient_dim=20, scales=[1.0, 0.5, 1.0, 2.0], seed=3, sde=sde)
    x0, _, _ = gm.sample(32, seed=1, dtype=torch.float64)
    tt = torch.tensor(t, dtype=torch.float64)
    xt = sde.psi(tt) * x0 + sde.sigma(tt) * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xr = xt.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(gm.log_prob(xr, t).sum(), xr)
    torch.testing.assert_close(gm(xt, t), g, rtol=1e-8, atol=1e-8 / float(sde.sigma(tt)) ** 2)


def test_log_density_matches_dense_gaussian():
    """One component: log p_t equals the dense multivariate normal with covariance psi^2 U S^2 U^T + sigma^2 I."""
    sde = VPSDE()
    g = GaussianOnSubspace(3, ambient_dim=7, scale=1.5, seed=4, sde=sde)
    t = torch.tensor(0.02, dtype=torch.float64)
    psi, sig = sde.psi(t), sde.sigma(t)
    U = g.bases[0]
    cov = psi**2 * 1.5**2 * U @ U.T + sig**2 * torch.eye(7, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(psi * g.offsets[0], covariance_matrix=cov)
    x = psi * g.offsets[0] + torch.randn(10, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(g.log_prob(x, 0.02), mvn.log_prob(x), rtol=1e-10, atol=1e-8)


def test_sample_lies_on_subspaces_with_true_lid():
    gm = GaussianMixtureOnSubspaces(dims=[0, 2, 5, 8], ambient_dim=20, seed=0)
    x, lid, comp = gm.sample(400, seed=0, dtype=torch.float64)
    assert x.shape == (400, 20) and lid.dtype == torch.int64
    for k, dk in enumerate(gm.dims):
        pts = x[comp == k] - gm.offsets[k]
        assert len(pts) > 50 and bool((lid[comp == k] == dk).all())
        # residual after projecting on the component's subspace is zero; rank of the cloud is d_k
        U = gm.bases[k]
        resid = pts - (pts @ U) @ U.T
        assert float(resid.abs().max()) < 1e-10
        assert int(torch.linalg.matrix_rank(pts)) == dk
    # mixture weights respected (equal weights: each component about 1/4 of 400)
    counts = torch.bincount(comp, minlength=4).double() / 400
    assert float((counts - 0.25).abs().max()) < 0.08


def test_true_flipd_tends_to_lid_and_score_is_jvp_differentiable():
    gm = GaussianMixtureOnSubspaces(seed=1)
    x, lid, _ = gm.sample(64, seed=5)
    f = gm.true_flipd(x, 1e-3)
    assert float((f - lid).abs().max()) < 0.05
    v = torch.randn_like(x)
    _, jv = torch.func.jvp(lambda inp: gm(inp, 0.01), (x,), (v,))
    assert jv.shape == x.shape and bool(torch.isfinite(jv).all())


def test_bad_arguments():
    with pytest.raises(ValueError, match="dims"):
        GaussianMixtureOnSubspaces(dims=[3, 30], ambient_dim=20)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixtureOnSubspaces(dims=[1, 2], weights=[1.0])
    with pytest.raises(ValueError, match="scales"):
        GaussianMixtureOnSubspaces(dims=[1, 2], scales=[1.0, -1.0])
    gm = GaussianMixtureOnSubspaces(dims=[1], ambient_dim=4)
    with pytest.raises(ValueError, match="x must have shape"):
        gm(torch.zeros(3, 5), 0.1)
    assert math.isclose(float(gm.weights.sum()), 1.0)
