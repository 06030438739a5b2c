"""Samplers for lidmem score models: the probability-flow ODE (Euler, Heun) and Euler–Maruyama.

Conventions: ``model(x, t)`` returns the score s(x, t) for ``x`` of shape ``(n, ...)`` and
continuous times ``t`` of shape ``(n,)`` in [0, 1], and has a ``.sde`` attribute
(a :class:`~lidmem.diffusion.score.ScoreModel` does). With the forward SDE
``dx = f(t) x dt + g(t) dW`` (Song et al. 2021):

- probability-flow ODE: ``dx/dt = f(t) x - g(t)^2 / 2 * s(x, t)``  (:func:`ode_derivative`);
- reverse SDE: ``dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dW-bar`` integrated backwards in time.

As in k-diffusion, the low-level integrators share one signature
``(model, x, ts, *, callback=None, progress=None, extra_args=None, <method knobs>)`` where ``ts``
is a decreasing time grid (from :func:`get_timesteps`) and ``callback`` receives a dict
``{"i", "t", "t_next", "x", "score"}`` after each step; :func:`sample_ode` and
:func:`sample_euler_maruyama` draw ``x_T`` from ``sde.prior_sampling`` and call them.
Conditioning ``extra_args`` (a mapping, e.g. ``{"cond": embeds, "guidance_scale": 7.5}``) is
passed unchanged to every model call as ``model(x, t, **extra_args)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .._validation import check_choice, check_device, check_positive_int, make_generator, renamed_argument
from ..utils import append_dims, progress as _progress
from .score import check_extra_args, time_tensor
from .sde import SDE

__all__ = [
    "get_timesteps",
    "ode_derivative",
    "integrate_ode",
    "integrate_euler_maruyama",
    "sample_ode",
    "sample_euler_maruyama",
]

Callback = Callable[[dict[str, Any]], None]
SPACINGS = ("karras", "log", "uniform")
ODE_METHODS = ("heun", "euler")


def _sde_of(model: Any) -> SDE:
    sde = getattr(model, "sde", None)
    if not isinstance(sde, SDE):
        raise TypeError(
            f"model must be a ScoreModel or a callable model(x, t) -> score with a lidmem SDE as `.sde`; "
            f"got {type(model).__name__} without one"
        )
    return sde


def _sigma_to_t(sde: SDE, sigmas: torch.Tensor, *, t_lo: float, t_hi: float) -> torch.Tensor:
    """Invert the (increasing) ``sde.sigma`` on ``[t_lo, t_hi]`` by bisection (60 halvings)."""
    lo = torch.full_like(sigmas, t_lo)
    hi = torch.full_like(sigmas, t_hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = sde.sigma(mid).double() < sigmas
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def get_timesteps(
    steps: int,
    *,
    t_start: float = 1.0,
    t_end: float = 1e-3,
    spacing: str = "karras",
    sde: SDE | None = None,
    rho: float = 7.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Decreasing time grid of shape ``(steps + 1,)`` from ``t_start`` to ``t_end``.

    Parameters
    ----------
    steps : int
    t_start, t_end : float
        ``0 < t_end < t_start <= 1``.
    spacing : {"karras", "log", "uniform"}, default="karras"
        ``"karras"``: the noise levels ``sigma_i`` follow Karras et al. (2022, eq. 5) with
        exponent ``rho`` between ``sigma(t_start)`` and ``sigma(t_end)``, mapped back to times
        through ``sde`` (needs ``sde``); works for VP and VE alike. ``"log"``: geometric in
        ``t``. ``"uniform"``: linear in ``t``.
    sde : SDE, optional
        Required for ``spacing="karras"``.
    rho : float, default=7.0
    """
    steps = check_positive_int(steps, "steps")
    check_choice(spacing, "spacing", SPACINGS)
    device = check_device(device)
    if not (0.0 < t_end < t_start <= 1.0):
        raise ValueError(f"need 0 < t_end < t_start <= 1; got t_end={t_end}, t_start={t_start}; try t_end=1e-3")
    if spacing == "log":
        return torch.logspace(math.log10(t_start), math.log10(t_end), steps + 1, dtype=torch.float64, device=device)
    if spacing == "uniform":
        return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64, device=device)
    if sde is None:
        raise ValueError("spacing='karras' needs the sde (sde=model.sde); or use spacing='log'")
    s_max = float(sde.sigma(torch.tensor(t_start, dtype=torch.float64)))
    s_min = float(sde.sigma(torch.tensor(t_end, dtype=torch.float64)))
    ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    sigmas = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    ts = _sigma_to_t(sde, sigmas, t_lo=t_end, t_hi=t_start)
    ts[0], ts[-1] = t_start, t_end
    return ts.to(device)


