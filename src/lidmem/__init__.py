"""lidmem: memorization in generative models through local intrinsic dimension.

Conventions used everywhere: data are batch-first tensors ``(n, d)`` (or ``(n, c, h, w)``
images, flattened where an estimator needs vectors); diffusion time ``t`` is continuous in
[0, 1]; a :class:`ScoreModel` always returns the score s(x, t) = grad log p_t(x).
"""

from ._version import __version__
from .diffusion import SDE, VESDE, VPSDE, DDPMSchedule, ScoreModel

__all__ = ["SDE", "VPSDE", "VESDE", "DDPMSchedule", "ScoreModel", "__version__"]
