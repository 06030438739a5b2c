"""TextToImageModel on tiny random diffusers components: the CFG score equals diffusers' own
guided prediction (order of the batch halves), DDIM sampling equals StableDiffusionPipeline,
FLIPD through the CFG score equals a dense Jacobian's trace with both branches, shapes, loading."""

from __future__ import annotations

import pytest
import torch

from lidmem.text2image import TextToImageModel, cfg_flipd_at, load_text2image, math_attention
from lidmem.text2image.testing import tiny_components


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def comps():
    return tiny_components(seed=0, latent=True)


@pytest.fixture(scope="module")
def model(comps):
    return TextToImageModel(**comps)


def _pipeline(comps):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_encode_prompt_matches_pipeline(comps, model):
    pipe = _pipeline(comps)
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(["a red cat", "a photo of the car"], "cpu", 1, True)
    cond, uncond = model.encode_prompt(["a red cat", "a photo of the car"])
    assert cond.shape == (2, 16, 32) and uncond.shape == (2, 16, 32)
    torch.testing.assert_close(cond, pe)
    torch.testing.assert_close(uncond, ne)
    assert not torch.allclose(cond, uncond)


def test_cfg_epsilon_is_diffusers_guided_noise_pred(comps, model):
    """diffusers: noise_pred_uncond, noise_pred_text = unet(cat([x, x]), k, cat([neg, pos])).chunk(2)."""
    unet = comps["unet"]
    cond, uncond = model.encode_prompt("a red cat")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *model.sample_shape, generator=g)
    k, lam = 601, 7.5
    with torch.no_grad():
        out = unet(torch.cat([x, x]), k, encoder_hidden_states=torch.cat([uncond.expand(2, -1, -1), cond.expand(2, -1, -1)])).sample
        noise_uncond, noise_text = out.chunk(2)
        guided = noise_uncond + lam * (noise_text - noise_uncond)
        swapped = noise_text + lam * (noise_uncond - noise_text)
        t = model.timestep_to_time(k)
        mine = model.epsilon(x, t, cond, uncond, lam)
        score = model.score(x, t, cond, uncond, lam)
        eu, ec = model.branch_epsilons(x, t, cond, uncond)
    torch.testing.assert_close(mine, guided, rtol=1e-4, atol=1e-5)
    assert (mine - swapped).abs().max() > 100 * (mine - guided).abs().max()
    torch.testing.assert_close(eu, noise_uncond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ec, noise_text, rtol=1e-4, atol=1e-5)
    # score = -eps / sigma with sigma^2 = 1 - alpha-bar_k of the scheduler's real table
    sigma = (1 - comps["scheduler"].alphas_cumprod[k]).sqrt()
    torch.testing.assert_close(score, -guided / sigma, rtol=1e-4, atol=1e-4)
    # the ScoreModel for fixed conditioning gives the same score
    sm = model.score_model(cond, uncond, lam)
    with torch.no_grad():
        torch.testing.assert_close(sm(x, t), score, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_sampler_matches_stable_diffusion_pipeline(prediction_type):
    from diffusers import DDIMScheduler

    comps = tiny_components(seed=3)
    comps["scheduler"] = DDIMScheduler.from_config(comps["scheduler"].config, prediction_type=prediction_type)
    model = TextToImageModel(**comps)
    assert model.prediction == {"epsilon": "epsilon", "v_prediction": "v"}[prediction_type]
    latents = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    pipe = _pipeline(comps)
    ref = pipe(prompt="a blue dog", num_inference_steps=3, guidance_scale=5.0, latents=latents.clone(), output_type="latent", num_images_per_prompt=2).images
    cond, uncond = model.encode_prompt("a blue dog")
    mine = model.sample(cond, uncond, n=2, num_inference_steps=3, guidance_scale=5.0, latents=latents.clone())
    torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-4)


