"""SDE closed forms and the score adapter, checked against analytic Gaussian scores."""

import math

import numpy as np
import pytest
import torch

from lidmem import DDPMSchedule, ScoreModel, VESDE, VPSDE
from lidmem.diffusion import sde_from_config


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), DDPMSchedule.scaled_linear(), DDPMSchedule.linear()])
def test_linear_drift_consistency(sde):
    """f = d log psi/dt and g^2 = d sigma^2/dt - 2 f sigma^2, checked by finite differences."""
    t = torch.tensor([0.11, 0.37, 0.58, 0.93], dtype=torch.float64)
    h = 1e-6
    dlogpsi = (torch.log(sde.psi(t + h)) - torch.log(sde.psi(t - h))) / (2 * h)
    dsig2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    f = sde.drift_coef(t)
    torch.testing.assert_close(f, dlogpsi, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sde.diffusion_sq(t), dsig2 - 2 * f * sde.sigma(t) ** 2, rtol=1e-4, atol=1e-6)


def test_vp_closed_form():
    sde = VPSDE(0.1, 20.0)
    t = torch.tensor([0.5], dtype=torch.float64)
    B = 0.1 * 0.5 + 0.5 * 19.9 * 0.25
    assert float(sde.psi(t)) == pytest.approx(math.exp(-B / 2))
    assert float(sde.sigma(t)) == pytest.approx(math.sqrt(1 - math.exp(-B)))


def test_ddpm_matches_table_at_integer_steps():
    sched = DDPMSchedule.scaled_linear(1000)
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ab = np.cumprod(1 - betas)
    k = np.array([0, 10, 500, 999])
    t = torch.tensor(k / 999.0, dtype=torch.float64)
    np.testing.assert_allclose(sched.psi(t).numpy() ** 2, ab[k], rtol=1e-9)
    np.testing.assert_allclose(sched.model_time(t).numpy(), k, atol=1e-9)


def test_sde_config_roundtrip():
    for sde in [VPSDE(0.2, 10.0), VESDE(0.02, 30.0), DDPMSchedule.linear(50)]:
        again = sde_from_config(sde.to_config())
        t = torch.linspace(0.01, 1, 7, dtype=torch.float64)
        torch.testing.assert_close(again.sigma(t), sde.sigma(t))
    with pytest.raises(ValueError, match="unknown SDE type"):
        sde_from_config({"type": "nope"})


@pytest.mark.parametrize("prediction", ["score", "epsilon", "x0", "v"])
def test_adapter_recovers_gaussian_score(prediction):
    """For data N(0, I_d) the true score at time t is -x / (psi^2 + sigma^2); every
    parametrisation of the same exact predictor must give it."""
    sde = VPSDE()
    torch.manual_seed(0)
    x = torch.randn(16, 3, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    psi, sig = sde.psi(t)[:, None], sde.sigma(t)[:, None]
    var = psi**2 + sig**2
    true_score = -x / var

    def net(xx, tt):
        s = -xx / var
        if prediction == "score":
            return s
        eps = -sig * s
        x0 = (xx - sig * eps) / psi
        if prediction == "epsilon":
            return eps
        if prediction == "x0":
            return x0
        return psi * eps - sig * x0

    model = ScoreModel(net, sde, prediction=prediction)
    torch.testing.assert_close(model(x, t), true_score)


def test_adapter_errors():
    with pytest.raises(ValueError, match="prediction"):
        ScoreModel(lambda x, t: x, VPSDE(), prediction="noise")
    with pytest.raises(ValueError, match="variance-preserving"):
        ScoreModel(lambda x, t: x, VESDE(), prediction="v")
    with pytest.raises(TypeError, match="sde"):
        ScoreModel(lambda x, t: x, "vp")
