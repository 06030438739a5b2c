"""The metrics of :func:`lidmem.scoring.score_dataset`: their settings (:class:`MetricParams`),
the :class:`Metric` record and the registry (:data:`METRICS`, :func:`register_metric`) with the
built-in metrics (FLIPD, normal bundle, PNG length, CFG norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._validation import check_choice
from ..defaults import CFG_T0, EULER_STEPS, FLIPD_T0, NB_T0, NB_THRESHOLD
from .sources import Rows

__all__ = ["Metric", "MetricParams", "METRICS", "register_metric", "metric_names"]


@dataclass(frozen=True)
class MetricParams:
    """Settings the metrics read (all recorded in ``settings.json``).

    Attributes
    ----------
    t0 : float
        FLIPD diffusion time in (0, 1] (``flipd``, ``flipd_hutchinson``); default
        :data:`lidmem.defaults.FLIPD_T0` (0.05: no training data here, so no ``"auto"``).
    n_probes : int
        Hutchinson probes per point (``flipd_hutchinson``).
    probe : {"rademacher", "gaussian"}
        Hutchinson probe distribution.
    nb_t0 : float
        Normal-bundle diffusion time (``nb``); default :data:`lidmem.defaults.NB_T0` (0.05).
    n_scores : int or None
        Noisy scores per point for the normal bundle (None: the estimator's default, 4d).
    nb_threshold : {"percentile", "gap"} or float
        Normal-bundle rank cut (:func:`lidmem.estimators.normal_bundle`). ``"percentile"`` (the
        default, the paper's rule): one global ``tau`` = the 10th percentile of the singular values
        of the first batch of the data set (rows ``[0, batch_size)``, seed
        ``batch_seed(seed, 0, "nb")``), fitted once per run and applied to every shard.
    nb_tau : float or None
        The ``tau`` fitted for ``nb_threshold="percentile"`` (recorded so a resumed run checks
        that it cuts at the same place); None otherwise.
    value_range : (float, float)
        Images (read in [0, 1]) are mapped linearly to this range before the model sees them;
        lidmem's convention is (-1, 1).
    cfg_t0 : float
        ``cfg_norm``: the time the probability-flow ODE is integrated to (App. C.1: 0.01).
    euler_steps : int
        ``cfg_norm``: Euler steps of that ODE (App. C.1: 3).
    """

    t0: float = FLIPD_T0
    n_probes: int = 1
    probe: str = "rademacher"
    nb_t0: float = NB_T0
    n_scores: int | None = None
    nb_threshold: str | float = NB_THRESHOLD
    nb_tau: float | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)
    cfg_t0: float = CFG_T0
    euler_steps: int = EULER_STEPS

    def to_dict(self) -> dict[str, Any]:
        return {
            "t0": self.t0,
            "n_probes": self.n_probes,
            "probe": self.probe,
            "nb_t0": self.nb_t0,
            "n_scores": self.n_scores,
            "nb_threshold": self.nb_threshold,
            "nb_tau": self.nb_tau,
            "value_range": list(self.value_range),
            "cfg_t0": self.cfg_t0,
            "euler_steps": self.euler_steps,
        }


@dataclass(frozen=True)
class Metric:
    """A per-row score.

    ``compute(model, x, rows, seed, params)`` returns an array of shape ``(n,)``: ``model`` is
    the score model (None for model-free metrics), ``x`` the batch as the model sees it (on the
    model's device, shape ``(n, ...)``), ``rows`` the :class:`~lidmem.scoring.sources.Rows` as
    read (images in [0, 1]), ``seed`` an int derived from the batch's first global row.
    """

    name: str
    compute: Callable[[Any, torch.Tensor, Rows, int, MetricParams], Any]
    dtype: str
    needs_model: bool = True
    random: bool = False
    description: str = ""


def _flipd_exact(model: Any, x: torch.Tensor, rows: Rows, seed: int, p: MetricParams) -> Any:
    from ..estimators import flipd

    return flipd(model, x, p.t0, trace="exact", seed=seed, batch_size=len(x), progress=False)


def _flipd_hutchinson(model: Any, x: torch.Tensor, rows: Rows, seed: int, p: MetricParams) -> Any:
    from ..estimators import flipd

    return flipd(model, x, p.t0, trace="hutchinson", n_probes=p.n_probes, probe=p.probe, seed=seed, batch_size=len(x), progress=False)


def _flipd_map_top10_mass(model: Any, x: torch.Tensor, rows: Rows, seed: int, p: MetricParams) -> Any:
    from ..estimators import flipd_map, map_concentration

    # exact diagonal (d JVPs per point, as the 'flipd' metric): per-pixel Hutchinson is too noisy
    maps = flipd_map(model, x, p.t0, trace="exact", seed=seed, batch_size=len(x), progress=False)
    return map_concentration(maps, 0.1)


def _nb(model: Any, x: torch.Tensor, rows: Rows, seed: int, p: MetricParams) -> Any:
    from ..estimators import normal_bundle

    # "percentile": the global tau fitted on the first batch (score_dataset sets nb_tau), so
    # every shard and every resumed run cuts at the same place
    threshold = p.nb_tau if p.nb_threshold == "percentile" else p.nb_threshold
    if threshold is None:
        raise ValueError("nb_threshold='percentile' needs nb_tau (score_dataset fits it on the first batch)")
    return normal_bundle(model, x, p.nb_t0, n_scores=p.n_scores, seed=seed, threshold=threshold, progress=False)


def _png(model: Any, x: torch.Tensor, rows: Rows, seed: int, p: MetricParams) -> Any:
    from ..memorization.complexity import png_length

    if not rows.is_image or rows.data.ndim != 4 or rows.data.shape[1] not in (1, 3):
        raise ValueError("metric 'png_complexity' needs image data (n, c, h, w) with c in (1, 3); this source holds arrays")
    return png_length(rows.data, value_range=(0.0, 1.0), compress_level=9)


def _cfg_norm(model: Any, x: torch.Tensor, rows: Rows, seed: int, p: MetricParams) -> Any:
    from ..text2image.adapters import TextToImageModel
    from ..text2image.image_scores import cfg_norm_after_euler

    if not isinstance(model, TextToImageModel):
        raise TypeError(
            f"metric 'cfg_norm' needs a text-to-image model (lidmem.text2image.TextToImageModel, or a diffusers "
            f"model folder as --model); got {type(model).__name__}"
        )
    if rows.captions is None:
        raise ValueError(
            "metric 'cfg_norm' needs one caption per image: a 'caption'/'text'/'prompt' column (parquet, hf; or "
            "caption_column=) or a .txt member per sample (webdataset)"
        )
    return cfg_norm_after_euler(model, x, rows.captions, t0=p.cfg_t0, euler_steps=p.euler_steps, inputs="images", batch_size=len(x), progress=False)


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric, *, overwrite: bool = False) -> None:
    """Add ``metric`` to the registry used by :func:`score_dataset` (by ``metric.name``)."""
    if not isinstance(metric, Metric):
        raise TypeError(f"metric must be a lidmem.scoring.Metric; got {type(metric).__name__}")
    if metric.name in METRICS and not overwrite:
        raise ValueError(f"metric {metric.name!r} is already registered; pass overwrite=True to replace it")
    if metric.name in ("row", "id"):
        raise ValueError(f"metric name {metric.name!r} is reserved for an output column; choose another")
    check_choice(metric.dtype, "metric.dtype", ("float64", "float32", "int64"))
    METRICS[metric.name] = metric


for _m in (
    Metric("flipd", _flipd_exact, "float64", description="FLIPD (eq. 6), exact trace (d JVPs per point)"),
    Metric("flipd_hutchinson", _flipd_hutchinson, "float64", random=True, description="FLIPD with n_probes Hutchinson probes"),
    Metric("flipd_map_top10_mass", _flipd_map_top10_mass, "float64",
           description="share of the FLIPD map's memorization mass (c - map, clipped at 0) in its lowest 10% locations; ~0.1 spread, ~1 local"),
    Metric("nb", _nb, "int64", random=True, description="normal-bundle LID (eq. 7-8), per-point largest-gap rank"),
    Metric("png_complexity", _png, "int64", needs_model=False, description="PNG length in bytes (level 9, App. C.2)"),
    Metric("cfg_norm", _cfg_norm, "float64", description="CFG vector norm after Euler steps to cfg_t0 (App. C.1); text-to-image models"),
):
    register_metric(_m)


def metric_names() -> list[str]:
    """Names of the registered metrics."""
    return sorted(METRICS)
