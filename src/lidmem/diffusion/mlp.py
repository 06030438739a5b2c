"""A small MLP score network with a sinusoidal time embedding (for tabular / low-dimensional data).

The network maps ``(x, t_model) -> out`` with ``x`` of shape ``(n, d)`` (or any ``(n, ...)``
whose trailing size is ``d``; the output has ``x``'s shape) and ``t_model`` of shape ``(n,)``:
the time the :class:`~lidmem.diffusion.score.ScoreModel` adapter passes, i.e.
``sde.model_time(t)`` (the continuous time in [0, 1] for VP/VE SDEs). What the output means
(score, epsilon, x0 or v) is decided by the ``prediction`` it is trained and wrapped with.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import check_choice, check_positive_int

__all__ = ["MLPScoreNet", "sinusoidal_embedding"]

_ACTIVATIONS = ("silu", "gelu", "relu", "tanh")


def sinusoidal_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of times ``t`` of shape ``(n,)`` -> ``(n, dim)``.

    ``emb[:, i] = cos(t * f_i)`` and ``emb[:, half + i] = sin(t * f_i)`` with
    ``f_i = max_period ** (-i / half)`` (Vaswani et al. 2017; DDPM). ``dim`` must be even.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).to(t.dtype if t.is_floating_point() else torch.float32)


def _activation(name: str) -> nn.Module:
    return {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}[name]()


class MLPScoreNet(nn.Module):
    """MLP ``(x, t) -> out`` with a sinusoidal time embedding, for data of dimension ``dim``.

    Architecture: ``e = MLP_t(sinusoidal(time_scale * t) [, log t])``; then ``depth`` hidden
    layers ``h_{k+1} = act(W_k h_k + U_k e)`` starting from ``h_0 = x``, and a linear output
    layer back to ``dim``. The time embedding is added to every hidden layer, so the network
    can change its behaviour sharply across noise levels (needed near point masses, where the
    optimal epsilon ``x / sigma(t)`` varies fast as ``t -> 0``).

    Parameters
    ----------
    dim : int
        Data dimension ``d`` (inputs of shape ``(n, ...)`` are flattened to ``(n, d)`` and the
        output is reshaped back).
    hidden : int, default=256
        Width of the hidden layers.
    depth : int, default=3
        Number of hidden layers.
    time_embed_dim : int, default=64
        Size of the sinusoidal embedding (even).
    time_scale : float, default=1000.0
        The embedding sees ``time_scale * t_model``; 1000 suits continuous time in [0, 1]
        (VP/VE SDEs), use 1.0 for DDPM schedules whose model time is the timestep in [0, N-1].
    log_time : bool, default=True
        Also feed ``log(t_model)`` (clamped at 1e-6) to the time MLP; gives resolution at the
        very small ``t`` that models of point masses need.
    activation : {"silu", "gelu", "relu", "tanh"}, default="silu"
    fourier_features : int, default=0
        If > 0, the input is augmented with random Fourier features ``sin(2 pi B x)``,
        ``cos(2 pi B x)`` with ``B ~ N(0, fourier_scale^2)`` of shape ``(dim, fourier_features)``
        (Tancik et al. 2020). They let the MLP represent sharp, local structure (e.g. a
        memorised isolated training point) that a plain MLP learns only slowly.
    fourier_scale : float, default=1.0
        Standard deviation of the Fourier frequencies (cycles per unit of x).
    fourier_seed : int, default=0
        Seed of the frequencies (stored in the config and as a buffer).

    Attributes
    ----------
    config : dict
        JSON-serialisable constructor arguments with ``"type": "mlp"``; :meth:`from_config`
        rebuilds the network (used by lidmem checkpoints).

    Examples
    --------
    >>> import torch
    >>> net = MLPScoreNet(dim=2, hidden=32, depth=2)
    >>> net(torch.zeros(5, 2), torch.full((5,), 0.5)).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 3,
        time_embed_dim: int = 64,
        time_scale: float = 1000.0,
        log_time: bool = True,
        activation: str = "silu",
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        fourier_seed: int = 0,
    ) -> None:
        super().__init__()
        dim = check_positive_int(dim, "dim")
        hidden = check_positive_int(hidden, "hidden")
        depth = check_positive_int(depth, "depth")
        time_embed_dim = check_positive_int(time_embed_dim, "time_embed_dim", minimum=2)
        if time_embed_dim % 2:
            raise ValueError(f"time_embed_dim={time_embed_dim} must be even; try {time_embed_dim + 1}")
        if not (isinstance(time_scale, (int, float)) and time_scale > 0 and math.isfinite(time_scale)):
            raise ValueError(f"time_scale={time_scale!r} must be a positive float; try 1000.0 for t in [0, 1]")
        check_choice(activation, "activation", _ACTIVATIONS)
        if isinstance(fourier_features, bool) or not isinstance(fourier_features, int) or fourier_features < 0:
            raise ValueError(f"fourier_features={fourier_features!r} must be an integer >= 0 (0 disables them)")
        if not (isinstance(fourier_scale, (int, float)) and fourier_scale > 0 and math.isfinite(fourier_scale)):
            raise ValueError(f"fourier_scale={fourier_scale!r} must be a positive float")
        self.config: dict[str, Any] = {
            "type": "mlp",
            "dim": dim,
            "hidden": hidden,
            "depth": depth,
            "time_embed_dim": time_embed_dim,
            "time_scale": float(time_scale),
            "log_time": bool(log_time),
            "activation": activation,
            "fourier_features": fourier_features,
            "fourier_scale": float(fourier_scale),
            "fourier_seed": int(fourier_seed),
        }
        self.dim = dim
        self.time_embed_dim = time_embed_dim
        self.time_scale = float(time_scale)
        self.log_time = bool(log_time)
        t_in = time_embed_dim + (1 if log_time else 0)
        self.time_mlp = nn.Sequential(nn.Linear(t_in, hidden), _activation(activation), nn.Linear(hidden, hidden))
        if fourier_features:
            g = torch.Generator().manual_seed(int(fourier_seed))
            self.register_buffer("fourier_freqs", fourier_scale * torch.randn(dim, fourier_features, generator=g))
        else:
            self.fourier_freqs = None
        in_features = dim + 2 * fourier_features
        self.layers = nn.ModuleList([nn.Linear(in_features if k == 0 else hidden, hidden) for k in range(depth)])
        self.time_proj = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.act = _activation(activation)
        self.out = nn.Linear(hidden, dim)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MLPScoreNet":
        """Rebuild from :attr:`config` (the ``"type"`` key must be ``"mlp"``)."""
        if config.get("type", "mlp") != "mlp":
            raise ValueError(f"config type {config.get('type')!r} is not 'mlp'")
        params = {k: v for k, v in config.items() if k != "type"}
        dim = params.pop("dim", None)
        if dim is None:
            raise ValueError("an 'mlp' config needs 'dim' (the data dimension)")
        return cls(dim, **params)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Time features of shape ``(n, hidden)`` for model times ``t`` of shape ``(n,)``."""
        feats = sinusoidal_embedding(self.time_scale * t, self.time_embed_dim)
        if self.log_time:
            feats = torch.cat([feats, torch.log(t.to(feats.dtype).clamp_min(1e-6))[:, None] / 4.0], dim=1)
        return self.time_mlp(feats)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Network output of ``x``'s shape for ``x`` of shape ``(n, ...)`` and times ``t`` ``(n,)``."""
        n = x.shape[0]
        h = x.reshape(n, -1)
        if h.shape[1] != self.dim:
            raise ValueError(f"x has {h.shape[1]} features per point (shape {tuple(x.shape)}) but the network was built with dim={self.dim}")
        if t.ndim == 0:
            t = t.expand(n)
        e = self.embed_time(t.to(h.dtype))
        if self.fourier_freqs is not None:
            proj = 2 * math.pi * h @ self.fourier_freqs.to(h.dtype)
            h = torch.cat([h, torch.sin(proj), torch.cos(proj)], dim=1)
        for layer, proj in zip(self.layers, self.time_proj):
            h = self.act(layer(h) + proj(e))
        return self.out(h).reshape(x.shape)
