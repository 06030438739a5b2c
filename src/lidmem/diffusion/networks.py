"""Registry of network architectures that lidmem checkpoints can rebuild from their config.

Every registered network class has a ``config`` attribute (a JSON-serialisable dict with a
``"type"`` key) and a ``from_config(config)`` classmethod, and is called as ``net(x, t_model)``.
Built-in types are imported lazily so that importing lidmem never imports diffusers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["build_network", "register_network", "network_types"]

_USER_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {}

# type name -> (module path relative to lidmem.diffusion / lidmem, class name)
_BUILTIN: dict[str, tuple[str, str]] = {
    "mlp": ("lidmem.diffusion.mlp", "MLPScoreNet"),
    "unet2d": ("lidmem.diffusion.unet", "UNetScoreNet"),
    "mlp_decoder": ("lidmem.diffusion.decoder", "MLPDecoder"),
}


def register_network(name: str, builder: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Register ``builder(config) -> nn.Module`` under ``name`` so checkpoints of it can load."""
    if name in _BUILTIN:
        raise ValueError(f"network type {name!r} is built in; choose another name")
    _USER_BUILDERS[name] = builder


def network_types() -> list[str]:
    """Names accepted in a network config's ``"type"``."""
    return sorted([*_BUILTIN, *_USER_BUILDERS])


def build_network(config: dict[str, Any]) -> nn.Module:
    """Instantiate the network described by ``config`` (its ``"type"`` picks the class)."""
    kind = config.get("type")
    if kind in _USER_BUILDERS:
        return _USER_BUILDERS[kind](config)
    if kind in _BUILTIN:
        import importlib

        module_name, cls_name = _BUILTIN[kind]
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls.from_config(config)
    raise ValueError(f"unknown network type {kind!r}; known types: {', '.join(network_types())}")
