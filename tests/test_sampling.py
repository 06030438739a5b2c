"""Samplers against an analytic score: Gaussian data N(mu, s^2 I) has, under any linear-drift SDE,
p_t = N(psi mu, (psi^2 s^2 + sigma^2) I) and score -(x - psi mu) / (psi^2 s^2 + sigma^2)."""

import pytest
import torch

from lidmem import VESDE, VPSDE, ScoreModel
from lidmem.diffusion.sampling import get_timesteps, ode_derivative, sample_euler_maruyama, sample_ode
from lidmem.utils import append_dims

MU = torch.tensor([1.0, -0.5])
S = 0.3


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_score_model(sde, mu=MU, s=S):
    def score(x, t):
        psi = append_dims(sde.psi(t), x.ndim)
        sig = append_dims(sde.sigma(t), x.ndim)
        m = mu.reshape((1,) + tuple(x.shape[1:])) if mu.numel() == x[0].numel() else mu
        return -(x - psi * m) / (psi**2 * s**2 + sig**2)

    return ScoreModel(score, sde, prediction="score")


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_heun_ode_recovers_gaussian(sde):
    model = gaussian_score_model(sde)
    x = sample_ode(model, (4000, 2), steps=100, method="heun", seed=0, progress=False)
    # sampling error of the mean ~ 0.3/sqrt(4000) = 0.005; integration error must stay below the tolerance
    assert torch.allclose(x.mean(0), MU, atol=0.03)
    # samples at t_end carry sigma(1e-3) noise: std^2 = s^2 + sigma(t_end)^2 (tiny)
    assert torch.allclose(x.std(0), torch.full((2,), S), atol=0.03)


def test_euler_ode_converges_first_order():
    model = gaussian_score_model(VESDE())
    errs = []
    for steps in (50, 200):
        x = sample_ode(model, (2000, 2), steps=steps, method="euler", seed=0, progress=False)
        errs.append(abs(float(x.std(0).mean()) - S))
    # first order: 4x the steps cuts the error by about 4x (at least 2.5x)
    assert errs[1] < errs[0] / 2.5
    x = sample_ode(gaussian_score_model(VPSDE()), (4000, 2), steps=100, method="euler", spacing="log", seed=0, progress=False)
    assert torch.allclose(x.mean(0), MU, atol=0.03) and torch.allclose(x.std(0), torch.full((2,), S), atol=0.03)


def test_euler_maruyama_recovers_gaussian():
    model = gaussian_score_model(VPSDE())
    x = sample_euler_maruyama(model, (2000, 2), steps=300, seed=0, progress=False)
    assert torch.allclose(x.mean(0), MU, atol=0.03)
    assert torch.allclose(x.std(0), torch.full((2,), S), atol=0.03)


def test_samplers_are_seeded_and_shape_agnostic():
    mu = torch.linspace(-1, 1, 16).reshape(1, 4, 4)
    model = gaussian_score_model(VPSDE(), mu=mu, s=0.2)
    a = sample_ode(model, (8, 1, 4, 4), steps=20, seed=3, progress=False)
    b = sample_ode(model, (8, 1, 4, 4), steps=20, seed=3, progress=False)
    c = sample_ode(model, (8, 1, 4, 4), steps=20, seed=4, progress=False)
    assert a.shape == (8, 1, 4, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    e1 = sample_euler_maruyama(model, (8, 1, 4, 4), steps=20, seed=3, progress=False)
    e2 = sample_euler_maruyama(model, (8, 1, 4, 4), steps=20, seed=3, progress=False)
    assert torch.equal(e1, e2)
    # 8 samples of a 0.2-std Gaussian around mu: mean within ~3 * 0.2 / sqrt(8) ~ 0.21 of mu
    assert (a.mean(0) - mu).abs().max() < 0.25


def test_callback_and_denoise():
    model = gaussian_score_model(VPSDE())
    seen = []
    x = sample_ode(model, (50, 2), steps=10, seed=0, callback=lambda d: seen.append((d["i"], d["t"], d["x"].shape)), progress=False)
    assert [s[0] for s in seen] == list(range(10))
    assert seen[0][1] == pytest.approx(1.0) and seen[-1][2] == (50, 2)
    xd = sample_ode(model, (50, 2), steps=10, seed=0, denoise=True, progress=False)
    # Tweedie at t_end for Gaussian data shrinks towards mu by s^2 / (s^2 + sigma^2) ~ 1
    assert (xd - x).abs().max() < 0.01 and not torch.equal(x, xd)


def test_ode_derivative_is_probability_flow():
    sde = VPSDE()
    model = gaussian_score_model(sde)
    x = torch.randn(5, 2)
    t = torch.full((5,), 0.3)
    d, score = ode_derivative(model, x, t)
    expected = -0.5 * sde.beta(t)[:, None] * x - 0.5 * sde.beta(t)[:, None] * score
    assert torch.allclose(d, expected, atol=1e-6)


def test_timesteps_and_errors():
    ts = get_timesteps(10, t_end=1e-3, sde=VPSDE())
    assert ts.shape == (11,) and ts[0] == pytest.approx(1.0) and ts[-1] == pytest.approx(1e-3)
    assert bool((ts[1:] < ts[:-1]).all())
    with pytest.raises(ValueError, match="t_end"):
        get_timesteps(10, t_end=0.0)
    with pytest.raises(ValueError, match="spacing"):
        get_timesteps(10, spacing="cosine")
    with pytest.raises(TypeError, match="sde"):
        sample_ode(lambda x, t: x, (4, 2))
    with pytest.raises(ValueError, match="method"):
        sample_ode(gaussian_score_model(VPSDE()), (4, 2), method="rk4")
