"""Bring your own model: one loader for every model reference lidmem accepts.

:func:`load_model` reads a lidmem checkpoint, a diffusers pipeline folder (pixel, latent or
text-to-image) or a Python entry point ``package.module:factory`` and returns a described score
model or generator (``.info``: :class:`ModelInfo`). See ``docs/models.md``.
"""

from .loader import DIFFUSERS_PREDICTIONS, check_model_call, is_entry_point, load_model, model_info
from .sampling import ddim_timesteps, sample_ddim
from .specs import LATENT_DISTRIBUTIONS, EDMDenoiser, GeneratorSpec, ScoreNetwork
from .wrappers import LatentScoreModel, LoadedGenerator, ModelInfo, count_parameters, sde_summary

__all__ = [
    "load_model",
    "check_model_call",
    "model_info",
    "is_entry_point",
    "ModelInfo",
    "LatentScoreModel",
    "LoadedGenerator",
    "EDMDenoiser",
    "ScoreNetwork",
    "GeneratorSpec",
    "LATENT_DISTRIBUTIONS",
    "DIFFUSERS_PREDICTIONS",
    "sample_ddim",
    "ddim_timesteps",
    "count_parameters",
    "sde_summary",
]
