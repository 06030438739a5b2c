"""A label-free FLIPD ``t0`` from the training data's nearest-neighbour scale.

FLIPD tells a copy (the model's density collapses onto one training image: LID ~ 0) from a
generalised sample only at noise levels that resolve the gap between a training image and its
nearest *other* training image: much smaller noise probes the learned score where it is
inaccurate, much larger noise smooths every sample over many training images and all FLIPD
values shrink together. :func:`t0_from_training_data` therefore picks ``t0`` so that the noise
added to an image at time ``t0`` has the length of a typical nearest-neighbour gap:

    sigma(t0) / psi(t0) * sqrt(d) = factor * r_nn,

with ``r_nn`` the ``quantile`` of the l2 distance from a training image to its nearest distinct
training image (exact duplicates removed first) and ``d`` the number of values per image. The
noise-to-signal ratio is used because ``psi(t0) x_0`` shrinks the image in a VP process.
No labels or FLIPD curves are needed; the training set is what an audit has anyway. The
default ``factor`` was chosen by ``benchmarks/detection_scores.py`` (formerly ``t0_transfer.py``) on two planted-duplicate data
sets of different image size (docs/t0.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._validation import ArgumentError, check_positive_int, check_t0
from ..defaults import T0_AUTO_FACTOR
from ..diffusion.sde import SDE

__all__ = ["nearest_neighbour_scale", "t0_for_noise_ratio", "t0_from_training_data", "resolve_t0", "DEFAULT_T0_FACTOR"]

#: ``factor`` of :func:`t0_from_training_data` (docs/t0.md), defined in :mod:`lidmem.defaults`.
DEFAULT_T0_FACTOR: float = T0_AUTO_FACTOR


def nearest_neighbour_scale(train: Any, *, quantile: float = 0.5, max_points: int = 2000, seed: int = 0) -> float:
    """``quantile`` of the l2 distance from a training image to its nearest *distinct* training image.

    Parameters
    ----------
    train : array-like of shape (n, ...)
        Training data (images ``(n, c, h, w)`` or points ``(n, d)``); flattened per row.
    quantile : float in (0, 1), default=0.5
    max_points : int, default=2000
        Query at most this many distinct rows (drawn with ``seed``); the reference is every
        distinct row.

    Raises
    ------
    ValueError
        With fewer than 2 distinct rows, or ``quantile`` outside (0, 1).
    """
    from ..neighbors import calibration_distances, dedupe_rows

    if not (0.0 < float(quantile) < 1.0):
        raise ValueError(f"quantile={quantile} must lie in (0, 1)")
    max_points = check_positive_int(max_points, "max_points")
    arr = np.asarray(train.detach().cpu().numpy() if isinstance(train, torch.Tensor) else train, dtype=np.float32)
    if arr.ndim < 2:
        raise ValueError(f"train must be batch-first, shape (n, ...); got shape {arr.shape}")
    flat = arr.reshape(len(arr), -1)
    first, _, _ = dedupe_rows(flat)
    uniq = flat[first]
    if len(uniq) < 2:
        raise ArgumentError(f"train has {len(uniq)} distinct rows; the nearest-neighbour scale needs at least 2", argument="train")
    rows = np.arange(len(uniq))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(uniq), max_points, replace=False))
    dist = calibration_distances(uniq, rows, 1)
    return float(np.quantile(dist, quantile))


def t0_for_noise_ratio(sde: SDE, ratio: float, *, t_min: float = 1e-5) -> float:
    """Smallest ``t0`` in ``[t_min, 1]`` with ``sigma(t0) / psi(t0) >= ratio`` (clipped to the ends).

    ``sigma / psi`` increases with ``t`` for every lidmem SDE; the answer is found by bisection
    on ``log t`` to a relative precision of 1e-6.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a lidmem SDE (VPSDE, VESDE, DDPMSchedule); got {type(sde).__name__}")
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio={ratio} must be a positive finite number")

    def r(t: float) -> float:
        tt = torch.tensor(t, dtype=torch.float64)
        return float(sde.sigma(tt) / sde.psi(tt))

    if r(t_min) >= ratio:
        return float(t_min)
    if r(1.0) <= ratio:
        return 1.0
    lo, hi = math.log(t_min), 0.0
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if r(math.exp(mid)) >= ratio:
            hi = mid
        else:
            lo = mid
    return float(math.exp(hi))


def t0_from_training_data(
    sde: SDE,
    train: Any,
    *,
    factor: float = DEFAULT_T0_FACTOR,
    quantile: float = 0.5,
    max_points: int = 2000,
    seed: int = 0,
) -> float:
    """FLIPD ``t0`` whose noise length matches the training set's nearest-neighbour gap (module docstring).

    Parameters
    ----------
    sde : SDE
        The model's forward process (``model.sde``).
    train : array-like of shape (n, c, h, w) or (n, d)
        The training data, on the scale the model was trained on.
    factor : float, default=DEFAULT_T0_FACTOR
        ``sigma(t0) / psi(t0) * sqrt(d) = factor * r_nn``.
    quantile, max_points, seed
        As in :func:`nearest_neighbour_scale`.

    Returns
    -------
    float
        ``t0`` in (0, 1].
    """
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor={factor} must be a positive finite number")
    shape = tuple(train.shape) if hasattr(train, "shape") else np.asarray(train).shape
    d = math.prod(shape[1:])
    r_nn = nearest_neighbour_scale(train, quantile=quantile, max_points=max_points, seed=seed)
    return t0_for_noise_ratio(sde, factor * r_nn / math.sqrt(d))


def resolve_t0(t0: Any, sde: SDE, train: Any, *, name: str = "t0") -> float:
    """``t0`` as a float: ``"auto"`` -> :func:`t0_from_training_data` ``(sde, train)``, else checked in (0, 1].

    The rule of :mod:`lidmem.defaults`: ``"auto"`` is the default wherever the training data are at hand.
    """
    if isinstance(t0, str):
        if t0 != "auto":
            raise ValueError(f"{name}={t0!r} must be a float in (0, 1] or 'auto' (from the training data)")
        return t0_from_training_data(sde, train)
    return check_t0(t0, name)