def ode_derivative(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability-flow drift ``f(t) x - g(t)^2 / 2 * s(x, t)`` and the score, both of ``x``'s shape.

    The one implementation of the probability-flow ODE's right-hand side (every ODE step in
    lidmem calls it). ``t`` has shape ``(n,)``; the score is ``model(x, t, **extra_args)``.
    """
    sde = _sde_of(model)
    score = model(x, t, **check_extra_args(extra_args))
    f = append_dims(sde.drift_coef(t).to(x.dtype), x.ndim)
    g2 = append_dims(sde.diffusion_sq(t).to(x.dtype), x.ndim)
    return f * x - 0.5 * g2 * score, score


def _full(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return time_tensor(float(t), x)


@torch.no_grad()
def integrate_ode(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    method: str = "heun",
    callback: Callback | None = None,
    progress: bool | None = None,
    extra_args: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``ts[0]`` to ``ts[-1]`` starting at ``x``.

    Parameters
    ----------
    model : ScoreModel or callable with ``.sde``
    x : Tensor of shape (n, ...)
        State at time ``ts[0]`` (not modified).
    ts : Tensor of shape (steps + 1,)
        Decreasing times in (0, 1].
    method : {"heun", "euler"}, default="heun"
        Heun (2nd order, 2 score evaluations per step except the last) or Euler.
    extra_args : mapping, optional
        Conditioning for every model call (``model(x, t, **extra_args)``).

    Returns
    -------
    Tensor of ``x``'s shape: the state at ``ts[-1]``.
    """
    check_choice(method, "method", ODE_METHODS)
    args = check_extra_args(extra_args)
    x = x.clone()
    for i in _progress(range(len(ts) - 1), total=len(ts) - 1, desc=f"ODE ({method})", disable=None if progress is None else not progress):
        t, t_next = _full(ts[i], x), _full(ts[i + 1], x)
        dt = float(ts[i + 1] - ts[i])
        d, score = ode_derivative(model, x, t, extra_args=args)
        x_next = x + d * dt
        if method == "heun":
            d_next, _ = ode_derivative(model, x_next, t_next, extra_args=args)
            x_next = x + 0.5 * (d + d_next) * dt
        x = x_next
        if callback is not None:
            callback({"i": i, "t": float(ts[i]), "t_next": float(ts[i + 1]), "x": x, "score": score})
    return x


