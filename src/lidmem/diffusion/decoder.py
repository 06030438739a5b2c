"""A small MLP decoder ``G(z) = tanh(MLP(z))``: the network of lidmem's generators
(:mod:`lidmem.generators` trains it as a VAE decoder, a GAN or IMLE generator); checkpoint
network type ``"mlp_decoder"``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import check_positive_int

__all__ = ["MLPDecoder"]


class MLPDecoder(nn.Module):
    """MLP decoder ``G(z) = tanh(MLP(z))`` reshaped to ``out_shape``.

    Parameters
    ----------
    latent_dim : int
        Latent dimension ``d'`` (the Jacobian-rank LID is at most ``d'``).
    out_shape : tuple of int
        Output shape per sample, e.g. ``(1, 8, 8)``.
    hidden : int, default=256
    depth : int, default=2
        Number of hidden layers (SiLU).

    Attributes
    ----------
    config : dict
        ``{"type": "mlp_decoder", ...}``; :meth:`from_config` rebuilds the network.
    """

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...] | list[int], *, hidden: int = 256, depth: int = 2) -> None:
        super().__init__()
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = check_positive_int(hidden, "hidden")
        depth = check_positive_int(depth, "depth")
        shape = tuple(check_positive_int(s, "out_shape") for s in out_shape)
        if not shape:
            raise ValueError("out_shape must be non-empty, e.g. (1, 8, 8)")
        self.config: dict[str, Any] = {"type": "mlp_decoder", "latent_dim": latent_dim, "out_shape": list(shape), "hidden": hidden, "depth": depth}
        self.latent_dim = latent_dim
        self.out_shape = shape
        layers: list[nn.Module] = []
        for k in range(depth):
            layers += [nn.Linear(latent_dim if k == 0 else hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, math.prod(shape)))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MLPDecoder":
        """Rebuild from :attr:`config` (the ``"type"`` key must be ``"mlp_decoder"``)."""
        if config.get("type", "mlp_decoder") != "mlp_decoder":
            raise ValueError(f"config type {config.get('type')!r} is not 'mlp_decoder'")
        params = {k: v for k, v in config.items() if k != "type"}
        try:
            latent_dim, out_shape = params.pop("latent_dim"), params.pop("out_shape")
        except KeyError as exc:
            raise ValueError(f"an 'mlp_decoder' config needs {exc.args[0]!r}") from None
        return cls(latent_dim, out_shape, **params)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` of shape ``(n, latent_dim)`` -> images ``(n, *out_shape)`` in [-1, 1]."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}); got {tuple(z.shape)}")
        return torch.tanh(self.mlp(z)).reshape(z.shape[0], *self.out_shape)
