"""Memorization scores of images under a text-to-image model (paper Sec. 4.1, Fig. 6, App. C.1).

- Unconditional FLIPD (eq. 6 with s(x; t, empty)): needs no caption.
- Conditional FLIPD given the image's caption (s(x; t, c), or s_CFG with ``guidance_scale``).
- CFG norm after k = 3 Euler steps of the probability-flow ODE from the image (t = 0) to
  t0 = 0.01 with the conditional score, then ``||s(x_t0; t0, c) - s(x_t0; t0, empty)||``.

All run in model space: VAE latents for latent diffusion (images are encoded first), pixels
otherwise. Low FLIPD / high CFG norm = memorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._validation import check_choice, check_positive_int, check_t0, make_generator
from ..utils import chunk_slices, progress as _progress
from ..estimators import _autodiff
from .adapters import TextToImageModel

__all__ = ["cfg_flipd_at", "image_flipd", "cfg_norm_after_euler", "score_images", "IMAGE_METRICS"]

IMAGE_METRICS: tuple[str, ...] = ("flipd_uncond", "flipd_cond", "cfg_norm")


def _rep(e: torch.Tensor | None, n: int, m: int) -> torch.Tensor | None:
    """Repeat per-sample embeddings (batch n) m times each; batch-1 embeddings broadcast as they are."""
    if e is None or e.shape[0] == 1 or m == 1:
        return e
    if e.shape[0] != n:
        raise ValueError(f"embeddings have batch size {e.shape[0]} but x has {n} samples; pass one per sample or a single one")
    return e.repeat_interleave(m, dim=0)


#: Rows per batched JVP of the exact trace (bounds its memory: ~1 GB for the shipped 8x8 model).
_EXACT_ROWS = 1024


def cfg_flipd_at(
    model: TextToImageModel,
    x_t: torch.Tensor,
    t: float,
    cond: torch.Tensor | None,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    *,
    trace: str = "hutchinson",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FLIPD of the (CFG) score at an already-noised point ``x_t`` (eq. 14 / 26).

    ``FLIPD = d + sigma(t)^2 (tr grad s_CFG(x_t; t, c) + ||s_CFG(x_t; t, c)||^2)
    = d - sigma(t) tr grad eps_CFG(x_t) + ||eps_CFG(x_t)||^2``, with the Jacobian through BOTH
    CFG branches, ``(1 - lambda) grad s(., empty) + lambda grad s(., c)``. (Eq. 14 is written for the
    DDIM variable x~ = x / psi; the value is the same.) Differentiable with respect to ``cond``.

    Parameters
    ----------
    x_t : Tensor of shape (n, *model.sample_shape)
    t : float in (0, 1]
    trace : {"hutchinson", "exact"}
        "exact" takes d Jacobian-vector products per sample (tiny models only).

    Returns
    -------
    Tensor of shape (n,), float32
    """
    check_choice(trace, "trace", ("hutchinson", "exact"))
    check_choice(probe, "probe", ("rademacher", "gaussian"))
    n = x_t.shape[0]
    shape = tuple(x_t.shape[1:])
    d = x_t[0].numel()
    x_t = x_t.detach()
    sigma = float(model.sde.sigma(torch.tensor(float(t), dtype=torch.float64)))
    if trace == "hutchinson":
        p = check_positive_int(n_probes, "n_probes")
        g = generator if generator is not None else make_generator(0)
        if probe == "rademacher":
            v = torch.randint(0, 2, (n * p, *shape), generator=g).to(torch.float32) * 2 - 1
        else:
            v = torch.randn((n * p, *shape), generator=g)
        blocks = [(v.to(device=x_t.device, dtype=x_t.dtype), p)]
    else:
        eye = torch.eye(d, device=x_t.device, dtype=x_t.dtype)
        # at most ~_EXACT_ROWS rows per JVP batch (n samples x a chunk of basis directions)
        per = max(1, _EXACT_ROWS // n)
        blocks = ((eye[sl].repeat(n, 1).reshape(n * (sl.stop - sl.start), *shape), sl.stop - sl.start) for sl in chunk_slices(d, per))
    trace_sum = torch.zeros(n, device=x_t.device, dtype=torch.float32)
    eps_sq = None
    for tang, m in blocks:
        primals = x_t.repeat_interleave(m, dim=0)
        c = _rep(cond, n, m)
        u = _rep(uncond, n, m)

        def f(inp: torch.Tensor) -> torch.Tensor:
            return model.epsilon(inp, t, c, u, guidance_scale)

        # minimal forward-mode rules under no_grad (two-pass floor); PyTorch's when differentiating
        out, jv = _autodiff.jvp(f, model.unet, primals, tang)
        vjv = (tang.float() * jv.float()).reshape(n, m, -1).sum(-1)
        trace_sum = trace_sum + (vjv.mean(1) if trace == "hutchinson" else vjv.sum(1))
        if eps_sq is None:
            eps_sq = out.float().reshape(n, m, -1)[:, 0].pow(2).sum(-1)
    return d - sigma * trace_sum + eps_sq


def _model_space(model: TextToImageModel, images: Any, inputs: str) -> torch.Tensor:
    check_choice(inputs, "inputs", ("images", "latents"))
    if not isinstance(images, torch.Tensor):
        import numpy as np

        images = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, c, H, W); got {tuple(images.shape)}")
    if inputs == "latents" and model.vae is not None:
        if images.shape[1] != model.sample_shape[0]:
            raise ValueError(f"latents must have {model.sample_shape[0]} channels; got shape {tuple(images.shape)}")
        return images.to(device=model.device, dtype=model.dtype)
    if model.vae is None:
        if tuple(images.shape[1:]) != model.sample_shape:
            raise ValueError(f"model-space inputs must have shape (n, {', '.join(map(str, model.sample_shape))}); got {tuple(images.shape)}")
        return images.to(device=model.device, dtype=model.dtype)
    return model.encode_images(images)