def test_cfg_flipd_trace_equals_dense_jacobian_with_both_branches():
    comps = tiny_components(seed=1, latent=False, sample_size=4)
    model = TextToImageModel(**comps)
    d = model.dim
    assert d == 48
    cond, uncond = model.encode_prompt("a red cat")
    lam, t = 4.0, 0.3
    x_t = torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(2))

    def jac(guidance):
        sm = model.score_model(cond, uncond, guidance)
        f = lambda v: sm(v.reshape(1, *model.sample_shape), t).reshape(-1)  # noqa: E731
        with math_attention():
            return torch.autograd.functional.jacobian(f, x_t.reshape(-1))

    j_cfg, j_u, j_c = jac(lam), jac(0.0), jac(1.0)
    torch.testing.assert_close(j_cfg, (1 - lam) * j_u + lam * j_c, rtol=1e-3, atol=1e-3)
    sigma2 = float(model.sde.sigma(torch.tensor(t, dtype=torch.float64))) ** 2
    with torch.no_grad():
        s = model.score(x_t, t, cond, uncond, lam)
    dense = d + sigma2 * (torch.trace(j_cfg) + s.pow(2).sum())
    with torch.no_grad():
        exact = cfg_flipd_at(model, x_t, t, cond, uncond, lam, trace="exact")
    torch.testing.assert_close(exact[0], dense.float(), rtol=1e-4, atol=1e-2)
    # a JVP that froze the unconditional branch would miss (1 - lam) tr J_u
    frozen = d + sigma2 * (lam * torch.trace(j_c) + s.pow(2).sum())
    assert abs(float(frozen - dense)) > 1.0
    # Hutchinson with many probes agrees on average
    with torch.no_grad():
        hutch = cfg_flipd_at(model, x_t, t, cond, uncond, lam, n_probes=256, generator=torch.Generator().manual_seed(0))
    assert abs(float(hutch[0] - dense)) < 0.1 * abs(float(sigma2 * torch.trace(j_cfg))) + 0.5


def test_estimators_flipd_works_on_the_score_model():
    flipd_mod = pytest.importorskip("lidmem.estimators.flipd")
    comps = tiny_components(seed=1, latent=False, sample_size=4)
    model = TextToImageModel(**comps)
    cond, uncond = model.encode_prompt("a dog")
    x = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(5))
    t0 = 0.05
    psi = float(model.sde.psi(torch.tensor(t0, dtype=torch.float64)))
    with torch.no_grad():
        theirs = flipd_mod.flipd(model.score_model(cond, uncond, 3.0), x, t0, trace="exact")
        mine = cfg_flipd_at(model, psi * x, t0, cond, uncond, 3.0, trace="exact")
    torch.testing.assert_close(theirs.float(), mine.float(), rtol=1e-3, atol=1e-2)


def test_latent_and_pixel_shapes_fp32(model):
    assert model.is_latent and model.sample_shape == (4, 8, 8) and model.image_shape == (3, 16, 16)
    assert model.dtype == torch.float32
    imgs = torch.rand(3, 3, 16, 16) * 2 - 1
    z = model.encode_images(imgs)
    assert z.shape == (3, 4, 8, 8) and z.dtype == torch.float32
    assert model.decode(z).shape == (3, 3, 16, 16)
    out = model.generate(["a cat", "a dog"], n_per_prompt=2, num_inference_steps=2)
    assert out.shape == (4, 3, 16, 16)
    pix = TextToImageModel(**tiny_components(seed=0, latent=False))
    assert not pix.is_latent and pix.image_shape == pix.sample_shape == (3, 8, 8)
    assert pix.generate("a cat", num_inference_steps=2).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="pixel-space model"):
        pix.encode_images(imgs)


def test_load_text2image_pipeline_folder_and_pixel_checkpoint(tmp_path, comps, model):
    _pipeline(comps).save_pretrained(tmp_path / "sd")
    loaded = load_text2image(tmp_path / "sd")
    assert loaded.dtype == torch.float32 and loaded.is_latent
    x = torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    cond, uncond = model.encode_prompt("a cat")
    cond2, uncond2 = loaded.encode_prompt("a cat")
    torch.testing.assert_close(cond2, cond)
    with torch.no_grad():
        torch.testing.assert_close(loaded.epsilon(x, 0.4, cond2, uncond2, 7.5), model.epsilon(x, 0.4, cond, uncond, 7.5))
    # a pixel-space checkpoint without vae/ (the layout of lidmem's small model)
    pix = tiny_components(seed=0, latent=False)
    folder = tmp_path / "pix"
    for name in ("unet", "text_encoder", "tokenizer", "scheduler"):
        pix[name].save_pretrained(folder / name)
    lp = load_text2image(str(folder))
    assert lp.vae is None and lp.sample_shape == (3, 8, 8)
    with pytest.raises(FileNotFoundError):
        load_text2image(tmp_path / "missing")
    with pytest.raises(ValueError, match="subfolders"):
        load_text2image(tmp_path)
    with pytest.raises(ValueError, match="float16"):
        load_text2image(folder, dtype="float16")


def test_input_validation(model):
    cond, uncond = model.encode_prompt(["a", "b"])
    x = torch.randn(3, *model.sample_shape)
    with pytest.raises(ValueError, match="batch size 2"):
        model.epsilon(x, 0.5, cond, uncond[:1], 2.0)
    with pytest.raises(TypeError, match="prompt"):
        model.encode_prompt(3)
    with pytest.raises(ValueError, match="negative_prompt"):
        model.encode_prompt(["a", "b"], ["x", "y", "z"])
