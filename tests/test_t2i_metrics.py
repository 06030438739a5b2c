"""Image scores and prompt metrics against analytic ground truth.

A stub "UNet" predicts the exact epsilon of Gaussian data N(0, P_k) on a k-dimensional coordinate
subspace (under the model's DDPM table), with k chosen by the conditioning (k_c for the prompt,
k_u for the empty prompt). Then s_CFG is the exact CFG score, FLIPD at small t0 tends to
(1 - lambda) k_u + lambda k_c, and every metric has a closed form."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lidmem.text2image import TextToImageModel, cfg_flipd_at, image_flipd, prompt_metrics, score_images, step_metric
from lidmem.text2image.testing import tiny_components


pytestmark = pytest.mark.usefixtures("one_thread")


class GaussianSubspaceUNet(nn.Module):
    """eps(x, tau, emb) = sigma * (psi^2 P + sigma^2 I)^-1 x with P = diag(1 on the first k coords);
    k = k_cond where the embedding averages above 0.5 (our all-ones cond), else k_uncond (zeros, or a
    real layer-normed text embedding such as the empty prompt's)."""

    def __init__(self, alphas_cumprod: torch.Tensor, shape=(1, 4, 4), k_cond: int = 3, k_uncond: int = 10) -> None:
        super().__init__()
        self.config = SimpleNamespace(sample_size=shape[1], in_channels=shape[0])
        self.dummy = nn.Parameter(torch.zeros(()))
        self.register_buffer("ac", alphas_cumprod.double())
        self.shape, self.k_cond, self.k_uncond = shape, k_cond, k_uncond

    def forward(self, sample, timestep, encoder_hidden_states):
        n = sample.shape[0]
        tau = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1).expand(n)
        lo = tau.floor().long().clamp(max=len(self.ac) - 2)
        w = tau - lo
        ab = torch.exp((1 - w) * self.ac[lo].log() + w * self.ac[lo + 1].log())
        sigma = (1 - ab).sqrt().to(sample.dtype)[:, None]
        psi2 = ab.to(sample.dtype)[:, None]
        d = sample[0].numel()
        k = torch.where(encoder_hidden_states.mean((1, 2)) > 0.5, self.k_cond, self.k_uncond)
        on = (torch.arange(d)[None, :] < k[:, None]).to(sample.dtype)
        var = on * psi2 + sigma**2
        eps = sigma * sample.reshape(n, -1) / var
        return SimpleNamespace(sample=eps.reshape(sample.shape) + 0 * self.dummy)


@pytest.fixture(scope="module")
def stub():
    comps = tiny_components(seed=0, latent=False)
    unet = GaussianSubspaceUNet(torch.as_tensor(comps["scheduler"].alphas_cumprod))
    model = TextToImageModel(unet, comps["text_encoder"], comps["tokenizer"], comps["scheduler"])
    cond = torch.ones(1, 16, 32)
    uncond = torch.zeros(1, 16, 32)
    return model, cond, uncond


def _exact_flipd(model, x_t, t, lam, k_c=3, k_u=10):
    tt = torch.tensor(t, dtype=torch.float64)
    psi2, s2 = float(model.sde.psi(tt)) ** 2, float(model.sde.sigma(tt)) ** 2
    d = x_t[0].numel()
    xf = x_t.reshape(len(x_t), -1).double()

    def score_and_trace(k):
        on = (torch.arange(d) < k).double()
        var = on * psi2 + s2
        return -xf / var, -(1 / var).sum()

    su, tu = score_and_trace(k_u)
    sc, tc = score_and_trace(k_c)
    s = (1 - lam) * su + lam * sc
    return d + s2 * ((1 - lam) * tu + lam * tc + s.pow(2).sum(1))


def test_cfg_flipd_matches_closed_form_and_recovers_dimension(stub):
    model, cond, uncond = stub
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(64, 1, 4, 4)
    x0.reshape(64, -1)[:, :3] = torch.randn(64, 3, generator=g)  # on the conditional subspace
    for lam, t in ((1.0, 0.02), (0.0, 0.02), (2.5, 0.05)):
        psi = float(model.sde.psi(torch.tensor(t, dtype=torch.float64)))
        x_t = psi * x0
        with torch.no_grad():
            exact = cfg_flipd_at(model, x_t, t, cond, uncond, lam, trace="exact")
            hutch = cfg_flipd_at(model, x_t, t, cond, uncond, lam, n_probes=1, seed=g)
        truth = _exact_flipd(model, x_t, t, lam)
        torch.testing.assert_close(exact.double(), truth, rtol=1e-4, atol=1e-3)
        assert abs(float(hutch.mean() - truth.mean())) < 0.5  # unbiased with 1 probe
    # FLIPD -> LID: conditional model has LID 3, unconditional 10 (at small t0)
    with torch.no_grad():
        f_c = image_flipd(model, x0, cond, t0=0.01, inputs="latents", trace="exact")
        f_u = image_flipd(model, x0, None, t0=0.01, inputs="latents", trace="exact")
    assert abs(float(f_c.mean()) - 3) < 0.5
    assert abs(float(f_u.mean()) - 10) < 0.6


