"""One adapter that turns any network into a score model s(x, t) = grad_x log p_t(x)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .._validation import check_choice
from ..utils import append_dims
from .sde import SDE

__all__ = ["ScoreModel", "Prediction", "PREDICTIONS", "prediction_to_score"]

Prediction = Literal["score", "epsilon", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("score", "epsilon", "x0", "v")


def prediction_to_score(prediction: str, out: torch.Tensor, x: torch.Tensor, psi: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score from a network output ``out`` at ``x = psi x0 + sigma eps``.

    ``psi`` and ``sigma`` are already broadcast to ``x``'s shape. ``prediction`` is one of
    :data:`PREDICTIONS`; see :class:`ScoreModel` for the formulas.
    """
    if prediction == "score":
        return out
    if prediction == "epsilon":
        return -out / sigma
    if prediction == "x0":
        return (psi * out - x) / sigma**2
    if prediction == "v":
        # v = psi * eps - sigma * x0 and x = psi * x0 + sigma * eps with psi^2 + sigma^2 = 1
        eps = sigma * x + psi * out
        return -eps / sigma
    raise ValueError(f"prediction={prediction!r} is not supported; choose one of {', '.join(map(repr, PREDICTIONS))}")


class ScoreModel(nn.Module):
    """Wrap ``fn(x, t_model)`` so that ``forward(x, t)`` always returns the score.

    Conventions
    -----------
    - ``x`` has shape ``(n, ...)`` (batch first; vectors ``(n, d)`` or images ``(n, c, h, w)``).
    - ``t`` is the continuous SDE time in [0, 1], a float or a tensor of shape ``(n,)``. The
      network receives ``sde.model_time(t)`` of shape ``(n,)`` (identity for :class:`VPSDE`
      and :class:`VESDE`, the fractional timestep for :class:`DDPMSchedule`).
    - With ``x_t = psi(t) x_0 + sigma(t) eps``, the network output is converted as

      ========== =====================================================
      prediction score s(x, t)
      ========== =====================================================
      "score"    the output itself
      "epsilon"  ``-eps / sigma(t)``                     (eq. 10)
      "x0"       ``(psi(t) x0_hat - x) / sigma(t)^2``
      "v"        ``-(sigma x + psi v) / sigma``, v = psi eps - sigma x0 (VP/DDPM only)
      ========== =====================================================

    Parameters
    ----------
    fn : callable or nn.Module
        ``fn(x, t_model) -> tensor`` of ``x``'s shape. Modules are registered as submodules, so
        ``.to(device)`` and ``.eval()`` reach them.
    sde : SDE
        The forward process the network was trained under.
    prediction : {"score", "epsilon", "x0", "v"}, default="score"
        What ``fn`` predicts.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sde: SDE, prediction: Prediction = "score") -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(x, t); got {type(fn).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a lidmem SDE (VPSDE, VESDE, DDPMSchedule); got {type(sde).__name__}")
        check_choice(prediction, "prediction", PREDICTIONS)
        if prediction == "v" and not sde.variance_preserving:
            raise ValueError(f"prediction='v' needs a variance-preserving SDE; got {sde!r}")
        if isinstance(fn, nn.Module):
            self.net = fn
        else:
            self.net = None
            self._fn = fn
        self.sde = sde
        self.prediction = prediction

    def raw(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The wrapped network's output at continuous time ``t`` (shape ``(n,)``)."""
        fn = self.net if self.net is not None else self._fn
        return fn(x, self.sde.model_time(t))

    def _times(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        elif t.ndim == 0:
            t = t.to(dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
        elif t.shape != (x.shape[0],):
            raise ValueError(f"t must be a float or a tensor of shape (n,)=({x.shape[0]},); got shape {tuple(t.shape)}")
        return t

    def forward(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Score s(x, t), same shape as ``x``."""
        t = self._times(x, t)
        out = self.raw(x, t)
        if out.shape != x.shape:
            raise ValueError(f"the wrapped network returned shape {tuple(out.shape)} for input shape {tuple(x.shape)}")
        return self.output_to_score(out, x, t)

    def output_to_score(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a raw network output at times ``t`` (shape ``(n,)``) to the score."""
        if self.prediction == "score":
            return out
        sigma = append_dims(self.sde.sigma(t).to(x.dtype), x.ndim)
        psi = append_dims(self.sde.psi(t).to(x.dtype), x.ndim)
        return prediction_to_score(self.prediction, out, x, psi, sigma)

    def epsilon(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Noise prediction eps(x, t) = -sigma(t) s(x, t)."""
        tt = self._times(x, t)
        return -append_dims(self.sde.sigma(tt).to(x.dtype), x.ndim) * self.forward(x, tt)

    def denoise(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Tweedie's x0 estimate (x + sigma^2 s) / psi."""
        tt = self._times(x, t)
        sigma = append_dims(self.sde.sigma(tt).to(x.dtype), x.ndim)
        psi = append_dims(self.sde.psi(tt).to(x.dtype), x.ndim)
        return (x + sigma**2 * self.forward(x, tt)) / psi
