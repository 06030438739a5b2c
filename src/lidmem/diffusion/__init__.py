"""Diffusion conventions: SDEs, the score adapter, networks, training and sampling."""

from .score import PREDICTIONS, ScoreModel
from .sde import SDE, VESDE, VPSDE, DDPMSchedule, sde_from_config

__all__ = ["SDE", "VPSDE", "VESDE", "DDPMSchedule", "sde_from_config", "ScoreModel", "PREDICTIONS"]
