"""Deterministic DDIM sampling (eta = 0) of any lidmem score model on a DDPM schedule.

The update uses only lidmem's score ``s(x, t)``: at the integer timestep ``k`` (continuous
``t = k / (N - 1)``), ``eps = -sigma(t) s`` and ``x0 = (x + sigma^2 s) / psi``; then
``x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps``. The timestep grid, the final alpha-bar
and the clipping of ``x0`` follow a diffusers ``DDIMScheduler`` configuration (``timestep_spacing``,
``steps_offset``, ``set_alpha_to_one``, ``clip_sample``, ``clip_sample_range``), so a model
loaded from a diffusers folder reproduces ``DDIMPipeline(eta=0)`` from the same initial noise.
"""

from __future__ import annotations

from typing import Any

import torch

from ..diffusion.sde import DDPMSchedule

__all__ = ["sample_ddim", "ddim_timesteps"]


def ddim_timesteps(num_train_timesteps: int, steps: int, scheduler_config: dict[str, Any] | None = None) -> tuple[list[int], float | None]:
    """Integer timesteps (descending) of a DDIM run and the final alpha-bar (None: use the table's
    first entry), from a diffusers scheduler config (diffusers' ``DDIMScheduler.set_timesteps``)."""
    from diffusers import DDIMScheduler

    cfg = dict(scheduler_config or {})
    cfg["num_train_timesteps"] = num_train_timesteps
    sch = DDIMScheduler.from_config(cfg)
    sch.set_timesteps(int(steps))
    final = float(sch.final_alpha_cumprod)
    return [int(k) for k in sch.timesteps], final


def sample_ddim(
    model: Any,
    noise: torch.Tensor,
    steps: int,
    *,
    scheduler_config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Run deterministic DDIM from ``noise`` (the state at the first timestep) and return ``x_0``.

    Parameters
    ----------
    model : ScoreModel
        A lidmem score model whose ``sde`` is a :class:`~lidmem.diffusion.sde.DDPMSchedule`.
    noise : Tensor of shape (n, ...)
        Initial state (standard normal for a DDPM schedule).
    steps : int
        Number of DDIM steps.
    scheduler_config : dict, optional
        diffusers scheduler config (default: ``model.scheduler_config`` when the model was
        loaded from a diffusers folder, else DDIMScheduler's defaults).

    Returns
    -------
    Tensor of ``noise``'s shape: the final sample (model space: latents for latent models).
    """
    sde = getattr(model, "sde", None)
    if not isinstance(sde, DDPMSchedule):
        raise TypeError(f"sample_ddim needs a score model on a DDPMSchedule; got sde={sde!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    cfg = scheduler_config if scheduler_config is not None else getattr(model, "scheduler_config", None)
    cfg = dict(cfg or {})
    if cfg.get("thresholding"):
        raise ValueError("dynamic thresholding (scheduler thresholding=True) is not supported by sample_ddim")
    n_train = sde.num_train_timesteps
    timesteps, final = ddim_timesteps(n_train, steps, cfg)
    clip = bool(cfg.get("clip_sample", True))
    clip_range = float(cfg.get("clip_sample_range", 1.0))
    ab = sde.alphas_cumprod
    x = noise
    for k in timesteps:
        t = torch.full((x.shape[0],), k / (n_train - 1), dtype=torch.float64, device=x.device)
        with torch.no_grad():
            s = model(x, t)
        a_t = float(ab[k])
        sigma = (1.0 - a_t) ** 0.5
        eps = -sigma * s
        x0 = (x - sigma * eps) / a_t**0.5
        if clip:
            x0 = x0.clamp(-clip_range, clip_range)
        prev = k - n_train // steps  # diffusers' DDIMScheduler.step
        a_prev = float(ab[prev]) if prev >= 0 else final
        x = a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
    return x
