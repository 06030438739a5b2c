"""What a Python entry point ``package.module:factory`` may return to describe a model.

A factory is called without arguments and returns one of:

- :class:`EDMDenoiser`: a denoiser in the EDM / k-diffusion convention ``D(x, sigma)`` (the
  denoised estimate of ``x0`` from ``x = x0 + sigma * eps``; psi = 1). lidmem gives it the
  variance-exploding SDE :class:`~lidmem.diffusion.sde.VESDE` with the model's sigma range
  (``sigma(t) = sigma_min (sigma_max / sigma_min)^t``) and the ``x0`` parametrisation, so the
  score is ``(D(x, sigma) - x) / sigma^2``. An object with the attributes of NVlabs EDM's
  ``EDMPrecond`` (``sigma_min``, ``sigma_max``, ``img_channels``, ``img_resolution``) is
  wrapped automatically.
- :class:`ScoreNetwork`: a network ``net(x, t_model)`` plus a lidmem SDE and a parametrisation
  (as :class:`~lidmem.diffusion.score.ScoreModel` takes them), or a ready ``ScoreModel``.
- :class:`GeneratorSpec`: a generator ``G(z)`` with its latent distribution (StyleGAN-like
  generators, decoders of VAEs, your own code).

Nothing is ever unpickled: the factory builds the model in Python (and may load weights with
``safetensors`` or ``torch.load(..., weights_only=True)`` itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["EDMDenoiser", "ScoreNetwork", "GeneratorSpec", "LATENT_DISTRIBUTIONS"]

LATENT_DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform")


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints such as (3, 32, 32); got {shape!r}") from None
    if not out or any(s < 1 for s in out):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints such as (3, 32, 32); got {shape!r}")
    return out


def _range(value_range: Any) -> tuple[float, float]:
    lo, hi = (float(v) for v in value_range)
    if not lo < hi:
        raise ValueError(f"value_range must be (low, high) with low < high; got {value_range!r}")
    return lo, hi


@dataclass
class EDMDenoiser:
    """An EDM / k-diffusion denoiser ``D(x, sigma) -> x0_hat``.

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma)`` with ``x`` of shape ``(n, *data_shape)`` and ``sigma`` of shape
        ``(n,)``; returns the denoised images, ``x``'s shape (psi = 1, no input scaling by you:
        EDM's preconditioning lives inside ``denoiser``). A module, closure, function, partial,
        bound method or ``torch.compile`` result; a bare diffusers UNet is called as
        ``unet(x, sigma)`` and its ``.sample`` used (conditioning, e.g. a
        ``UNet2DConditionModel``'s ``encoder_hidden_states``, comes from the estimators'
        ``extra_args``).
    sigma_min, sigma_max : float
        The noise levels the model was trained on (EDM: 0.002 and 80).
    data_shape : tuple of int
        Shape of one sample, e.g. ``(3, 32, 32)``.
    value_range : (float, float), default=(-1, 1)
        Range of the data the model was trained on.
    """

    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sigma_min: float
    sigma_max: float
    data_shape: tuple[int, ...]
    value_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if not callable(self.denoiser):
            raise TypeError(f"denoiser must be callable as D(x, sigma); got {type(self.denoiser).__name__}")
        if not (0 < float(self.sigma_min) < float(self.sigma_max)):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}")
        self.sigma_min, self.sigma_max = float(self.sigma_min), float(self.sigma_max)
        self.data_shape = _shape(self.data_shape, "data_shape")
        self.value_range = _range(self.value_range)


@dataclass
class ScoreNetwork:
    """A network called as ``net(x, sde.model_time(t))`` with its SDE and parametrisation.

    Parameters
    ----------
    net : callable
        The network (an ``nn.Module`` is moved to the requested device): a module, closure,
        function, partial, bound method, ``torch.compile`` result or a bare diffusers
        ``UNet2DModel`` / ``UNet2DConditionModel`` (its ``.sample`` is used; the latter needs
        ``extra_args={"encoder_hidden_states": ...}`` and says so when called without).
    sde : lidmem SDE
        :class:`~lidmem.diffusion.sde.VPSDE`, ``VESDE`` or ``DDPMSchedule``.
    prediction : {"score", "epsilon", "x0", "v"}
    data_shape : tuple of int
    value_range : (float, float), default=(-1, 1)
    """

    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sde: Any
    prediction: str
    data_shape: tuple[int, ...]
    value_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        self.data_shape = _shape(self.data_shape, "data_shape")
        self.value_range = _range(self.value_range)


@dataclass
class GeneratorSpec:
    """A generator ``G(z)``, ``z`` of shape ``(n, latent_dim)``, and its latent distribution.

    Parameters
    ----------
    generator : torch.nn.Module
        ``G(z) -> x`` of shape ``(n, *data_shape)``.
    latent_dim : int
    data_shape : tuple of int
    latent : {"normal", "uniform"}, default="normal"
        ``"normal"``: ``z ~ N(0, latent_std^2 I)``; ``"uniform"``: ``z ~ U[-1, 1]^latent_dim``.
        lidmem draws ``u ~ N(0, I)`` and feeds ``latent_std * u`` (normal) or
        ``2 Phi(u) - 1`` (uniform) to ``G``; both maps have an invertible diagonal Jacobian, so the
        Jacobian rank of the composed map equals that of ``G`` (the singular values are rescaled).
    latent_std : float, default=1.0
    value_range : (float, float), default=(-1, 1)
    """

    generator: Any
    latent_dim: int
    data_shape: tuple[int, ...]
    latent: str = "normal"
    latent_std: float = 1.0
    value_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if not isinstance(self.generator, torch.nn.Module):
            raise TypeError(f"generator must be a torch.nn.Module G(z); got {type(self.generator).__name__}")
        if isinstance(self.latent_dim, bool) or int(self.latent_dim) < 1:
            raise ValueError(f"latent_dim must be a positive int; got {self.latent_dim!r}")
        self.latent_dim = int(self.latent_dim)
        self.data_shape = _shape(self.data_shape, "data_shape")
        if self.latent not in LATENT_DISTRIBUTIONS:
            raise ValueError(f"latent={self.latent!r} is not supported; choose one of {', '.join(map(repr, LATENT_DISTRIBUTIONS))}")
        if not float(self.latent_std) > 0:
            raise ValueError(f"latent_std must be > 0; got {self.latent_std!r}")
        self.value_range = _range(self.value_range)
