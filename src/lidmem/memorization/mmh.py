"""Classify points as OD-Mem, DD-Mem or neither under the manifold memorization hypothesis (MMH).

The paper (Sec. 2-3) compares, at a point x, the model's local intrinsic dimension LID_theta(x)
with the data's LID_*(x):

- **OD-Mem** (overfitting-driven): LID_theta(x) < LID_*(x). The model has collapsed to a
  lower-dimensional manifold than the data has at x (e.g. it reproduces one isolated training
  point of a curve).
- **DD-Mem** (data-driven): LID_*(x) itself is (near) 0 (duplicated training points give
  LID_* = 0, Prop. 3.1) and the model follows it, LID_theta(x) is low too. The copies are
  explained by the data, not by a modelling error.

Estimators are noisy (FLIPD is continuous and can be slightly negative; local PCA returns
integers), so :func:`classify_mmh` uses two explicit thresholds and returns them together with
the scores; it never returns only a label.

The rule compares the two LIDs directly, which only means something when they are on the same
scale. FLIPD's value depends on t0 and on the network (on image UNets it is far from the
dimension count), and local PCA's on ``tau``; when the scales disagree, OD-Mem is assigned to
ordinary points wholesale. :func:`classify_mmh` therefore checks comparability on the points
that should be ordinary - those with ``lid_star > dd_threshold`` (not locally 0-dimensional
data) - and reports ``scale_offset``, the median of ``lid_theta - lid_star`` over them. Most
points of a training or sample set are not memorized, so on comparable inputs this median is
near 0; the inputs are declared **not comparable** (``comparable=False`` and a
:class:`MMHScaleWarning`) when ``|scale_offset| > od_margin``, i.e. when the typical ordinary
point would itself sit beyond the OD-Mem margin. The classes are still returned; read them as a
ranking (``od_gap``), not as labels, until the estimators are calibrated (e.g. another FLIPD t0,
or ``tau="fo"`` for local PCA).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..defaults import FLIPD_T0_WITH_TRAINING_DATA

__all__ = ["MMHResult", "MMHScaleWarning", "classify_mmh", "mmh_analysis", "MMH_CLASSES"]


class MMHScaleWarning(UserWarning):
    """LID_theta and LID_* disagree on ordinary points: the MMH classes are not reliable."""

#: The class names, in a fixed order.
MMH_CLASSES: tuple[str, ...] = ("od_mem", "dd_mem", "none")


@dataclass(frozen=True)
class MMHResult:
    """Scores, thresholds and MMH class of each point.

    Attributes
    ----------
    lid_theta : ndarray of shape (n,), float64
        Model-side LID estimate at each point (e.g. FLIPD measured *at* the point).
    lid_star : ndarray of shape (n,), float64
        Data-side LID estimate at each point (e.g. local PCA on the training set).
    mmh_class : ndarray of shape (n,), dtype object
        ``"od_mem"``, ``"dd_mem"`` or ``"none"`` per point.
    od_gap : ndarray of shape (n,), float64
        ``lid_star - lid_theta``: how far the model's LID falls below the data's (OD-Mem score;
        larger = more overfit).
    od_margin : float
        OD-Mem needs ``od_gap > od_margin``.
    dd_threshold : float
        DD-Mem needs ``lid_star <= dd_threshold`` and ``lid_theta <= dd_threshold + od_margin``.
    scale_offset : float
        Median of ``lid_theta - lid_star`` over the points with ``lid_star > dd_threshold``
        (NaN when there are none): the typical disagreement of the two estimators where the data
        are not 0-dimensional.
    comparable : bool
        ``|scale_offset| <= od_margin`` (True when ``scale_offset`` is NaN): whether the two
        LIDs are on one scale, so that the classes can be read as labels (module docstring).
    """

    lid_theta: np.ndarray
    lid_star: np.ndarray
    mmh_class: np.ndarray
    od_gap: np.ndarray
    od_margin: float
    dd_threshold: float
    rule: str = field(default="")
    scale_offset: float = field(default=float("nan"))
    comparable: bool = field(default=True)

    def __len__(self) -> int:
        return len(self.mmh_class)

    @property
    def is_od_mem(self) -> np.ndarray:
        """Boolean mask of OD-Mem points, shape (n,)."""
        return self.mmh_class == "od_mem"

    @property
    def is_dd_mem(self) -> np.ndarray:
        """Boolean mask of DD-Mem points, shape (n,)."""
        return self.mmh_class == "dd_mem"

    def counts(self) -> dict[str, int]:
        """Number of points in each class (all three keys always present)."""
        return {c: int((self.mmh_class == c).sum()) for c in MMH_CLASSES}

    def thresholds(self) -> dict[str, Any]:
        """The thresholds, the rule and the comparability check, JSON-serialisable."""
        offset = None if math.isnan(self.scale_offset) else float(self.scale_offset)
        return {"od_margin": self.od_margin, "dd_threshold": self.dd_threshold, "rule": self.rule,
                "scale_offset": offset, "comparable": bool(self.comparable)}


def _as_vector(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D array of numbers; got {type(values).__name__}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (n,); got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values at {int((~np.isfinite(arr)).sum())} positions")
    return arr


def _check_threshold(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a float; got {value!r}") from exc
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r} must be a finite float >= 0; try {name}=0.5")
    return v


def classify_mmh(lid_theta: Any, lid_star: Any, *, od_margin: float = 0.5, dd_threshold: float = 0.5) -> MMHResult:
    """Classify each point as ``"od_mem"``, ``"dd_mem"`` or ``"none"`` from its two LIDs.

    Rule (applied in this order):

    1. ``"dd_mem"`` if ``lid_star <= dd_threshold`` (the data are locally 0-dimensional, e.g.
       duplicates) **and** ``lid_theta <= dd_threshold + od_margin`` (the model follows them);
    2. ``"od_mem"`` if ``lid_theta < lid_star - od_margin`` (the model's manifold is lower-
       dimensional than the data's by more than the margin);
    3. ``"none"`` otherwise (including data LID ~ 0 that the model does *not* reproduce).

    With LID_* from local PCA (integers) and FLIPD (continuous), the defaults (0.5, 0.5) mean:
    DD-Mem = "LID_* is 0 and FLIPD < 1", OD-Mem = "FLIPD at least half a dimension below LID_*".

    Parameters
    ----------
    lid_theta : array-like of shape (n,)
        Model LID at each point, measured at the point itself (e.g. FLIPD of a training point).
    lid_star : array-like of shape (n,)
        Data LID at each point (e.g. :func:`lidmem.estimators.local_pca`).
    od_margin : float, default=0.5
        Margin by which ``lid_theta`` must fall below ``lid_star`` for OD-Mem (>= 0).
    dd_threshold : float, default=0.5
        Largest ``lid_star`` counted as (locally) zero-dimensional data (>= 0).

    Returns
    -------
    MMHResult
        Scores, classes, the thresholds used and the comparability check (``scale_offset``,
        ``comparable``).

    Warns
    -----
    MMHScaleWarning
        When ``|median(lid_theta - lid_star)|`` over points with ``lid_star > dd_threshold``
        exceeds ``od_margin`` (the estimators are on different scales; see the module docstring).

    Examples
    --------
    >>> r = classify_mmh([0.02, 0.05, 1.01, 0.9], [0, 1, 1, 2])
    >>> r.mmh_class.tolist()
    ['dd_mem', 'od_mem', 'none', 'od_mem']
    """
    theta = _as_vector(lid_theta, "lid_theta")
    star = _as_vector(lid_star, "lid_star")
    if theta.shape != star.shape:
        raise ValueError(f"lid_theta and lid_star must have the same length; got {theta.shape[0]} and {star.shape[0]}")
    od_margin = _check_threshold(od_margin, "od_margin")
    dd_threshold = _check_threshold(dd_threshold, "dd_threshold")
    dd = (star <= dd_threshold) & (theta <= dd_threshold + od_margin)
    od = ~dd & (theta < star - od_margin)
    cls = np.full(theta.shape, "none", dtype=object)
    cls[od] = "od_mem"
    cls[dd] = "dd_mem"
    rule = (
        f"dd_mem: lid_star <= {dd_threshold} and lid_theta <= {dd_threshold + od_margin}; "
        f"od_mem: not dd_mem and lid_theta < lid_star - {od_margin}; none: otherwise"
    )
    ordinary = star > dd_threshold
    offset = float(np.median(theta[ordinary] - star[ordinary])) if ordinary.any() else float("nan")
    comparable = bool(math.isnan(offset) or abs(offset) <= od_margin)
    if not comparable:
        warnings.warn(
            f"LID_theta and LID_* are not on one scale: on the {int(ordinary.sum())} points with lid_star > {dd_threshold} "
            f"the median of lid_theta - lid_star is {offset:+.2f} (|.| > od_margin={od_margin}), so "
            f"{'od_mem' if offset < 0 else 'none'} is assigned to ordinary points; read od_gap as a ranking, or calibrate "
            f"the estimators (another FLIPD t0, local PCA tau='fo') before reading the classes as labels",
            MMHScaleWarning,
            stacklevel=2,
        )
    return MMHResult(
        lid_theta=theta,
        lid_star=star,
        mmh_class=cls,
        od_gap=star - theta,
        od_margin=od_margin,
        dd_threshold=dd_threshold,
        rule=rule,
        scale_offset=offset,
        comparable=comparable,
    )


def mmh_analysis(
    model: Any,
    data: Any,
    *,
    t0: float | str = FLIPD_T0_WITH_TRAINING_DATA,
    trace: str = "exact",
    n_probes: int = 1,
    k: int = 100,
    tau: str | float = "fo",
    tau_percentile: float = 10.0,
    alpha: float = 0.05,
    radius: str | float | None = 0.0,
    radius_percentile: float = 10.0,
    od_margin: float = 0.5,
    dd_threshold: float = 0.5,
    data_shape: tuple[int, ...] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> MMHResult:
    """MMH analysis of a training set: FLIPD at each point, local PCA LID_*, and the class.

    Parameters
    ----------
    model : ScoreModel or callable ``model(x, t) -> score`` with ``.sde``
        The model trained on ``data`` (e.g. :func:`lidmem.diffusion.checkpoint.load_score_model`).
    data : array-like of shape (n, d) or (n, ...)
        The training points. LID_theta is measured *at* each point (FLIPD at ``t0``); LID_* by
        :func:`lidmem.estimators.local_pca` on the flattened points, each excluded from its own
        neighbourhood.
    t0 : float or "auto", default="auto"
        FLIPD time; ``"auto"`` (:data:`lidmem.defaults.FLIPD_T0_WITH_TRAINING_DATA`, the default
        wherever the training data are at hand) takes it from ``data`` with
        :func:`lidmem.estimators.t0.t0_from_training_data`.
    trace : {"exact", "hutchinson"}, default="exact"
        FLIPD trace (exact costs ``d`` JVPs per point; use Hutchinson for images).
    n_probes : int, default=1
        Hutchinson probes.
    k, tau, tau_percentile, alpha, radius, radius_percentile
        Local PCA settings (:class:`lidmem.estimators.LocalPCA`; same defaults: Fukunaga-Olsen tau
        and exact-duplicate radius, so that LID_* is on the scale of LID_theta).
    od_margin, dd_threshold : float, default=0.5
        See :func:`classify_mmh`.
    data_shape : tuple of int, optional
        Shape of one point as the model expects it (e.g. ``(1, 8, 8)``); points are reshaped to
        ``(n, *data_shape)`` for FLIPD. Default: ``data``'s own shape.
    seed : int, default=0
        Seed of the Hutchinson probes and of local PCA's pair subsample.
    batch_size : int, optional
        FLIPD chunk size.
    progress : bool or None

    Returns
    -------
    MMHResult
    """
    import torch

    from .._validation import check_points
    from ..estimators import flipd, local_pca
    from ..estimators.t0 import resolve_t0

    x = check_points(data, "data", min_samples=2, min_ndim=2)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    if param is not None:
        x = x.to(dtype=param.dtype, device=param.device)
    if data_shape is not None:
        shape = tuple(int(v) for v in data_shape)
        if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
            raise ValueError(f"data has {int(np.prod(x.shape[1:]))} features per point but data_shape={shape} needs {int(np.prod(shape))}")
        x = x.reshape((x.shape[0], *shape))
    t0 = resolve_t0(t0, model.sde, x.reshape(x.shape[0], -1).detach().cpu().numpy())
    lid_theta = flipd(model, x, t0=t0, trace=trace, n_probes=n_probes, seed=seed, batch_size=batch_size, progress=progress)
    flat = x.reshape(x.shape[0], -1).detach().to("cpu", torch.float64)
    lid_star = local_pca(flat, k=k, tau=tau, tau_percentile=tau_percentile, alpha=alpha, radius=radius,
                         radius_percentile=radius_percentile, seed=seed, progress=progress)
    return classify_mmh(lid_theta, lid_star, od_margin=od_margin, dd_threshold=dd_threshold)
