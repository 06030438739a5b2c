"""Diffusion conventions: SDEs, the score adapter, networks, training and sampling.

Time ``t`` is continuous in [0, 1] for every SDE; a :class:`ScoreModel` always returns the
score s(x, t) = grad_x log p_t(x), whatever its network predicts.
"""

from .checkpoint import load_network, load_score_model, read_metadata, save_checkpoint
from .mlp import MLPScoreNet
from .networks import build_network, register_network
from .sampling import sample_euler_maruyama, sample_ode
from .score import PREDICTIONS, ScoreModel
from .sde import SDE, VESDE, VPSDE, DDPMSchedule, sde_from_config
from .training import TrainResult, train_score_model

__all__ = [
    "SDE",
    "VPSDE",
    "VESDE",
    "DDPMSchedule",
    "sde_from_config",
    "ScoreModel",
    "PREDICTIONS",
    "MLPScoreNet",
    "build_network",
    "register_network",
    "train_score_model",
    "TrainResult",
    "sample_ode",
    "sample_euler_maruyama",
    "save_checkpoint",
    "load_score_model",
    "load_network",
    "read_metadata",
]