def test_step_metrics_closed_form(stub):
    model, cond, uncond = stub
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t, lam = 0.4, 3.0
    with torch.no_grad():
        s_u = model.score(x, t, None, uncond)
        s_c = model.score(x, t, cond, uncond, 1.0)
    s_cfg = (1 - lam) * s_u + lam * s_c
    s2 = float(model.sde.sigma(torch.tensor(t, dtype=torch.float64))) ** 2
    with torch.no_grad():
        a_cfg = step_metric(model, "a_cfg", x, t, cond, uncond, lam)
        a_scfg = step_metric(model, "a_scfg", x, t, cond, uncond, lam)
        wen = step_metric(model, "wen", x, t, cond, uncond, lam)
        same = step_metric(model, "a_cfg", x, t, uncond, uncond, lam)
    torch.testing.assert_close(a_cfg, s2 * (s_cfg - s_u).flatten(1).pow(2).sum(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a_scfg, s2 * s_cfg.flatten(1).pow(2).sum(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(wen, s2**0.5 * (s_c - s_u).flatten(1).norm(dim=1), rtol=1e-4, atol=1e-5)
    assert float(same.abs().max()) == 0.0 and float(a_cfg.min()) > 0


@pytest.fixture(scope="module")
def tiny():
    return TextToImageModel(**tiny_components(seed=0, latent=True))


def test_prompt_metrics_signs_and_estimator(tiny):
    df = prompt_metrics(tiny, ["", "a red cat"], n_generations=2, num_inference_steps=10, guidance_scale=7.5, seed=0)
    assert list(df.columns) == ["prompt", "a_cfg", "a_scfg", "a_flipd", "wen"]
    empty, cat = df.iloc[0], df.iloc[1]
    # the empty prompt's conditional branch IS the unconditional one
    assert empty.a_cfg == 0.0 and empty.wen == 0.0
    assert cat.a_cfg > 0 and cat.wen > 0 and cat.a_scfg > 0
    assert df.attrs["higher_is_memorized"] == {"a_cfg": True, "a_scfg": True, "a_flipd": False, "wen": True}
    # A^FLIPD averages FLIPD_CFG over exactly the DDIM states with 0.01 <= t <= 0.2: here timestep
    # 101; the last step (timestep 1, t = 0.001) is below the default flipd_t_min
    cond, uncond = tiny.encode_prompt("a red cat")
    states = []
    tiny.sample(cond, uncond[:1], n=2, num_inference_steps=10, guidance_scale=7.5, seed=0, callback=lambda s: states.append((s["x"], s["t"], s["timestep"])))
    assert [k for _, t, k in states if t <= 0.2] == [101, 1]
    used = [(x, t) for x, t, k in states if 0.01 <= t <= 0.2]
    assert len(used) == 1 and df.attrs["flipd_t_min"] == 0.01
    # flipd_t_min=0: the paper's (0, 0.2], both steps
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        both = torch.cat([cfg_flipd_at(tiny, x, t, cond, uncond[:1], 7.5, seed=g) for x, t, k in states if t <= 0.2]).mean()
    paper = prompt_metrics(tiny, ["a red cat"], metrics=["a_flipd"], n_generations=2, num_inference_steps=10, seed=0, flipd_t_min=0.0)
    assert abs(float(both) - paper.a_flipd.iloc[0]) < 1e-3 * abs(float(both))
    # (Hutchinson probes depend on the batch: compare with the prompt alone)
    alone = prompt_metrics(tiny, ["a red cat"], metrics=["a_flipd"], n_generations=2, num_inference_steps=10, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        manual = torch.cat([cfg_flipd_at(tiny, x, t, cond, uncond[:1], 7.5, seed=g) for x, t in used]).mean()
    assert abs(float(manual) - alone.a_flipd.iloc[0]) < 1e-3 * abs(float(manual))
    assert abs(float(manual) - cat.a_flipd) < 0.05 * abs(float(manual))
    # flipd_point="denoised": FLIPD_CFG at x_t - sigma eps_CFG(x_t) on the same states
    den = prompt_metrics(tiny, ["a red cat"], metrics=["a_flipd"], n_generations=2, num_inference_steps=10, seed=0, flipd_point="denoised")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        manual_den = torch.cat([step_metric(tiny, "a_flipd", x, t, cond, uncond[:1], 7.5, seed=g, flipd_point="denoised") for x, t in used]).mean()
    assert abs(float(manual_den) - den.a_flipd.iloc[0]) < 1e-3 * abs(float(manual_den))
    assert den.attrs["flipd_point"] == "denoised"
    # deterministic under the seed; batching prompts changes nothing but the probes
    again = prompt_metrics(tiny, ["a red cat", "a dog", ""], n_generations=2, num_inference_steps=10, seed=0, batch_size=1)
    assert again.a_cfg.iloc[0] == pytest.approx(cat.a_cfg, rel=1e-5)
    assert again.wen.iloc[0] == pytest.approx(cat.wen, rel=1e-5)
    assert again.a_scfg.iloc[2] == pytest.approx(empty.a_scfg, rel=1e-5)
    with pytest.raises(ValueError, match="no DDIM step"):
        prompt_metrics(tiny, ["a"], metrics=["a_flipd"], num_inference_steps=2, flipd_t_max=1e-4, flipd_t_min=0.0)
    with pytest.raises(ValueError, match="flipd_t_min=0.3 must be smaller than flipd_t_max=0.2"):
        prompt_metrics(tiny, ["a"], metrics=["a_flipd"], flipd_t_min=0.3)


def test_score_images_table_and_cfg_norm(tiny):
    imgs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    df = score_images(tiny, imgs, ["a cat", "a dog", ""], batch_size=2)
    assert list(df.columns) == ["caption", "flipd_uncond", "flipd_cond", "cfg_norm"]
    assert df.attrs["space"] == "latents"
    # the empty caption's conditional score is the unconditional one: zero CFG norm, equal FLIPDs
    assert df.cfg_norm.iloc[2] == 0.0 and df.cfg_norm.iloc[0] > 0
    assert df.flipd_cond.iloc[2] == pytest.approx(df.flipd_uncond.iloc[2], rel=1e-5)
    with pytest.raises(ValueError, match="captions"):
        score_images(tiny, imgs, None, metrics=["cfg_norm"])