def _captions_embeds(model: TextToImageModel, captions: Sequence[str] | torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if captions is None:
        raise ValueError("this metric needs captions (one per image); pass captions=[...]")
    if isinstance(captions, torch.Tensor):
        return captions, model.unconditional_embeds(1)
    caps = [captions] if isinstance(captions, str) else list(captions)
    if len(caps) not in (1, n):
        raise ValueError(f"captions has {len(caps)} entries for {n} images; pass one per image or a single one")
    cond, _ = model.encode_prompt(caps)
    return cond, model.unconditional_embeds(1)


def image_flipd(
    model: TextToImageModel,
    images: Any,
    captions: Sequence[str] | torch.Tensor | None = None,
    *,
    t0: float = 0.05,
    guidance_scale: float = 1.0,
    inputs: str = "images",
    trace: str = "hutchinson",
    n_probes: int = 1,
    probe: str = "rademacher",
    seed: int = 0,
    batch_size: int = 8,
    progress: bool | None = None,
) -> torch.Tensor:
    """FLIPD(x, t0) = d + sigma^2(t0) (tr grad s(psi(t0) x, t0) + ||s(psi(t0) x, t0)||^2) (eq. 6).

    Parameters
    ----------
    images : Tensor of shape (n, c, H, W)
        Pixels in [-1, 1] (``inputs="images"``; encoded by the VAE for latent models) or
        model-space latents (``inputs="latents"``).
    captions : list of str or Tensor (n or 1, L, D), optional
        None: unconditional FLIPD (s(x; t, empty)). Given: conditional FLIPD with
        s_CFG(x; t, c) at ``guidance_scale`` (1 = the plain conditional score).
    t0 : float, default=0.05
        The paper's Stable Diffusion setting (App. C.1).
    n_probes : int, default=1
        Hutchinson probes (1 at scale, as the paper).

    Returns
    -------
    Tensor of shape (n,), float32 (lower = more memorized; may be negative, ranks still hold).
    """
    t0 = check_t0(t0)
    x = _model_space(model, images, inputs)
    n = x.shape[0]
    bs = check_positive_int(batch_size, "batch_size")
    cond = uncond = None
    if captions is not None:
        cond, uncond = _captions_embeds(model, captions, n)
    else:
        uncond = model.unconditional_embeds(1)
    psi = float(model.sde.psi(torch.tensor(t0, dtype=torch.float64)))
    g = make_generator(seed)
    out = []
    for sl in _progress(list(chunk_slices(n, bs)), desc="FLIPD", disable=None if progress is None else not progress):
        c = None if cond is None else (cond if cond.shape[0] == 1 else cond[sl])
        # no_grad: the JVPs otherwise keep an autograd graph through the network's parameters
        # for every chunk of the trace (16 GB for 64 images of the shipped 8x8 model)
        with torch.no_grad():
            out.append(cfg_flipd_at(model, psi * x[sl], t0, c, uncond, guidance_scale if c is not None else 0.0, trace=trace, n_probes=n_probes, probe=probe, generator=g))
    return torch.cat(out).cpu()


def cfg_norm_after_euler(
    model: TextToImageModel,
    images: Any,
    captions: Sequence[str] | torch.Tensor,
    *,
    t0: float = 0.01,
    n_steps: int = 3,
    inputs: str = "images",
    batch_size: int = 8,
    progress: bool | None = None,
) -> torch.Tensor:
    """CFG vector norm of training images (App. C.1).

    From x at t = 0, take ``n_steps`` Euler steps of the probability-flow ODE
    ``dx/dt = f(t) x - g(t)^2 / 2 s(x; t, c)`` (conditional score) to ``t0``, then return
    ``||s(x_t0; t0, c) - s(x_t0; t0, empty)||`` (score units). High = memorized.

    Returns
    -------
    Tensor of shape (n,), float32
    """
    t0 = check_t0(t0)
    k = check_positive_int(n_steps, "n_steps")
    x = _model_space(model, images, inputs)
    n = x.shape[0]
    cond, uncond = _captions_embeds(model, captions, n)
    ts = torch.linspace(0.0, t0, k + 1, dtype=torch.float64)
    out = []
    for sl in _progress(list(chunk_slices(n, check_positive_int(batch_size, "batch_size"))), desc="CFG norm", disable=None if progress is None else not progress):
        c = cond if cond.shape[0] == 1 else cond[sl]
        xb = x[sl]
        with torch.no_grad():
            for i in range(k):
                t, dt = ts[i], float(ts[i + 1] - ts[i])
                s = model.score(xb, float(t), c, None, 1.0)
                drift = float(model.sde.drift_coef(t)) * xb - 0.5 * float(model.sde.diffusion_sq(t)) * s
                xb = xb + dt * drift
            out_u, out_c = model.branch_outputs(xb, t0, c, uncond)
            diff = model.output_to_score(out_c, xb, t0).float() - model.output_to_score(out_u, xb, t0).float()
        out.append(diff.reshape(diff.shape[0], -1).norm(dim=1))
    return torch.cat(out).cpu()


def score_images(
    model: TextToImageModel,
    images: Any,
    captions: Sequence[str] | None = None,
    *,
    metrics: Sequence[str] = IMAGE_METRICS,
    flipd_t0: float = 0.05,
    cfg_t0: float = 0.01,
    euler_steps: int = 3,
    guidance_scale: float = 1.0,
    inputs: str = "images",
    trace: str = "hutchinson",
    n_probes: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool | None = None,
) -> Any:
    """All image scores in one table (pandas DataFrame, one row per image).

    Columns: ``flipd_uncond`` (low = memorized), ``flipd_cond`` (low = memorized; needs captions),
    ``cfg_norm`` (high = memorized; needs captions). ``df.attrs`` records the settings.
    """
    import pandas as pd

    for m in metrics:
        check_choice(m, "metrics", IMAGE_METRICS)
    x = _model_space(model, images, inputs)
    cols: dict[str, Any] = {}
    common = dict(inputs="latents", trace=trace, n_probes=n_probes, seed=seed, batch_size=batch_size, progress=progress)
    if "flipd_uncond" in metrics:
        cols["flipd_uncond"] = image_flipd(model, x, None, t0=flipd_t0, **common).numpy()
    if "flipd_cond" in metrics:
        cols["flipd_cond"] = image_flipd(model, x, captions, t0=flipd_t0, guidance_scale=guidance_scale, **common).numpy()
    if "cfg_norm" in metrics:
        cols["cfg_norm"] = cfg_norm_after_euler(model, x, captions, t0=cfg_t0, n_steps=euler_steps, inputs="latents", batch_size=batch_size, progress=progress).numpy()
    df = pd.DataFrame(cols)
    if captions is not None and not isinstance(captions, torch.Tensor):
        caps = [captions] * len(df) if isinstance(captions, str) else list(captions)
        df.insert(0, "caption", caps if len(caps) == len(df) else caps * len(df))
    df.attrs.update(
        {"flipd_t0": flipd_t0, "cfg_t0": cfg_t0, "euler_steps": euler_steps, "guidance_scale": guidance_scale, "trace": trace, "n_probes": n_probes, "seed": seed, "space": "latents" if model.is_latent else "pixels"}
    )
    return df
