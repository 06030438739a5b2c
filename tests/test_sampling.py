"""Samplers against an analytic score: Gaussian data N(mu, s^2 I) has, under any linear-drift SDE,
p_t = N(psi mu, (psi^2 s^2 + sigma^2) I) and score -(x - psi mu) / (psi^2 s^2 + sigma^2)."""

import pytest
import torch

from lidmem import VESDE, VPSDE, ScoreModel
from lidmem.data.analytic import GaussianMixtureOnSubspaces
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


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_ode_derivative_transports_the_oracle_density(sde):
    """The probability-flow drift v = f x - g^2/2 s of the Gaussian-mixture oracle satisfies the
    continuity equation d/dt log p_t = -div v - v . grad log p_t, with log p_t and its time
    derivative (central difference) from the oracle's closed-form density, not from the score."""
    gm = GaussianMixtureOnSubspaces(dims=[0, 2, 3], ambient_dim=5, scales=0.7, offset_scale=1.5, seed=1, sde=sde)
    x0, _, _ = gm.sample(6, seed=0, dtype=torch.float64)
    t = 0.3
    tt = torch.full((6,), t, dtype=torch.float64)
    x = float(sde.psi(tt[0])) * x0 + float(sde.sigma(tt[0])) * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v, score = ode_derivative(gm, x, tt)
    torch.testing.assert_close(score, gm.score(x, tt))
    div = torch.stack([torch.trace(torch.func.jacrev(lambda y: ode_derivative(gm, y[None], tt[:1])[0][0])(xi)) for xi in x])
    h = 1e-5
    dlogp = (gm.log_prob(x, t + h) - gm.log_prob(x, t - h)) / (2 * h)
    residual = dlogp + div + (v * score).sum(1)
    assert float(dlogp.abs().max()) > 0.1  # the density does move at t
    torch.testing.assert_close(residual, torch.zeros_like(residual), rtol=0, atol=1e-5 * float(dlogp.abs().max()))
    # the reverse-SDE drift (g^2 instead of g^2 / 2) does not transport p_t
    g2 = sde.diffusion_sq(tt)[:, None]
    wrong = v - 0.5 * g2 * score
    wrong_res = dlogp + (div - 0.5 * g2[:, 0] * torch.stack([torch.trace(torch.func.jacrev(lambda y: gm.score(y[None], tt[:1])[0])(xi)) for xi in x])) + (wrong * score).sum(1)
    assert float(wrong_res.abs().max()) > 0.1


def test_conditioning_reaches_every_model_call():
    """extra_args are passed unchanged to the model by ode_derivative, both integrators and the
    final denoising: a conditional Gaussian whose mean is the conditioning samples exactly as the
    same model with that mean built in."""
    sde = VPSDE()

    def score(x, t, *, mean):
        psi = append_dims(sde.psi(t), x.ndim)
        sig = append_dims(sde.sigma(t), x.ndim)
        return -(x - psi * mean) / (psi**2 * S**2 + sig**2)

    model = ScoreModel(score, sde, prediction="score")
    mean = torch.tensor([[2.0, -1.0]])
    fixed = ScoreModel(lambda x, t: score(x, t, mean=mean), sde, prediction="score")
    x = sample_ode(model, (500, 2), steps=100, seed=0, denoise=True, extra_args={"mean": mean}, progress=False)
    assert torch.equal(x, sample_ode(fixed, (500, 2), steps=100, seed=0, denoise=True, progress=False))
    assert torch.allclose(x.mean(0), mean[0], atol=0.1)  # (Heun's bias grows with |mean|: 0.05 here)
    e = sample_euler_maruyama(model, (500, 2), steps=50, seed=0, denoise=True, extra_args={"mean": mean}, progress=False)
    assert torch.equal(e, sample_euler_maruyama(fixed, (500, 2), steps=50, seed=0, denoise=True, progress=False))
    other = sample_ode(model, (500, 2), steps=100, seed=0, extra_args={"mean": -mean}, progress=False)
    assert torch.allclose(other.mean(0), -mean[0], atol=0.1)
    with pytest.raises(TypeError, match="mean"):
        sample_ode(model, (4, 2), steps=2, progress=False)  # the model needs its conditioning
    with pytest.raises(TypeError, match="extra_args"):
        sample_ode(model, (4, 2), steps=2, extra_args=[mean], progress=False)


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