@torch.no_grad()
def integrate_euler_maruyama(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    ts: torch.Tensor,
    *,
    seed: int | torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    extra_args: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate the reverse-time SDE from ``ts[0]`` to ``ts[-1]`` with Euler–Maruyama.

    Each step ``x <- x - [f x - g^2 s] |dt| + g sqrt(|dt|) z`` with ``z ~ N(0, I)`` drawn from
    ``seed`` (an int, a ``torch.Generator`` that is consumed, or None: torch's global generator).
    Returns the state at ``ts[-1]`` (``x``'s shape; ``x`` is not modified). ``extra_args`` is the
    conditioning of every model call, as in :func:`integrate_ode`. ``generator`` is the deprecated
    alias of ``seed``.
    """
    seed = renamed_argument(seed, generator, new="seed", old="generator", func="integrate_euler_maruyama")
    gen = None if seed is None else make_generator(seed, device=x.device)
    sde = _sde_of(model)
    args = check_extra_args(extra_args)
    x = x.clone()
    for i in _progress(range(len(ts) - 1), total=len(ts) - 1, desc="Euler-Maruyama", disable=None if progress is None else not progress):
        t = _full(ts[i], x)
        dt = float(ts[i] - ts[i + 1])
        score = model(x, t, **args)
        f = append_dims(sde.drift_coef(t).to(x.dtype), x.ndim)
        g2 = append_dims(sde.diffusion_sq(t).to(x.dtype), x.ndim)
        z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        x = x - (f * x - g2 * score) * dt + torch.sqrt(g2 * dt) * z
        if callback is not None:
            callback({"i": i, "t": float(ts[i]), "t_next": float(ts[i + 1]), "x": x, "score": score})
    return x


def _initial(model: Any, shape: tuple[int, ...], seed: int | torch.Generator | None, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Generator, SDE]:
    sde = _sde_of(model)
    if isinstance(shape, int) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints such as (n, d); got {shape!r}")
    if device is not None:
        device = check_device(device)
    else:
        params = list(model.parameters()) if hasattr(model, "parameters") else []
        device = params[0].device if params else torch.device("cpu")
    gen = make_generator(seed, device=device)
    return sde.prior_sampling(tuple(shape), generator=gen, device=device), gen, sde


def _finish(model: Any, x: torch.Tensor, t_end: float, denoise: bool, args: dict[str, Any]) -> torch.Tensor:
    if not denoise:
        return x
    denoiser = getattr(model, "denoise", None)
    if denoiser is None:
        sde = _sde_of(model)
        t = _full(torch.tensor(t_end), x)
        sigma = append_dims(sde.sigma(t).to(x.dtype), x.ndim)
        psi = append_dims(sde.psi(t).to(x.dtype), x.ndim)
        with torch.no_grad():
            return (x + sigma**2 * model(x, t, **args)) / psi
    with torch.no_grad():
        return denoiser(x, _full(torch.tensor(t_end), x), **args)


def sample_ode(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    *,
    steps: int = 100,
    t_end: float = 1e-3,
    method: str = "heun",
    spacing: str = "karras",
    denoise: bool = False,
    seed: int | torch.Generator | None = 0,
    callback: Callback | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    extra_args: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Generate samples by integrating the probability-flow ODE from ``x_1 ~ prior`` to ``t_end``.

    Parameters
    ----------
    model : ScoreModel or callable ``model(x, t) -> score`` with ``.sde``
    shape : tuple of int
        Output shape ``(n, d)`` or ``(n, c, h, w)``.
    steps : int, default=100
        Number of integration steps.
    t_end : float, default=1e-3
        Final time (the ODE is singular at 0). Samples carry noise of scale ``sigma(t_end)``
        unless ``denoise=True``.
    method : {"heun", "euler"}, default="heun"
    spacing : {"karras", "log", "uniform"}, default="karras"
        Time grid (see :func:`get_timesteps`).
    denoise : bool, default=False
        Apply Tweedie's denoiser ``(x + sigma^2 s) / psi`` at ``t_end`` to the result.
    seed : int, torch.Generator or None, default=0
        Randomness of ``x_1`` (the ODE itself is deterministic).
    callback : callable, optional
        Called after every step with ``{"i", "t", "t_next", "x", "score"}``.
    progress : bool or None
        Progress bar (None: only on a terminal).
    device : optional
        Default: the model's device.
    extra_args : mapping, optional
        Conditioning for every model call (``model(x, t, **extra_args)``), the final denoising
        included.

    Returns
    -------
    Tensor of shape ``shape``.
    """
    x, _, sde = _initial(model, shape, seed, device)
    ts = get_timesteps(steps, t_end=t_end, spacing=spacing, sde=sde, device=x.device)
    args = check_extra_args(extra_args)
    x = integrate_ode(model, x, ts, method=method, callback=callback, progress=progress, extra_args=args)
    return _finish(model, x, t_end, denoise, args)


def sample_euler_maruyama(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    *,
    steps: int = 1000,
    t_end: float = 1e-3,
    spacing: str = "karras",
    denoise: bool = False,
    seed: int | torch.Generator | None = 0,
    callback: Callback | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    extra_args: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Generate samples with the reverse SDE (Euler–Maruyama) from ``x_1 ~ prior`` to ``t_end``.

    Same parameters as :func:`sample_ode` (``extra_args`` included); ``seed`` drives both ``x_1`` and the per-step noise.
    Returns a tensor of shape ``shape``.
    """
    x, gen, sde = _initial(model, shape, seed, device)
    ts = get_timesteps(steps, t_end=t_end, spacing=spacing, sde=sde, device=x.device)
    args = check_extra_args(extra_args)
    x = integrate_euler_maruyama(model, x, ts, seed=gen, callback=callback, progress=progress, extra_args=args)
    return _finish(model, x, t_end, denoise, args)
