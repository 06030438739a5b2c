"""Memorization audit of an image generative model (Section 4.1 of the paper, at small scale).

Steps (:func:`audit_memorization`):

1. **Samples**: generate ``num_samples`` images (probability-flow ODE for a score model, ``G(z)``
   with ``z ~ N(0, I)`` for a generator) or take given ones.
2. **Copy detection** (:func:`lidmem.memorization.copy_detection.find_copies`): nearest training
   image by calibrated l2 and by embedding cosine; labels ``exact_copy`` / ``near_copy`` / ``none``.
3. **LID_theta** of every sample: FLIPD (eq. 6) and the normal bundle (eq. 7-8, when
   ``d <= nb_max_dim``) for score models; Jacobian rank for generators; and the primary LID_theta
   (FLIPD, or the Jacobian rank for a generator) divided by the PNG length (App. C.2).
4. **LID_*** of the matched training image: local PCA fitted on the training set (the paper's
   global tau and radius restriction; each training image excluded from its own neighbourhood),
   so planted duplicates get LID_* = 0.
5. **MMH class** from LID_theta and LID_* (:func:`lidmem.memorization.mmh.classify_mmh`).
6. **Detection table**: AUROC and TPR@1%FPR (:mod:`lidmem.memorization.metrics`) of each LID score
   (low = memorized) against the copy labels.

Images follow lidmem's convention: float arrays ``(n, c, h, w)`` in [-1, 1].

Estimators are objects (:mod:`lidmem.estimators`): ``lid_theta=FLIPD(model, t0="auto", ...)`` (or
``JacobianRank(generator, ...)``), ``normal_bundle=NormalBundle(model, ...)`` or None,
``lid_star=LocalPCA(k=100, ...)``; each defaults to the audit's settings below. Loaders of the
inputs live in :mod:`lidmem.data.audit_inputs` (re-exported here); loading a model reference
(:func:`lidmem.workflows.audit.load_audit_model`) and writing the outputs
(:func:`lidmem.workflows.audit.write_audit`, with the HTML report of :mod:`lidmem.reports.audit`)
belong to the workflow layer above, the digits demo to :mod:`lidmem.experiments.digits`.

Choice of FLIPD's ``t0``: the default ``FLIPD(model, t0="auto")`` sets the noise length
``sigma(t0) / psi(t0) * sqrt(d)`` to twice the training set's median nearest-neighbour gap
(:func:`lidmem.estimators.t0.t0_from_training_data`; label-free). Measured by
``benchmarks/detection_scores.py`` (docs/t0.md): t0 = 0.146 on the digits UNet (AUROC 0.998, as the
former fixed default 0.1) and 0.027 on 16x16 photo patches with the ``--preset photo16`` model
(AUROC 0.671; no t0 and no label-free normalisation of FLIPD reaches 0.95 there: FLIPD of that
model tracks image complexity, and most labelled copies are near copies of simple tiles).
Every audit also reports FLIPD's AUROC at the times of ``t0_sweep`` (summary
``flipd_t0_sweep``), so a poor choice shows. FLIPD of a UNet can be negative (footnote 4 of the
paper).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._validation import ArgumentError, check_positive_int, check_seed, check_t0
from ..defaults import FLIPD_T0_WITH_TRAINING_DATA, NB_T0, NB_THRESHOLD
from ..data.audit_inputs import TrainingImages, load_duplicate_flags, load_sample_images, load_training_images
from ..estimators import FLIPD, JacobianRank, LocalPCA, NormalBundle
from ..utils import chunk_slices
from .metrics import higher_is_memorized

__all__ = [
    "SAMPLE_COLUMNS",
    "AuditResult",
    "TrainingImages",
    "load_training_images",
    "load_sample_images",
    "load_duplicate_flags",
    "check_audit_inputs",
    "default_lpca_k",
    "lpca_k_note",
    "audit_memorization",
]

# names that moved to a higher layer; this module does not import them (no upward import)
_MOVED = {
    "load_audit_model": "lidmem.workflows.audit.load_audit_model",
    "write_audit_report": "lidmem.reports.audit.write_audit_report",
    "digits_demo": "lidmem.experiments.digits.digits_demo",
    "shipped_digits_checkpoints": "lidmem.experiments.digits.shipped_digits_checkpoints",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        new = _MOVED[name]
        raise AttributeError(f"{__name__}.{name} moved to {new}; import it from {new.rsplit('.', 1)[0]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SAMPLE_COLUMNS = [
    "sample_id",
    "nn_train_id",
    "calibrated_l2",
    "embed_cos",
    "copy_label",
    "lid_theta_flipd",
    "lid_theta_nb",
    "lid_theta_png",
    "lid_star",
    "mmh_class",
]
#: Extra FLIPD times of the audit's t0 sweep (summary["flipd_t0_sweep"]).
FLIPD_T0_SWEEP: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
# scores whose detection quality is reported (all: low = memorized)
#: the audit's score columns; each one's direction comes from memorization.metrics.HIGHER_IS_MEMORIZED
_SCORE_COLUMNS = ["lid_theta_flipd", "lid_theta_nb", "lid_theta_png", "lid_theta_jacobian", "lid_star"]


@dataclass
class AuditResult:
    """What :func:`audit_memorization` returns.

    Attributes
    ----------
    samples : pandas.DataFrame
        One row per sample with :data:`SAMPLE_COLUMNS` (+ ``lid_theta_jacobian`` for a
        generator, + ``nn_train_index``, ``l2``, ``png_length``, ``train_duplicated`` helpers).
    summary : dict
        Settings, counts, timings, the detection table and the planted-duplicate checks.
    sample_images : ndarray of shape (n, c, h, w)
    train_images : ndarray of shape (m, c, h, w)
    lid_star_train : ndarray of shape (m,)
        LID_* of every training image (local PCA, each image excluded from its own search).
    maps : ndarray of shape (n, *model_input_shape) or None
        FLIPD memorization maps of the samples (score models; :func:`lidmem.estimators.flipd_map`
        with the audit's FLIPD settings, latent shape for latent models); their sums are
        ``lid_theta_flipd``. Written to ``maps.npy`` by :func:`lidmem.workflows.audit.write_audit`.
    """

    samples: Any
    summary: dict[str, Any]
    sample_images: np.ndarray
    train_images: np.ndarray
    lid_star_train: np.ndarray | None = None
    maps: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "write":  # writing files is the workflow layer's (no upward import from here)
            raise AttributeError("AuditResult.write moved to lidmem.workflows.audit.write_audit(result, out_dir, report=..., n_grid=...)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# --- validation (cheap; run before any long work) ------------------------------------------------
def _model_shape(model: nn.Module, kind: str) -> tuple[int, ...] | None:
    meta = getattr(model, "metadata", None) or {}
    shape = meta.get("data_shape")
    if shape is None and kind == "generator":
        shape = getattr(model, "out_shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _is_latent(model: nn.Module) -> bool:
    """True for a latent score model (LID in latent space; ``encode``/``decode`` to pixels)."""
    return (getattr(model, "metadata", None) or {}).get("space") == "latent" and hasattr(model, "encode")


def _image_shape(model: nn.Module, kind: str) -> tuple[int, ...] | None:
    shape = (getattr(model, "metadata", None) or {}).get("image_shape")
    return tuple(int(s) for s in shape) if shape else _model_shape(model, kind)


def check_audit_inputs(
    model: nn.Module,
    kind: str,
    train: np.ndarray,
    samples: np.ndarray | None = None,
    *,
    lpca_k: int | None = 100,
    copy_k: int = 5,
) -> None:
    """Validate everything cheap before the long work: kinds, shapes, finite pixels, sizes.
    ``lpca_k=None`` skips the check of local PCA's ``k`` (the default adapts to ``train``).
    Raises ValueError/TypeError (:class:`ArgumentError` naming ``train``, ``samples``, ``lpca_k``)."""
    if kind not in ("score_model", "generator"):
        raise ValueError(f"kind={kind!r} must be 'score_model' or 'generator'")
    if kind == "score_model" and not hasattr(model, "sde"):
        raise TypeError(f"a score model needs an .sde attribute (wrap networks in lidmem.ScoreModel); got {type(model).__name__}")
    if kind == "generator" and not hasattr(model, "latent_dim"):
        raise TypeError(f"a generator needs a latent_dim attribute (z has shape (n, latent_dim)); got {type(model).__name__}")
    train = np.asarray(train)
    if train.ndim != 4:
        raise ArgumentError(f"train must hold images of shape (n, c, h, w); got shape {train.shape}", argument="train")
    if len(train) == 0:
        raise ArgumentError("train is empty; give the model's training images (n, c, h, w)", argument="train")
    shape = _image_shape(model, kind)
    if shape is not None and tuple(train.shape[1:]) != shape:
        raise ArgumentError(
            f"the model generates images of shape {shape} but the training images (train) have shape {tuple(train.shape[1:])}; "
            "use the training set the model was trained on", argument="train"
        )
    if np.issubdtype(train.dtype, np.floating):
        bad = ~np.isfinite(train.reshape(len(train), -1)).all(axis=1)
        if bad.any():
            raise ArgumentError(
                f"train holds NaN or infinite values in {int(bad.sum())} of {len(train)} images (first: row {int(np.argmax(bad))}); "
                "drop or fix those images", argument="train")
    if samples is not None:
        samples = np.asarray(samples)
        if kind == "generator":
            raise ValueError("given samples need a score model: a generator's Jacobian rank needs each sample's latent z; drop --samples")
        if samples.ndim != 4 or tuple(samples.shape[1:]) != tuple(train.shape[1:]):
            raise ValueError(f"samples have shape {samples.shape[1:]} per image but training images have {tuple(train.shape[1:])}")
    if lpca_k is None:
        default_lpca_k(len(train))
    elif check_positive_int(lpca_k, "lpca_k") > len(train) - 1:
        raise ArgumentError(f"lpca_k={lpca_k} must be <= n_train - 1 = {len(train) - 1}; lower it for this small training set", argument="lpca_k")
    copy_k = check_positive_int(copy_k, "copy_k")


#: Neighbours of the audit's local PCA (LID_*) when the training set is large enough.
LPCA_K = 100


def default_lpca_k(n_train: int, name: str = "train") -> int:
    """The audit's local-PCA ``k`` for ``n_train`` training images: ``min(100, n_train - 1)``
    (each image has ``n_train - 1`` others; local PCA needs ``k >= 2``, so at least 3 images).
    Raises :class:`ArgumentError` naming ``name`` for fewer than 3."""
    if n_train < 3:
        raise ArgumentError(f"{name} has {n_train} training point(s); local PCA (LID_*) needs at least 3", argument=name)
    return min(LPCA_K, n_train - 1)


def lpca_k_note(k: int, n_train: int) -> str:
    """The summary's ``settings.lpca_k_rule`` when ``k`` came from :func:`default_lpca_k`."""
    return f"default min({LPCA_K}, n_train - 1) = {k} for n_train = {n_train}"


# --- the audit ----------------------------------------------------------------------------------
def _resolve_estimators(
    model: nn.Module, kind: str, lid_theta: Any, normal_bundle: Any, lid_star: Any, *, seed: int, progress: bool | None, n_train: int
) -> tuple[FLIPD | JacobianRank, NormalBundle | None, LocalPCA]:
    """The audit's estimator objects: the given ones (checked) or the audit's defaults (local
    PCA's ``k`` adapted to ``n_train``: :func:`default_lpca_k`)."""
    if lid_theta is None:
        lid_theta = (FLIPD(model, t0=FLIPD_T0_WITH_TRAINING_DATA, trace="hutchinson", n_probes=8, seed=seed, progress=progress) if kind == "score_model"
                     else JacobianRank(model, threshold="percentile", percentile=10.0, progress=progress))
    want = FLIPD if kind == "score_model" else JacobianRank
    if not isinstance(lid_theta, want):
        raise TypeError(f"lid_theta must be a lidmem.estimators.{want.__name__} for a {kind}; got {type(lid_theta).__name__}")
    bound = lid_theta.model if isinstance(lid_theta, FLIPD) else lid_theta.generator
    if bound is not None and bound is not model:
        raise ValueError(f"lid_theta is a {want.__name__} of another model; build it on the audited model ({want.__name__}(model, ...))")
    if isinstance(lid_theta, FLIPD) and isinstance(lid_theta.t0, str) and lid_theta.t0 != "auto":
        raise ValueError(f"lid_theta.t0={lid_theta.t0!r} must be a float in (0, 1] or 'auto'")
    if isinstance(normal_bundle, str):
        if normal_bundle != "default":
            raise ValueError(f"normal_bundle={normal_bundle!r} must be a NormalBundle, 'default' or None")
        normal_bundle = NormalBundle(model, t0=NB_T0, n_scores=None, threshold=NB_THRESHOLD, seed=seed, progress=progress)
    if normal_bundle is not None:
        if not isinstance(normal_bundle, NormalBundle):
            raise TypeError(f"normal_bundle must be a lidmem.estimators.NormalBundle, 'default' or None; got {type(normal_bundle).__name__}")
        if normal_bundle.model is not None and normal_bundle.model is not model:
            raise ValueError("normal_bundle is a NormalBundle of another model; build it on the audited model (NormalBundle(model, ...))")
    if lid_star is None:
        lid_star = LocalPCA(k=default_lpca_k(n_train), tau="fo", radius=0.0, radius_percentile=10.0, seed=seed, progress=progress)
    if not isinstance(lid_star, LocalPCA):
        raise TypeError(f"lid_star must be a lidmem.estimators.LocalPCA; got {type(lid_star).__name__}")
    return lid_theta, normal_bundle, lid_star


def _estimator_settings(
    lid_theta: FLIPD | JacobianRank, nb: NormalBundle | None, lid_star: LocalPCA, *, t0_used: float | None, sweep: list[float], nb_max_dim: int
) -> dict[str, Any]:
    """The estimators' settings under the summary's keys (``flipd_*``, ``nb_*``, ``jacobian_*``, ``lpca_*``).

    A generator's summary keeps FLIPD's audit defaults (unused), as before the estimator objects.
    """
    flipd = lid_theta if isinstance(lid_theta, FLIPD) else None
    return {
        "flipd_t0": flipd.t0 if flipd else "auto", "flipd_t0_used": t0_used, "flipd_t0_sweep": sweep,
        "flipd_trace": flipd.trace if flipd else "hutchinson", "flipd_probes": flipd.n_probes if flipd else 8,
        "nb_t0": nb.t0 if nb else None, "nb_scores": nb.n_scores if nb else None, "nb_threshold": nb.threshold if nb else None,
        "nb_max_dim": nb_max_dim,
        "jacobian_percentile": lid_theta.percentile if isinstance(lid_theta, JacobianRank) else 10.0,
        "lpca_k": lid_star.k, "lpca_tau": lid_star.tau, "lpca_radius": lid_star.radius, "lpca_radius_percentile": lid_star.radius_percentile,
    }


def _generate(model: nn.Module, kind: str, n: int, *, steps: int, seed: int, batch_size: int, progress: bool | None) -> tuple[np.ndarray, torch.Tensor | None]:
    shape = _model_shape(model, kind)
    if kind == "generator":
        from ..generators import sample_generator

        x, z = sample_generator(model, n, seed=seed, batch_size=batch_size)
        return x.numpy().astype(np.float32), z
    if shape is None:
        raise ValueError("the score model has no data_shape in its metadata; pass samples instead of generating")
    from ..diffusion.sampling import sample_ode

    outs = []
    for i, sl in enumerate(chunk_slices(n, batch_size)):
        with torch.no_grad():
            x = sample_ode(model, (sl.stop - sl.start, *shape), steps=steps, denoise=True, seed=seed + i, progress=progress)
        outs.append(x)
    x = torch.cat(outs)
    if _is_latent(model):  # latents -> images for the nearest-neighbour search; keep the latents for LID
        images = torch.cat([model.decode(x[sl]) for sl in chunk_slices(len(x), batch_size)])
        return images.cpu().numpy().astype(np.float32), x
    return x.numpy().astype(np.float32), None


def audit_memorization(
    model: nn.Module,
    train: TrainingImages | np.ndarray,
    *,
    kind: str | None = None,
    samples: np.ndarray | None = None,
    sample_ids: list[str] | None = None,
    num_samples: int = 500,
    num_inference_steps: int = 50,
    lid_theta: FLIPD | JacobianRank | None = None,
    normal_bundle: NormalBundle | Literal["default"] | None = "default",
    lid_star: LocalPCA | None = None,
    t0_sweep: Sequence[float] | None = FLIPD_T0_SWEEP,
    nb_max_dim: int = 1024,
    copy_k: int = 5,
    exact_threshold: float = 0.3,
    near_threshold: float = 0.5,
    cos_threshold: float = 0.97,
    embedder: Any = None,
    search: str = "auto",
    lid_star_train: np.ndarray | None = None,
    mmh_od_margin: float = 0.5,
    mmh_dd_threshold: float = 0.5,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> AuditResult:
    """Run the memorization audit (see the module docstring) and return its data.

    Parameters
    ----------
    model : ScoreModel or generator nn.Module
        A score model (``model(x, t) -> score`` with ``.sde``) or a generator ``G(z)`` with a
        ``latent_dim`` attribute (:class:`lidmem.generators.MLPDecoder`).
    train : TrainingImages or ndarray of shape (m, c, h, w)
        Training images in [-1, 1] (arrays get ids ``"0", "1", ...``).
    kind : {"score_model", "generator"}, optional
        Default: ``"generator"`` when ``model`` has ``latent_dim``, else ``"score_model"``.
    samples : ndarray of shape (n, c, h, w), optional
        Audit these images instead of generating (score models only).
    sample_ids : list of str, optional
        Ids of given samples (default ``"s00000", ...``).
    num_samples : int, default=500
        Number of samples to generate.
    num_inference_steps : int, default=50
        Heun steps of the probability-flow ODE (to t=1e-3, then Tweedie denoising).
    lid_theta : FLIPD or JacobianRank, optional
        LID_theta estimator of the samples, built on ``model`` (or with ``model=None``). Score
        models take :class:`lidmem.estimators.FLIPD`; default ``FLIPD(model, t0="auto",
        trace="hutchinson", n_probes=8, seed=seed)``. Its ``t0="auto"`` means, in the audit,
        :func:`lidmem.estimators.t0.t0_from_training_data` (noise length = twice the training set's
        median nearest-neighbour gap, measured on the encoded training images for a latent model;
        label-free; docs/t0.md), not FLIPD's knee rule; the summary's ``settings.flipd_t0_used``
        holds the value used. FLIPD runs as its memorization map (:func:`lidmem.estimators.flipd_map`,
        the map's sum is FLIPD) with the estimator's ``trace``, ``n_probes``, ``probe``, ``seed``,
        ``batch_size`` and ``extra_args``. Generators take :class:`lidmem.estimators.JacobianRank`;
        default ``JacobianRank(model, threshold="percentile", percentile=10.0)`` (the paper's rule).
    normal_bundle : NormalBundle, "default" or None, default="default"
        Second LID_theta of score models (eq. 7-8). ``"default"``: ``NormalBundle(model, t0=0.05,
        n_scores=None, threshold="percentile", seed=seed)`` (n_scores None: 4d, the paper's
        recommendation; the paper's global 10th-percentile rule. On the digits UNet the per-point
        "gap" rule returns d - 1 everywhere: the score columns share one dominant direction,
        Tweedie's denoising offset, whenever the model does not denoise back to the sample
        itself). None skips it (NaN column).
    lid_star : LocalPCA, optional
        LID_* estimator fitted on the training set (each image excluded from its own search);
        default ``LocalPCA(k=min(100, n_train - 1), tau="fo", radius=0.0, radius_percentile=10.0,
        seed=seed)`` (the summary's ``settings.lpca_k_rule`` says when ``k`` was adapted to a
        small training set). A given ``k`` must be <= n_train - 1. ``radius=0.0`` restricts a neighbourhood to exact
        duplicates when there are any (so duplicated training images get LID_* = 0);
        ``"percentile"`` is the paper's rule (points within the 10th percentile of all pairwise
        training distances). On the 8x8 digits that radius (4.8 in [-1, 1] units) is more than
        twice the typical nearest-neighbour distance and merges distinct digits with the planted
        duplicates (0% of them get LID_* = 0).
    t0_sweep : sequence of float or None, default=FLIPD_T0_SWEEP
        Extra times at which FLIPD is also computed (probes shared with the chosen t0); the
        summary's ``flipd_t0_sweep`` gives AUROC / TPR@1%FPR of each against the copy labels, so a
        poorly chosen ``t0`` shows. Costs one FLIPD evaluation per time; None or ``()`` skips it.
    nb_max_dim : int, default=1024
        Skip the normal bundle (NaN column) when the model input has more values ``d`` than this
        (0: always skip). Its cost is ``n_scores`` (4d) network calls and an SVD of a
        ``n_scores x d`` matrix per sample, infeasible on CPU beyond a few hundred values.
        Capping ``n_scores`` at ``k < d`` instead bounds the estimate below by ``d - k``: a copy
        (rank ``d``) reads as ``d - k`` at best, so LID_NB only ranks samples within ``[d - k, d]``.
    copy_k, exact_threshold, near_threshold, cos_threshold, embedder, search
        Copy detection (:func:`lidmem.memorization.copy_detection.find_copies`).
    lid_star_train : ndarray of shape (m,), optional
        Precomputed LID_* of every training image (``AuditResult.lid_star_train`` of an earlier
        audit on the same training set); skips local PCA.
    mmh_od_margin, mmh_dd_threshold : float, default=0.5
        Thresholds of :func:`lidmem.memorization.mmh.classify_mmh`, applied to the primary
        LID_theta (FLIPD, or the Jacobian rank) and LID_*.
    batch_size : int, default=256
        Samples per generation / estimator chunk.
    seed : int, default=0
    progress : bool or None
        Progress bars (None: only on a terminal).
    log : callable or None
        Called with one line per stage (start, end, counts, seconds), e.g. ``print`` to stderr:
        progress for logs that are not a terminal. None: silent.

    Returns
    -------
    AuditResult
    """
    import pandas as pd

    from ..estimators import flipd_curve, flipd_map
    from .complexity import png_length
    from .copy_detection import find_copies
    from .metrics import detection_table
    from .mmh import classify_mmh
    from .reliability import audit_reliability

    timings: dict[str, float] = {}
    say = log if log is not None else (lambda msg: None)
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed)
    tr = train if isinstance(train, TrainingImages) else TrainingImages(np.asarray(train, np.float32), [str(i) for i in range(len(train))])
    if kind is None:
        kind = "generator" if hasattr(model, "latent_dim") else "score_model"
    check_audit_inputs(model, kind, tr.images, samples, lpca_k=None, copy_k=copy_k)
    k_rule = None if lid_star is not None else lpca_k_note(default_lpca_k(len(tr.images)), len(tr.images))
    lid_theta, nb_est, lpca = _resolve_estimators(model, kind, lid_theta, normal_bundle, lid_star, seed=seed, progress=progress,
                                                  n_train=len(tr.images))
    if isinstance(lpca.k, int) and lpca.k > len(tr.images) - 1:
        raise ArgumentError(f"lid_star.k={lpca.k} must be <= n_train - 1 = {len(tr.images) - 1}; use LocalPCA(k=...) with a smaller k "
                            "for this small training set, or lid_star=None (k = min(100, n_train - 1))", argument="lid_star")
    if len(tr.ids) != len(tr.images):
        raise ValueError(f"train has {len(tr.images)} images but {len(tr.ids)} ids")
    if samples is None:
        num_samples = check_positive_int(num_samples, "num_samples")
    elif sample_ids is not None and len(sample_ids) != len(samples):
        raise ValueError(f"samples has {len(samples)} images but sample_ids has {len(sample_ids)} entries")

    sweep = [check_t0(v, "t0_sweep") for v in (t0_sweep or ())]
    if k_rule is not None and lpca.k < LPCA_K:
        say(f"local PCA k = {lpca.k}: {k_rule}")

    t = time.perf_counter()
    z = None
    if samples is None:
        say(f"generating {num_samples} samples ({kind}) ...")
        x_np, z = _generate(model, kind, num_samples, steps=num_inference_steps, seed=seed, batch_size=batch_size, progress=progress)
        ids = [f"s{i:05d}" for i in range(len(x_np))]
        sample_source = "generated"
    else:
        x_np = np.asarray(samples, dtype=np.float32)
        ids = list(sample_ids) if sample_ids is not None else [f"s{i:05d}" for i in range(len(x_np))]
        sample_source = "given"
    timings["samples_s"] = time.perf_counter() - t
    n = len(x_np)
    say(f"samples: {n} ({sample_source}, {timings['samples_s']:.1f} s)")
    out_of_range = _out_of_range(x_np, tr.images)
    if out_of_range["n_samples"]:
        msg = (f"{out_of_range['n_samples']}/{n} samples leave the training data's value range "
               f"[{out_of_range['train_min']:.2f}, {out_of_range['train_max']:.2f}] (sample values in "
               f"[{out_of_range['sample_min']:.2f}, {out_of_range['sample_max']:.2f}]): the model may be undertrained "
               "or sampled with too few steps, and LID estimates of such samples are unreliable")
        warnings.warn(msg, UserWarning, stacklevel=2)
        say("warning: " + msg)

    t = time.perf_counter()
    say("copy detection ...")
    matches = find_copies(x_np, tr.images, k=copy_k, embedder=embedder, exact_threshold=exact_threshold,
                          near_threshold=near_threshold, cos_threshold=cos_threshold, search=search)
    timings["copy_detection_s"] = time.perf_counter() - t
    say(f"copy detection: {int((matches.labels != 'none').sum())} copies ({timings['copy_detection_s']:.1f} s)")

    x_t = torch.from_numpy(x_np)
    if kind == "score_model" and _is_latent(model):  # LID_theta in latent space (docs/models.md)
        x_t = z if z is not None else torch.cat([model.encode(x_t[sl]) for sl in chunk_slices(n, batch_size)])
    d = int(np.prod(x_t.shape[1:]))
    nan = np.full(n, np.nan)
    lid_flipd, lid_nb, lid_jac, maps = nan.copy(), nan.copy(), None, None
    t = time.perf_counter()
    t0_used: float | None = None
    sweep_curve = None
    if isinstance(lid_theta, FLIPD):
        flipd_t0 = lid_theta.t0
        if flipd_t0 == "auto":
            from ..estimators.t0 import t0_from_training_data

            train_t0 = tr.images
            if _is_latent(model):  # the noise scale is matched in the space FLIPD runs in: encode (<= 2000 images)
                pick = np.random.default_rng(seed).permutation(len(train_t0))[:2000]
                enc = torch.from_numpy(np.ascontiguousarray(train_t0[np.sort(pick)]))
                train_t0 = torch.cat([model.encode(enc[sl]) for sl in chunk_slices(len(enc), batch_size)]).numpy()
            t0_used = t0_from_training_data(model.sde, train_t0, seed=seed)
        else:
            t0_used = check_t0(flipd_t0, "lid_theta.t0")
        others = [v for v in sweep if v != t0_used]
        say(f"FLIPD at t0 = {t0_used:.4g}" + (f" (+ {len(others)} sweep times)" if others else "") + " ...")
        # the memorization maps are FLIPD's summands: their sum is FLIPD at no extra cost
        est = lid_theta
        ad = {} if est.ad == "auto" else {"ad": est.ad}
        maps = flipd_map(model, x_t, t0=t0_used, trace=est.trace, n_probes=est.n_probes, probe=est.probe, seed=est.seed,
                         batch_size=est.batch_size, progress=est.progress, extra_args=est.extra_args, **ad).numpy()
        lid_flipd = maps.reshape(n, -1).sum(1, dtype=np.float64)
        swept = {t0_used: lid_flipd}
        if others:
            curve = flipd_curve(model, x_t, others, trace=est.trace, n_probes=est.n_probes, probe=est.probe, seed=est.seed,
                                batch_size=est.batch_size, progress=est.progress, ad=est.ad, extra_args=est.extra_args).double().numpy()
            swept.update({v: curve[:, i] for i, v in enumerate(others)})
        sweep_curve = {v: swept[v] for v in sweep}
        timings["flipd_s"] = time.perf_counter() - t
        say(f"FLIPD: {timings['flipd_s']:.1f} s")
        if nb_est is not None and d <= nb_max_dim:
            t = time.perf_counter()
            say(f"normal bundle ({nb_est.n_scores if nb_est.n_scores is not None else 4 * d} scores per sample) ...")
            lid_nb = nb_est.estimate(x_t).double().numpy()
            timings["normal_bundle_s"] = time.perf_counter() - t
            say(f"normal bundle: {timings['normal_bundle_s']:.1f} s")
        elif nb_est is None:
            say("normal bundle skipped (normal_bundle=None)")
        else:
            say(f"normal bundle skipped: d = {d} > nb_max_dim = {nb_max_dim}")
        primary, primary_name = lid_flipd, "lid_theta_flipd"
    else:
        say("Jacobian rank ...")
        lid_jac = lid_theta.estimate(z).double().numpy()
        timings["jacobian_rank_s"] = time.perf_counter() - t
        primary, primary_name = lid_jac, "lid_theta_jacobian"
    png = png_length(x_np)
    lid_png = primary / png

    t = time.perf_counter()
    say("local PCA of the training set (LID_*) ...")
    if lid_star_train is None:
        lid_star_train = lpca.fit(tr.images.reshape(len(tr.images), -1)).estimate(None).numpy()
    else:
        lid_star_train = np.asarray(lid_star_train)
        if lid_star_train.shape != (len(tr.images),):
            raise ValueError(f"lid_star_train must have shape (n_train,)=({len(tr.images)},); got {lid_star_train.shape}")
    lid_star = lid_star_train[matches.nn_index].astype(np.float64)
    timings["local_pca_s"] = time.perf_counter() - t

    mmh = classify_mmh(primary, lid_star, od_margin=mmh_od_margin, dd_threshold=mmh_dd_threshold)
    df = pd.DataFrame({
        "sample_id": ids,
        "nn_train_id": [tr.ids[j] for j in matches.nn_index],
        "calibrated_l2": matches.calibrated_l2,
        "embed_cos": matches.embed_cos,
        "copy_label": matches.labels,
        "lid_theta_flipd": lid_flipd,
        "lid_theta_nb": lid_nb,
        "lid_theta_png": lid_png,
        "lid_star": lid_star,
        "mmh_class": np.asarray(mmh.mmh_class).astype(str),
    })
    if lid_jac is not None:
        df["lid_theta_jacobian"] = lid_jac
    df["nn_train_index"] = matches.nn_index
    df["l2"] = matches.l2
    df["png_length"] = png
    if tr.duplicated is not None:
        df["train_duplicated"] = tr.duplicated[matches.nn_index]

    summary: dict[str, Any] = {
        "model_kind": kind,
        "lid_space": "latent" if kind == "score_model" and _is_latent(model) else "pixel",
        "primary_lid_theta": primary_name,
        "n_samples": n,
        "sample_source": sample_source,
        "n_train": len(tr.images),
        "image_shape": list(x_np.shape[1:]),
        "train": tr.description,
        "settings": {
            "num_samples": num_samples if samples is None else None, "sampling_steps": num_inference_steps,
            "sampler": "probability-flow ODE, Heun, t 1 -> 1e-3, Tweedie denoise" if kind == "score_model" else "G(z), z ~ N(0, I)",
            **_estimator_settings(lid_theta, nb_est, lpca, t0_used=t0_used, sweep=sweep, nb_max_dim=nb_max_dim),
            **({"lpca_k_rule": k_rule} if k_rule is not None else {}),
            "seed": seed, "copy_detection": {**matches.settings, **matches.thresholds},
        },
        "mmh": _mmh_summary(mmh),
        "copy_label_counts": {lab: int((matches.labels == lab).sum()) for lab in ("exact_copy", "near_copy", "none")},
        "mmh_class_counts": {str(k): int(v) for k, v in df["mmh_class"].value_counts().items()},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "samples_out_of_range": out_of_range,
    }
    table = []
    for positive, lab in (("copy (exact or near)", matches.labels != "none"), ("exact_copy", matches.labels == "exact_copy")):
        cols = {col: df[col].to_numpy(dtype=float) for col in _SCORE_COLUMNS if col in df and np.isfinite(df[col].to_numpy(dtype=float)).all()}
        for r in detection_table(lab, cols, higher_is_positive={c: higher_is_memorized(c) for c in cols}, one_class="note", seed=seed):
            row: dict[str, Any] = {"positive": positive, "score": r["metric"], "direction": "low = copy", "auroc": r["auroc"],
                                   "tpr_at_1pct_fpr": r["tpr_at_1pct_fpr"], "n_positive": r["n_positive"], "n_negative": r["n_negative"],
                                   **_interval_fields(r)}
            if "note" in r:
                row["note"] = r["note"]
            table.append(row)
    summary["detection"] = table
    if sweep_curve:
        summary["flipd_t0_sweep"] = _t0_sweep_table(sweep_curve, matches.labels, seed=seed)
    summary["reliability"] = audit_reliability(
        n_samples=n, n_out_of_range=out_of_range["n_samples"], lid_theta=primary, lid_theta_name=primary_name, d=d,
        mmh=summary["mmh"], n_copies=int((matches.labels != "none").sum()), n_exact_copies=int((matches.labels == "exact_copy").sum()))
    if tr.duplicated is not None:
        dup = tr.duplicated
        exact = matches.labels == "exact_copy"
        src = matches.nn_index[exact]
        summary["planted_duplicates"] = {
            "n_train_rows_duplicated": int(dup.sum()),
            "n_distinct_duplicated": int(len(np.unique(tr.images[dup].reshape(int(dup.sum()), -1), axis=0))) if dup.any() else 0,
            "n_exact_copies": int(exact.sum()),
            "exact_copies_of_planted": int(dup[src].sum()),
            "distinct_planted_reproduced": int(len(np.unique(src[dup[src]]))),
            "samples_matched_to_planted": int(dup[matches.nn_index].sum()),
            "lid_star_zero_frac_duplicated_train": float((lid_star_train[dup] == 0).mean()) if dup.any() else None,
            "lid_star_positive_frac_other_train": float((lid_star_train[~dup] > 0).mean()) if (~dup).any() else None,
        }
    summary["lid_star_train"] = {"mean": float(lid_star_train.mean()), "zero_frac": float((lid_star_train == 0).mean())}
    return AuditResult(samples=df, summary=summary, sample_images=x_np, train_images=tr.images,
                       lid_star_train=lid_star_train, maps=maps)


def _out_of_range(x: np.ndarray, train: np.ndarray, tol: float = 0.05) -> dict[str, Any]:
    """Samples with a value outside the training images' range widened by ``tol`` of its width."""
    lo, hi = float(train.min()), float(train.max())
    pad = tol * (hi - lo)
    flat = x.reshape(len(x), -1)
    bad = (flat.min(1) < lo - pad) | (flat.max(1) > hi + pad)
    return {"n_samples": int(bad.sum()), "train_min": lo, "train_max": hi,
            "sample_min": float(flat.min()), "sample_max": float(flat.max()), "tolerance": tol}


def _interval_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The bootstrap-interval entries of a :func:`~lidmem.memorization.metrics.detection_table` row."""
    return {k: row.get(k) for k in ("auroc_ci", "tpr_at_1pct_fpr_ci", "ci_note")}


def _t0_sweep_table(curves: dict[float, np.ndarray], labels: np.ndarray, *, seed: int = 0) -> list[dict[str, Any]]:
    """AUROC / TPR@1%FPR (with 95% bootstrap intervals) of FLIPD (low = copy) at each sweep time,
    against exact-or-near copies."""
    from .metrics import detection_table

    lab = labels != "none"
    rows = []
    for t0, c in sorted(curves.items()):
        row: dict[str, Any] = {"t0": t0, "median_flipd_copies": float(np.median(c[lab])) if lab.any() else None,
                               "median_flipd_others": float(np.median(c[~lab])) if (~lab).any() else None}
        (r,) = detection_table(lab, {"lid_theta_flipd": c}, higher_is_positive=higher_is_memorized("lid_theta_flipd"), one_class="note",
                               seed=seed)
        row.update(auroc=r["auroc"], tpr_at_1pct_fpr=r["tpr_at_1pct_fpr"], n_positive=r["n_positive"], **_interval_fields(r))
        rows.append(row)
    return rows


def _mmh_summary(mmh: Any) -> dict[str, Any]:
    return {"lid_theta": "primary_lid_theta", **mmh.thresholds()}
