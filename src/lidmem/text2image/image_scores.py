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

from ..defaults import CFG_T0, EULER_STEPS, FLIPD_T0
from .._validation import check_choice, check_positive_int, check_t0, renamed_argument
from ..diffusion.sampling import ode_derivative
from ..estimators.flipd import flipd, flipd_at
from ..utils import chunk_slices, progress as _progress
from .adapters import TextToImageModel

__all__ = ["cfg_flipd_at", "image_flipd", "cfg_norm_after_euler", "score_images", "IMAGE_METRICS"]

IMAGE_METRICS: tuple[str, ...] = ("flipd_uncond", "flipd_cond", "cfg_norm")


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
    seed: int | torch.Generator | None = 0,
    create_graph: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FLIPD of the (CFG) score at an already-noised point ``x_t`` (eq. 14 / 26).

    ``FLIPD = d + sigma(t)^2 (tr grad s_CFG(x_t; t, c) + ||s_CFG(x_t; t, c)||^2)
    = d - sigma(t) tr grad eps_CFG(x_t) + ||eps_CFG(x_t)||^2``, with the Jacobian through BOTH
    CFG branches, ``(1 - lambda) grad s(., empty) + lambda grad s(., c)``. (Eq. 14 is written for the
    DDIM variable x~ = x / psi; the value is the same.) This is the core estimator
    :func:`lidmem.estimators.flipd_at` with the conditioning
    ``extra_args={"cond": cond, "uncond": uncond, "guidance_scale": guidance_scale}``.

    Parameters
    ----------
    x_t : Tensor of shape (n, *model.sample_shape)
    t : float in (0, 1]
    trace : {"hutchinson", "exact"}
        "exact" takes d Jacobian-vector products per sample (tiny models only).
    seed : int, torch.Generator or None, default=0
        Source of the Hutchinson probes (an int seeds a fresh generator; a generator is consumed).
    create_graph : bool or None, default=None
        Keep the result differentiable with respect to ``cond`` (attribution, embedding
        optimisation); None follows ``torch.is_grad_enabled()``.
    generator : torch.Generator, optional
        Deprecated alias of ``seed``.

    Returns
    -------
    Tensor of shape (n,), float32 or wider
    """
    seed = renamed_argument(seed, generator, new="seed", old="generator", default=0, func="cfg_flipd_at")
    check_choice(trace, "trace", ("hutchinson", "exact"))
    graph = torch.is_grad_enabled() if create_graph is None else bool(create_graph)
    args = {"cond": cond, "uncond": uncond, "guidance_scale": guidance_scale}
    return flipd_at(
        model, x_t.detach(), t, trace=trace, n_probes=n_probes, probe=probe, seed=seed,
        extra_args=args, create_graph=graph,
    )


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
    t0: float = FLIPD_T0,
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
    t0 : float, default=0.05 (:data:`lidmem.defaults.FLIPD_T0`)
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
    if captions is not None:
        cond, uncond = _captions_embeds(model, captions, n)
        args = {"cond": cond, "uncond": uncond, "guidance_scale": guidance_scale}
    else:
        args = {"uncond": model.unconditional_embeds(1)}
    # not differentiable (create_graph=False): the JVPs otherwise keep an autograd graph through
    # the network's parameters for every chunk of the trace (16 GB for 64 images of the shipped model)
    out = flipd(model, x, t0, trace=trace, n_probes=n_probes, probe=probe, seed=seed, batch_size=bs, progress=progress, extra_args=args)
    return out.cpu()


def cfg_norm_after_euler(
    model: TextToImageModel,
    images: Any,
    captions: Sequence[str] | torch.Tensor,
    *,
    t0: float = CFG_T0,
    euler_steps: int = EULER_STEPS,
    inputs: str = "images",
    batch_size: int = 8,
    progress: bool | None = None,
    n_steps: int | None = None,
) -> torch.Tensor:
    """CFG vector norm of training images (App. C.1).

    From x at t = 0, take ``euler_steps`` Euler steps of the probability-flow ODE
    ``dx/dt = f(t) x - g(t)^2 / 2 s(x; t, c)`` (conditional score) to ``t0``, then return
    ``||s(x_t0; t0, c) - s(x_t0; t0, empty)||`` (score units). High = memorized. ``n_steps`` is
    the deprecated alias of ``euler_steps`` (the name of this setting in ``score_images``,
    ``score_dataset`` and the CLI's ``--euler-steps``).

    Returns
    -------
    Tensor of shape (n,), float32
    """
    euler_steps = renamed_argument(euler_steps, n_steps, new="euler_steps", old="n_steps", default=3, func="cfg_norm_after_euler")
    t0 = check_t0(t0)
    k = check_positive_int(euler_steps, "euler_steps")
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
                # forward in time from t = 0 (Euler), times in float64 like the UNet's timesteps
                t, dt = ts[i].expand(xb.shape[0]), float(ts[i + 1] - ts[i])
                drift, _ = ode_derivative(model, xb, t, extra_args={"cond": c, "guidance_scale": 1.0})
                xb = xb + drift * dt
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
    flipd_t0: float = FLIPD_T0,
    cfg_t0: float = CFG_T0,
    euler_steps: int = EULER_STEPS,
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
        cols["cfg_norm"] = cfg_norm_after_euler(model, x, captions, t0=cfg_t0, euler_steps=euler_steps, inputs="latents", batch_size=batch_size, progress=progress).numpy()
    df = pd.DataFrame(cols)
    if captions is not None and not isinstance(captions, torch.Tensor):
        caps = [captions] * len(df) if isinstance(captions, str) else list(captions)
        df.insert(0, "caption", caps if len(caps) == len(df) else caps * len(df))
    df.attrs.update(
        {"flipd_t0": flipd_t0, "cfg_t0": cfg_t0, "euler_steps": euler_steps, "guidance_scale": guidance_scale, "trace": trace, "n_probes": n_probes, "seed": seed, "space": "latents" if model.is_latent else "pixels"}
    )
    return df
