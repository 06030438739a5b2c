"""The objects :func:`lidmem.models.load_model` returns, and what it says about them.

- A score model is a :class:`~lidmem.diffusion.score.ScoreModel` (``model(x, t)`` returns the
  score at continuous time ``t`` in [0, 1]) with two extra attributes: ``metadata`` (a dict
  with at least ``kind`` and ``data_shape``, the shape the estimators see) and ``info``
  (:class:`ModelInfo`). A latent model is a :class:`LatentScoreModel`: the score lives in
  latent space and ``encode`` / ``decode`` map pixel images in [-1, 1] to latents and back.
- A generator is an ``nn.Module`` ``G(z)`` with ``latent_dim``, ``out_shape``, ``metadata`` and
  ``info``; ``z ~ N(0, I)`` (other latent distributions are folded into it, see
  :class:`lidmem.models.GeneratorSpec`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..diffusion.score import ScoreModel, call_network, text_conditioned
from ..diffusion.sde import SDE, DDPMSchedule

__all__ = ["ModelInfo", "LatentScoreModel", "LoadedGenerator", "count_parameters", "sde_summary"]


def count_parameters(*modules: Any) -> int:
    """Number of parameters of the ``nn.Module`` arguments (others count 0; shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for m in modules:
        if isinstance(m, nn.Module):
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


def sde_summary(sde: SDE) -> dict[str, Any]:
    """Type, t range and the kernel's (psi, sigma) at both ends of an SDE."""
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    psi, sigma = sde.psi(ends), sde.sigma(ends)
    out: dict[str, Any] = {
        "type": type(sde).__name__,
        "t_range": [0.0, float(sde.T)],
        "psi_range": [float(psi[0]), float(psi[1])],
        "sigma_range": [float(sigma[0]), float(sigma[1])],
    }
    if isinstance(sde, DDPMSchedule):
        out["num_train_timesteps"] = sde.num_train_timesteps
        out["timestep_map"] = f"t in [0, 1] -> timestep t * {sde.num_train_timesteps - 1}"
    return out


@dataclass
class ModelInfo:
    """What was detected from a model reference (printed by ``lidmem inspect``).

    Attributes
    ----------
    kind : {"score_model", "generator"}
    source : str
        ``"lidmem_checkpoint"``, ``"diffusers_pixel"``, ``"diffusers_latent"``,
        ``"text2image_unconditional"`` or ``"entry_point"``.
    reference : str
        The reference as given.
    data_shape : tuple of int
        Shape of one sample in the space the estimators work in (latents for latent models).
    image_shape : tuple of int
        Shape of one pixel image (equals ``data_shape`` in pixel space).
    value_range : (float, float) or None
        Range of the pixel data the model expects / generates (None: not recorded, vector data).
    space : {"pixel", "latent", "vector"}
        ``"vector"`` for models of points ``(n, d)`` rather than images.
    n_params : int
        Parameters of every network involved (UNet, autoencoder, text encoder).
    sde : dict or None
        :func:`sde_summary` of the score model's SDE.
    prediction : str or None
        What the network predicts (lidmem names: epsilon, v, x0, score), before conversion.
    latent : str or None
        A generator's latent distribution.
    details : dict
        Anything else found (scheduler and network classes, scaling factors, ...).
    """

    kind: str
    source: str
    reference: str
    data_shape: tuple[int, ...]
    image_shape: tuple[int, ...]
    value_range: tuple[float, float] | None = (-1.0, 1.0)
    space: str = "pixel"
    n_params: int = 0
    sde: dict[str, Any] | None = None
    prediction: str | None = None
    latent: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = asdict(self)
        d["data_shape"], d["image_shape"] = list(self.data_shape), list(self.image_shape)
        d["value_range"] = list(self.value_range) if self.value_range is not None else None
        return d

    def lines(self) -> list[str]:
        """Human-readable ``key: value`` lines."""
        rows = [("kind", self.kind), ("source", self.source), ("reference", self.reference)]
        if self.sde is not None:
            s = self.sde
            rows.append(("sde", f"{s['type']}, t in [{s['t_range'][0]:g}, {s['t_range'][1]:g}], "
                                f"sigma(t) from {s['sigma_range'][0]:.4g} to {s['sigma_range'][1]:.4g}, "
                                f"psi(t) from {s['psi_range'][0]:.4g} to {s['psi_range'][1]:.4g}"))
            if "timestep_map" in s:
                rows.append(("timesteps", s["timestep_map"]))
        if self.prediction is not None:
            rows.append(("parametrisation", self.prediction))
        if self.latent is not None:
            rows.append(("latent distribution", self.latent))
        rows.append(("space", self.space))
        rows.append(("data shape", "x".join(map(str, self.data_shape)) + (" (latents)" if self.space == "latent" else "")))
        if self.image_shape != self.data_shape:
            rows.append(("image shape", "x".join(map(str, self.image_shape))))
        rows.append(("value range", f"[{self.value_range[0]:g}, {self.value_range[1]:g}]" if self.value_range is not None else "not recorded"))
        rows.append(("parameters", f"{self.n_params:,}"))
        for k, v in self.details.items():
            rows.append((k.replace("_", " "), str(v)))
        width = max(len(k) for k, _ in rows)
        return [f"{k:<{width}} : {v}" for k, v in rows]


class LatentScoreModel(ScoreModel):
    """A score model in a latent space, with the autoencoder that maps images there and back.

    ``forward(x, t)`` is the score of the latent model (``x`` of shape ``(n, *latent_shape)``);
    :meth:`encode` maps pixel images in [-1, 1] to latents (posterior mean times the scaling
    factor, as the latent pipelines do before the UNet), :meth:`decode` maps latents to images
    in [-1, 1]. LID measured with this model is LID in latent space (see ``docs/models.md``).

    Parameters
    ----------
    score : ScoreModel
        The latent-space score model (continuous time ``t``).
    encode, decode : callable
        ``encode(images (n, *image_shape)) -> latents``, ``decode(latents) -> images``.
    image_shape : tuple of int
    modules : list of nn.Module
        The autoencoder modules (registered, so ``.to`` / ``.eval`` reach them).
    """

    def __init__(self, score: ScoreModel, encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
                 image_shape: tuple[int, ...], modules: list[nn.Module] | None = None) -> None:
        super().__init__(score, score.sde, prediction="score")
        self.inner_prediction = score.prediction
        self._encode, self._decode = encode, decode
        self.image_shape = tuple(int(s) for s in image_shape)
        self.autoencoder = nn.ModuleList(modules or [])

    def raw(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The latent model's score at continuous time ``t`` (the inner model converts its own output)."""
        return self.net(x, t)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel images ``(n, *image_shape)`` in [-1, 1] -> latents ``(n, *latent_shape)`` (no grad)."""
        if not isinstance(images, torch.Tensor) or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be a tensor of shape (n, {', '.join(map(str, self.image_shape))}) in [-1, 1]; "
                             f"got {tuple(getattr(images, 'shape', ()))}")
        with torch.no_grad():
            return self._encode(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixel images in [-1, 1] (clamped), no grad."""
        with torch.no_grad():
            return self._decode(latents).clamp(-1.0, 1.0)


class EmptyPromptScoreModel(ScoreModel):
    """The unconditional (empty-prompt) score ``s(x, t, empty)`` of a text-to-image model.

    ``forward(x, t)`` calls the conditional score model
    :class:`lidmem.text2image.TextToImageModel` with ``cond=None`` and the empty prompt's
    embedding, encoded once (on the model's device) instead of on every call.
    """

    def __init__(self, text2image: nn.Module) -> None:
        super().__init__(text2image, text2image.sde, prediction="score")
        self._uncond: torch.Tensor | None = None

    def raw(self, x: torch.Tensor, t: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        """The empty-prompt score at continuous time ``t`` (the text-to-image model converts its output)."""
        if self._uncond is None or self._uncond.device != x.device:
            with torch.no_grad():
                self._uncond = self.net.unconditional_embeds(1).to(x.device)
        return self.net(x, t, cond=None, uncond=self._uncond)


class LoadedGenerator(nn.Module):
    """``G(u)`` for ``u ~ N(0, I)``: the user's generator composed with its latent transform."""

    def __init__(self, generator: nn.Module, latent_dim: int, out_shape: tuple[int, ...], latent: str = "normal", latent_std: float = 1.0) -> None:
        super().__init__()
        self.generator = generator
        self.latent_dim = int(latent_dim)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.latent = latent
        self.latent_std = float(latent_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` of shape ``(n, latent_dim)``, standard normal -> images ``(n, *out_shape)``."""
        if self.latent == "uniform":
            z = torch.special.erf(z / math.sqrt(2.0))  # 2 Phi(z) - 1, uniform on [-1, 1]
        elif self.latent_std != 1.0:
            z = self.latent_std * z
        return self.generator(z).reshape(z.shape[0], *self.out_shape)


class UNet2DFunction(nn.Module):
    """``fn(x, tau)`` around a diffusers ``UNet2DModel``: ``unet(x, tau).sample`` (tau = timestep)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.unet(x, tau).sample


class EDMFunction(nn.Module):
    """``fn(x, t, **extra_args) = D(x, sigma(t), **extra_args)`` for an EDM denoiser under a VE SDE
    (prediction ``"x0"``). ``D`` may be any callable (module, closure, partial, bound method,
    ``torch.compile`` result) or a bare diffusers UNet (its ``.sample`` is used; a text-conditioned
    one needs ``extra_args={"encoder_hidden_states": ...}``)."""

    def __init__(self, denoiser: Callable[..., Any], sde: SDE) -> None:
        super().__init__()
        if isinstance(denoiser, nn.Module):
            self.denoiser = denoiser
        else:
            self._denoiser = denoiser
        self._sde = sde
        self._text_dim = text_conditioned(denoiser)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        d = self.denoiser if "denoiser" in self._modules else self._denoiser
        return call_network(d, x, self._sde.sigma(t).to(x.dtype), extra_args, self._text_dim)
