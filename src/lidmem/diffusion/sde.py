"""Forward SDEs with linear drift, as in the paper's eq. (5).

Every SDE here has the transition kernel

    p(x_t | x_0) = N(psi(t) x_0, sigma(t)^2 I),      t in [0, T], T = 1,

and the linear-drift form ``dx = f(t) x dt + g(t) dW`` with ``f = d log psi / dt`` and
``g^2 = d sigma^2 / dt - 2 f sigma^2``. Time ``t`` is always the *continuous* time in [0, 1];
what a network receives is ``sde.model_time(t)`` (identity for VP/VE, the fractional discrete
timestep ``t * (N - 1)`` for :class:`DDPMSchedule`).

All functions take ``t`` as a float or a tensor of shape ``(n,)`` and return tensors of the same
shape (float64 internally for accuracy, cast back to ``t``'s floating dtype).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

from .._validation import check_positive_int
from ..utils import append_dims

__all__ = ["SDE", "VPSDE", "VESDE", "DDPMSchedule", "sde_from_config"]


def _as_time(t: float | torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.tensor(float(t), dtype=dtype, device=device)


class SDE(abc.ABC):
    """A forward SDE with linear drift and Gaussian transition kernel N(psi(t) x0, sigma(t)^2 I)."""

    T: float = 1.0

    @abc.abstractmethod
    def psi(self, t: float | torch.Tensor) -> torch.Tensor:
        """Mean scaling psi(t) of the transition kernel."""

    @abc.abstractmethod
    def sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        """Standard deviation sigma(t) of the transition kernel."""

    @abc.abstractmethod
    def drift_coef(self, t: float | torch.Tensor) -> torch.Tensor:
        """f(t) in ``dx = f(t) x dt + g(t) dW``."""

    @abc.abstractmethod
    def diffusion_sq(self, t: float | torch.Tensor) -> torch.Tensor:
        """g(t)^2 in ``dx = f(t) x dt + g(t) dW``."""

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description; :func:`sde_from_config` inverts it."""

    #: True when psi^2 + sigma^2 = 1 (VP and DDPM); required for v-prediction.
    variance_preserving: bool = False

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The time value a network was trained with, given continuous ``t`` in [0, 1]."""
        return t

    def marginal_prob(self, x0: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mean, std)`` of p(x_t | x_0): ``mean`` has ``x0``'s shape, ``std`` is ``sigma(t)``."""
        tt = _as_time(t, x0)
        psi = self.psi(tt)
        if psi.ndim == 1:
            psi = append_dims(psi, x0.ndim)
        return psi * x0, self.sigma(tt)

    def perturb(self, x0: torch.Tensor, t: float | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t = psi(t) x0 + sigma(t) * noise (``noise`` ~ N(0, I), ``x0``'s shape)."""
        mean, std = self.marginal_prob(x0, t)
        if std.ndim == 1:
            std = append_dims(std, x0.ndim)
        return mean + std * noise

    def prior_sampling(self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Sample x_T ~ N(0, (psi(T)^2 s_data^2 + sigma(T)^2) I) approximated by N(0, sigma_T^2 I)
        with sigma_T^2 = psi(T)^2 + sigma(T)^2 (unit-variance data)."""
        tT = torch.tensor(self.T, dtype=torch.float64)
        scale = math.sqrt(float(self.psi(tT)) ** 2 + float(self.sigma(tT)) ** 2)
        return scale * torch.randn(shape, generator=generator, device=device)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class VPSDE(SDE):
    """Variance-preserving SDE of Song et al. (2021).

    beta(t) = beta_min + t (beta_max - beta_min), B(t) = int_0^t beta,
    psi(t) = exp(-B(t) / 2), sigma(t)^2 = 1 - exp(-B(t)).

    Parameters
    ----------
    beta_min : float, default=0.1
    beta_max : float, default=20.0
    """

    variance_preserving = True

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not (0 < beta_min < beta_max):
            raise ValueError(f"need 0 < beta_min < beta_max; got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def _B(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def beta(self, t: float | torch.Tensor) -> torch.Tensor:
        tt = _as_time(t)
        return (self.beta_min + tt.double() * (self.beta_max - self.beta_min)).to(tt.dtype)

    def psi(self, t):
        tt = _as_time(t)
        return torch.exp(-0.5 * self._B(tt)).to(tt.dtype)

    def sigma(self, t):
        tt = _as_time(t)
        return torch.sqrt(-torch.expm1(-self._B(tt))).to(tt.dtype)

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t):
        return self.beta(t)

    def to_config(self):
        return {"type": "vp", "beta_min": self.beta_min, "beta_max": self.beta_max}


class VESDE(SDE):
    """Variance-exploding SDE: psi(t) = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t.

    Parameters
    ----------
    sigma_min : float, default=0.01
    sigma_max : float, default=50.0
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def psi(self, t):
        tt = _as_time(t)
        return torch.ones_like(tt)

    def sigma(self, t):
        tt = _as_time(t)
        return (self.sigma_min * (self.sigma_max / self.sigma_min) ** tt.double()).to(tt.dtype)

    def drift_coef(self, t):
        return torch.zeros_like(_as_time(t))

    def diffusion_sq(self, t):
        s = self.sigma(t)
        return 2.0 * s**2 * math.log(self.sigma_max / self.sigma_min)

    def to_config(self):
        return {"type": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


class DDPMSchedule(SDE):
    """A discrete DDPM/DDIM schedule (App. D.1) seen as a continuous-time SDE.

    Given the model's real table ``alphas_cumprod`` of length N (alpha-bar_k for timesteps
    k = 0..N-1), continuous time t in [0, 1] maps to the fractional timestep tau = t (N - 1);
    log alpha-bar is linearly interpolated between integer timesteps. Then
    psi(t) = sqrt(alpha-bar(tau)), sigma(t)^2 = 1 - alpha-bar(tau), and an epsilon-network's score
    is s(x, t) = -eps(x, tau) / sigma(t) (eq. 10). ``model_time(t)`` returns tau, which is what a
    diffusers UNet takes as ``timestep``.

    Parameters
    ----------
    alphas_cumprod : array-like of shape (N,)
        Decreasing values in (0, 1]. Use :meth:`from_scheduler` to read a diffusers scheduler's
        table, or :meth:`scaled_linear` / :meth:`linear` to build the standard ones.
    """

    variance_preserving = True

    def __init__(self, alphas_cumprod: Any) -> None:
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if ac.numel() < 2:
            raise ValueError(f"alphas_cumprod needs at least 2 entries; got {ac.numel()}")
        if not bool(((ac > 0) & (ac <= 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1]")
        if not bool((ac[1:] <= ac[:-1]).all()):
            raise ValueError("alphas_cumprod must be non-increasing in the timestep")
        self.alphas_cumprod = ac
        self._log_ac = torch.log(ac)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> "DDPMSchedule":
        """Build from any diffusers scheduler that exposes ``alphas_cumprod`` (DDPM, DDIM, PNDM, ...)."""
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(
                f"{type(scheduler).__name__} has no alphas_cumprod; pass a DDPM-family diffusers scheduler "
                "(DDPMScheduler, DDIMScheduler, PNDMScheduler, ...)"
            )
        return cls(scheduler.alphas_cumprod)

    @classmethod
    def linear(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DDPMSchedule":
        """Ho et al. (2020)'s linear beta schedule."""
        n = check_positive_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0))

    @classmethod
    def scaled_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> "DDPMSchedule":
        """Stable Diffusion's scaled-linear schedule: betas linear in sqrt space."""
        n = check_positive_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1 - betas, 0))

    def _tau(self, t: torch.Tensor) -> torch.Tensor:
        return t.double().clamp(0.0, 1.0) * (self.num_train_timesteps - 1)

    def _log_alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        tau = self._tau(t)
        lo = tau.floor().long().clamp(max=self.num_train_timesteps - 2)
        w = tau - lo
        table = self._log_ac.to(tau.device)
        return (1 - w) * table[lo] + w * table[lo + 1]

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        return self._tau(_as_time(t)).to(_as_time(t).dtype)

    def psi(self, t):
        tt = _as_time(t)
        return torch.exp(0.5 * self._log_alpha_bar(tt)).to(tt.dtype)

    def sigma(self, t):
        tt = _as_time(t)
        return torch.sqrt(-torch.expm1(self._log_alpha_bar(tt))).to(tt.dtype)

    def _dlog_ab_dt(self, t: torch.Tensor) -> torch.Tensor:
        tau = self._tau(t)
        lo = tau.floor().long().clamp(max=self.num_train_timesteps - 2)
        table = self._log_ac.to(tau.device)
        return (table[lo + 1] - table[lo]) * (self.num_train_timesteps - 1)

    def drift_coef(self, t):
        tt = _as_time(t)
        return (0.5 * self._dlog_ab_dt(tt)).to(tt.dtype)

    def diffusion_sq(self, t):
        # g^2 = d sigma^2/dt - 2 f sigma^2 = -d ab/dt - ab'/ab (1 - ab) = -(d log ab / dt)
        tt = _as_time(t)
        return (-self._dlog_ab_dt(tt)).to(tt.dtype)

    def to_config(self):
        return {"type": "ddpm", "alphas_cumprod": [float(a) for a in self.alphas_cumprod]}

    def __repr__(self) -> str:
        return f"DDPMSchedule(num_train_timesteps={self.num_train_timesteps})"


def sde_from_config(config: dict[str, Any]) -> SDE:
    """Rebuild an SDE from :meth:`SDE.to_config` output."""
    kind = config.get("type")
    params = {k: v for k, v in config.items() if k != "type"}
    if kind == "vp":
        return VPSDE(**params)
    if kind == "ve":
        return VESDE(**params)
    if kind == "ddpm":
        return DDPMSchedule(params["alphas_cumprod"])
    raise ValueError(f"unknown SDE type {kind!r}; expected one of 'vp', 've', 'ddpm'")
