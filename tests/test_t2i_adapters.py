"""TextToImageModel on tiny random diffusers components: the CFG score equals diffusers' own
guided prediction (order of the batch halves), DDIM sampling equals StableDiffusionPipeline,
the core FLIPD with the model's conditioning equals a dense Jacobian's trace with both branches
(and its create_graph gradient a finite difference), shapes, loading."""

from __future__ import annotations

import pytest
import torch

from lidmem.estimators import flipd, flipd_at
from lidmem.text2image import TextToImageModel, cfg_flipd_at, load_text2image
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
    # the model itself is the conditional score model: model(x, t, **extra_args) is s_CFG
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond=cond, uncond=uncond, guidance_scale=lam), score, rtol=1e-4, atol=1e-4)


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


def test_conditional_flipd_equals_dense_jacobian_with_both_branches():
    """The core estimator with extra_args on the text-to-image model: eq. 6 with the dense Jacobian
    of s_CFG, (1 - lambda) J_u + lambda J_c, per point (per-point embeddings chunked and repeated)."""
    comps = tiny_components(seed=1, latent=False, sample_size=4)
    model = TextToImageModel(**comps)
    d = model.dim
    assert d == 48
    cond, uncond = model.encode_prompt(["a red cat", "a blue dog"])
    lam, t = 4.0, 0.3
    x_t = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(2))

    def jac(i, guidance):
        f = lambda v: model(v.reshape(1, *model.sample_shape), t, cond[i : i + 1], uncond[i : i + 1], guidance).reshape(-1)  # noqa: E731
        return torch.autograd.functional.jacobian(f, x_t[i].reshape(-1))

    sigma2 = float(model.sde.sigma(torch.tensor(t, dtype=torch.float64))) ** 2
    dense = []
    for i in range(2):
        j_cfg, j_u, j_c = jac(i, lam), jac(i, 0.0), jac(i, 1.0)
        torch.testing.assert_close(j_cfg, (1 - lam) * j_u + lam * j_c, rtol=1e-3, atol=1e-3)
        with torch.no_grad():
            s = model(x_t[i : i + 1], t, cond[i : i + 1], uncond[i : i + 1], lam)
        dense.append(d + sigma2 * (torch.trace(j_cfg) + s.pow(2).sum()))
        # a JVP that froze the unconditional branch would miss (1 - lam) tr J_u
        frozen = d + sigma2 * (lam * torch.trace(j_c) + s.pow(2).sum())
        assert abs(float(frozen - dense[-1])) > 1.0
    dense = torch.stack(dense).double()
    args = {"cond": cond, "uncond": uncond, "guidance_scale": lam}
    # batch_size=1: the per-point embeddings must follow their point through the chunks
    exact = flipd_at(model, x_t, t, extra_args=args, batch_size=1)
    torch.testing.assert_close(exact.double(), dense, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(flipd_at(model, x_t, t, extra_args=args, ad="reverse").double(), dense, rtol=1e-4, atol=1e-2)
    # flipd at clean points is flipd_at at psi(t) x
    psi = float(model.sde.psi(torch.tensor(t, dtype=torch.float64)))
    torch.testing.assert_close(flipd(model, x_t / psi, t, extra_args=args).double(), dense, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(cfg_flipd_at(model, x_t, t, cond, uncond, lam, trace="exact").double(), dense, rtol=1e-4, atol=1e-2)
    # swapping the prompts between the points changes the answer (the rows are not mixed up)
    swapped = flipd_at(model, x_t, t, extra_args={**args, "cond": cond.flip(0)})
    assert float((swapped.double() - dense).abs().max()) > 0.1
    # Hutchinson with many probes agrees on average
    hutch = flipd_at(model, x_t, t, extra_args=args, trace="hutchinson", n_probes=256)
    assert float((hutch.double() - dense).abs().max()) < 0.1 * float(dense.abs().max()) + 0.5


@pytest.mark.parametrize("ad", ["forward", "reverse"])
def test_flipd_gradient_wrt_conditioning_matches_finite_difference(ad):
    """create_graph=True: d FLIPD / d cond by autograd equals a central difference (float64)."""
    comps = tiny_components(seed=1, latent=False, sample_size=4)
    model = TextToImageModel(**comps).double()
    cond, uncond = model.encode_prompt("a red cat")
    x_t = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    direction = torch.randn(cond.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t, lam = 0.2, 3.0

    def value(c):
        return flipd_at(model, x_t, t, extra_args={"cond": c, "uncond": uncond, "guidance_scale": lam}, trace="hutchinson", n_probes=2, seed=0, ad=ad, create_graph=True).sum()

    c = cond.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(value(c), c)
    h = 1e-4
    with torch.no_grad():
        fd = (value(cond + h * direction) - value(cond - h * direction)) / (2 * h)
    analytic = (grad * direction).sum()
    assert abs(float(analytic)) > 1e-3
    torch.testing.assert_close(analytic, fd, rtol=1e-4, atol=1e-6)
    # without create_graph the result carries no graph
    assert not flipd_at(model, x_t, t, extra_args={"cond": c, "uncond": uncond, "guidance_scale": lam}).requires_grad


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
