"""A small diffusers ``UNet2DModel`` wrapped as a lidmem score network for images.

The network maps ``(x, t_model) -> out`` with ``x`` of shape ``(n, c, h, w)`` and ``t_model``
of shape ``(n,)``: the time the :class:`~lidmem.diffusion.score.ScoreModel` adapter passes,
``sde.model_time(t)`` (the continuous time in [0, 1] for VP/VE SDEs). The UNet's sinusoidal
timestep embedding sees ``time_scale * t_model``. What the output means (score, epsilon, x0 or
v) is decided by the ``prediction`` the network is trained and wrapped with.

diffusers is an optional dependency (``pip install lidmem[diffusers]``); it is imported when a
network is built, never at import time of this module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._validation import check_positive_int

__all__ = ["UNetScoreNet"]


def _import_unet2d() -> Any:
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:  # pragma: no cover - exercised only without diffusers
        raise ImportError("UNetScoreNet needs diffusers; install it with `pip install lidmem[diffusers]`") from exc
    return UNet2DModel


class UNetScoreNet(nn.Module):
    """Diffusers ``UNet2DModel`` called as ``net(x, t_model)`` for images ``(n, c, h, w)``.

    Attention is off by default (``attention=False``: plain ``DownBlock2D``/``UpBlock2D`` and no
    mid-block attention). With ``attention=True`` the attention processors are set to diffusers'
    plain-matmul ``AttnProcessor`` (PyTorch's fused SDPA kernels have no forward-mode AD on CPU;
    plain matrix products work with every differentiation mode). FLIPD itself
    handles either processor: its forward-mode rules compute attention's tangent explicitly
    (:mod:`lidmem.estimators._autodiff`).

    Parameters
    ----------
    sample_size : int
        Image height = width ``h``.
    in_channels : int, default=1
        Image channels ``c`` (the output has the same number).
    block_out_channels : tuple of int, default=(32, 64)
        Channels per resolution level; ``len`` levels, each but the last halves the resolution,
        so ``sample_size`` must be divisible by ``2 ** (levels - 1)``.
    layers_per_block : int, default=1
    norm_num_groups : int, default=8
        Group-norm groups; must divide every entry of ``block_out_channels``.
    time_scale : float, default=1000.0
        The timestep embedding sees ``time_scale * t_model``; 1000 suits continuous time in
        [0, 1], use 1.0 for DDPM schedules whose model time is already the timestep.
    attention : bool, default=False
        Use attention blocks at the lowest resolution and in the mid block.

    Attributes
    ----------
    config : dict
        JSON-serialisable constructor arguments with ``"type": "unet2d"``; :meth:`from_config`
        rebuilds the network (used by lidmem checkpoints).
    unet : diffusers.UNet2DModel

    Examples
    --------
    >>> import torch
    >>> net = UNetScoreNet(8, block_out_channels=(16, 32))
    >>> net(torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5)).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        sample_size: int,
        *,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] | list[int] = (32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        time_scale: float = 1000.0,
        attention: bool = False,
    ) -> None:
        super().__init__()
        sample_size = check_positive_int(sample_size, "sample_size")
        in_channels = check_positive_int(in_channels, "in_channels")
        layers_per_block = check_positive_int(layers_per_block, "layers_per_block")
        norm_num_groups = check_positive_int(norm_num_groups, "norm_num_groups")
        channels = tuple(int(check_positive_int(c, "block_out_channels")) for c in block_out_channels)
        if not channels:
            raise ValueError("block_out_channels must name at least one level, e.g. (32, 64)")
        bad = [c for c in channels if c % norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block_out_channels entry; {bad} are not divisible")
        factor = 2 ** (len(channels) - 1)
        if sample_size % factor:
            raise ValueError(
                f"sample_size={sample_size} must be divisible by 2**(levels-1)={factor} for block_out_channels={channels}; "
                "use fewer levels or pad the images"
            )
        if not (isinstance(time_scale, (int, float)) and time_scale > 0 and math.isfinite(time_scale)):
            raise ValueError(f"time_scale={time_scale!r} must be a positive float; try 1000.0 for t in [0, 1]")
        self.config: dict[str, Any] = {
            "type": "unet2d",
            "sample_size": sample_size,
            "in_channels": in_channels,
            "block_out_channels": list(channels),
            "layers_per_block": layers_per_block,
            "norm_num_groups": norm_num_groups,
            "time_scale": float(time_scale),
            "attention": bool(attention),
        }
        self.time_scale = float(time_scale)
        UNet2DModel = _import_unet2d()
        n = len(channels)
        if attention:
            down = ("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",)
            up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1)
        else:
            down = ("DownBlock2D",) * n
            up = ("UpBlock2D",) * n
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels,
            block_out_channels=channels,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            add_attention=bool(attention),
        )
        if attention:
            from diffusers.models.attention_processor import Attention, AttnProcessor

            for module in self.unet.modules():  # UNet2DModel has no set_attn_processor
                if isinstance(module, Attention):
                    module.set_processor(AttnProcessor())

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNetScoreNet":
        """Rebuild from :attr:`config` (the ``"type"`` key must be ``"unet2d"``)."""
        if config.get("type", "unet2d") != "unet2d":
            raise ValueError(f"config type {config.get('type')!r} is not 'unet2d'")
        params = {k: v for k, v in config.items() if k != "type"}
        size = params.pop("sample_size", None)
        if size is None:
            raise ValueError("a 'unet2d' config needs 'sample_size' (the image height = width)")
        return cls(size, **params)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Network output of ``x``'s shape ``(n, c, h, w)`` at model times ``t`` of shape ``(n,)``."""
        cfg = self.config
        expected = (cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (n, {expected[0]}, {expected[1]}, {expected[2]}); got {tuple(x.shape)}")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.unet(x, self.time_scale * t.to(x.dtype)).sample
