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

Choice of FLIPD's ``t0``: the default ``flipd_t0=0.1`` (VP-SDE, sigma(0.1) ~ 0.43 in [-1, 1]
pixel units, about 3.5 grey levels of the digits) was chosen on the digits UNet by a sweep
(300 samples, copies vs non-copies; 3,500-step checkpoint): AUROC 0.88 / 0.996 / 0.999 / 0.999
at t0 = 0.02 / 0.05 / 0.1 / 0.2, with median FLIPD of copies 18.2 / 4.5 / -0.5 / -2.4 and of
non-copies 29.4 / 24.2 / 16.1 / 7.6. At t0 = 0.1 copies sit at ~0 (so the MMH rule can call them
DD-Mem) while non-copies keep a clearly positive LID; smaller t0 resolves less of the UNet's
collapse onto the copies, larger t0 shrinks every value towards 0. FLIPD of a UNet can be
negative (footnote 4 of the paper).
Use :func:`lidmem.estimators.select_t0` or ``flipd_curve`` to pick it for another model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import check_positive_int
from ..utils import chunk_slices

__all__ = [
    "SAMPLE_COLUMNS",
    "AuditResult",
    "TrainingImages",
    "load_audit_model",
    "load_training_images",
    "load_sample_images",
    "check_audit_inputs",
    "audit_memorization",
    "write_audit_report",
]

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
# scores whose detection quality is reported (all: low = memorized)
_LOW_IS_COPY = ["lid_theta_flipd", "lid_theta_nb", "lid_theta_png", "lid_theta_jacobian", "lid_star"]


@dataclass
class TrainingImages:
    """Training images ``(n, c, h, w)`` in [-1, 1] with ids, optional planted-duplicate flags."""

    images: np.ndarray
    ids: list[str]
    duplicated: np.ndarray | None = None
    description: dict[str, Any] = field(default_factory=dict)


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
        ``lid_theta_flipd``. Written to ``maps.npy``.
    """

    samples: Any
    summary: dict[str, Any]
    sample_images: np.ndarray
    train_images: np.ndarray
    lid_star_train: np.ndarray | None = None
    maps: np.ndarray | None = None

    def write(self, out_dir: str | Path, *, report: bool = True, n_grid: int = 24) -> dict[str, Path]:
        """Write ``samples.parquet``, ``summary.json`` and (optionally) ``report.html`` to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"samples": out / "samples.parquet", "summary": out / "summary.json"}
        self.samples.to_parquet(paths["samples"], index=False)
        paths["summary"].write_text(json.dumps(_jsonable(self.summary), indent=2), encoding="utf-8")
        if self.maps is not None:
            paths["maps"] = out / "maps.npy"
            np.save(paths["maps"], self.maps)
        if report:
            paths["report"] = write_audit_report(self, out / "report.html", n_grid=n_grid)
        return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --- loading & validation (cheap; run before any long work) ------------------------------------
def load_audit_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """Load any model reference (:func:`lidmem.models.load_model`); returns ``(model, kind)``
    with ``kind`` ``"score_model"`` or ``"generator"``.

    Raises ValueError for a reference that is no model lidmem can audit, before long work.
    """
    from ..models import load_model

    model = load_model(path, device=device)
    return model, model.info.kind


def load_training_images(source: str | Path) -> TrainingImages:
    """Training images from ``"digits"`` (built-in planted duplicates), a folder of images, or a ``.npy``.

    - ``"digits"``: :func:`lidmem.data.images.load_digits_with_duplicates` (defaults), with flags.
    - a folder: every image file in it (one size; grey or RGB), mapped to [-1, 1]; ids = file stems.
    - ``.npy``: an array ``(n, c, h, w)`` already in [-1, 1]; ids = row numbers.

    Raises ValueError for an empty folder, mixed image sizes, or an unsupported path.
    """
    from ..data.images import load_digits_with_duplicates, read_png_folder
    from ..data.io import load_npy

    if str(source) == "digits":
        d = load_digits_with_duplicates()
        return TrainingImages(d.images, d.ids, d.duplicated, {"source": "digits", **d.recipe})
    path = Path(source)
    if path.is_dir():
        imgs, ids = read_png_folder(path)
        return TrainingImages(imgs, ids, None, {"source": str(path)})
    if path.suffix.lower() == ".npy" and path.is_file():
        arr = load_npy(path, "training set").astype(np.float32)
        if arr.ndim != 4:
            raise ValueError(f"{path} holds an array of shape {arr.shape}; a training set .npy must have shape (n, c, h, w) in [-1, 1]")
        return TrainingImages(arr, [str(i) for i in range(len(arr))], None, {"source": str(path)})
    raise ValueError(f"training data {source!s} is neither 'digits', a folder of images, nor an existing .npy file")


def load_sample_images(source: str | Path) -> tuple[np.ndarray, list[str]]:
    """Given samples: a folder of images (ids = file stems) or a ``.npy`` ``(n, c, h, w)`` in [-1, 1]."""
    from ..data.images import read_png_folder
    from ..data.io import load_npy

    path = Path(source)
    if path.is_dir():
        return read_png_folder(path)
    if path.suffix.lower() == ".npy" and path.is_file():
        arr = load_npy(path, "samples").astype(np.float32)
        if arr.ndim != 4:
            raise ValueError(f"{path} holds an array of shape {arr.shape}; samples must have shape (n, c, h, w) in [-1, 1]")
        return arr, [str(i) for i in range(len(arr))]
    raise ValueError(f"samples {source!s} is neither a folder of images nor an existing .npy file")


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
    lpca_k: int = 100,
    copy_k: int = 5,
) -> None:
    """Validate everything cheap before the long work: kinds, shapes, sizes. Raises ValueError/TypeError."""
    if kind not in ("score_model", "generator"):
        raise ValueError(f"kind={kind!r} must be 'score_model' or 'generator'")
    if kind == "score_model" and not hasattr(model, "sde"):
        raise TypeError(f"a score model needs an .sde attribute (wrap networks in lidmem.ScoreModel); got {type(model).__name__}")
    if kind == "generator" and not hasattr(model, "latent_dim"):
        raise TypeError(f"a generator needs a latent_dim attribute (z has shape (n, latent_dim)); got {type(model).__name__}")
    train = np.asarray(train)
    if train.ndim != 4:
        raise ValueError(f"training images must have shape (n, c, h, w); got {train.shape}")
    shape = _image_shape(model, kind)
    if shape is not None and tuple(train.shape[1:]) != shape:
        raise ValueError(
            f"the model generates images of shape {shape} but the training images have shape {tuple(train.shape[1:])}; "
            "use the training set the model was trained on"
        )
    if samples is not None:
        samples = np.asarray(samples)
        if kind == "generator":
            raise ValueError("given samples need a score model: a generator's Jacobian rank needs each sample's latent z; drop --samples")
        if samples.ndim != 4 or tuple(samples.shape[1:]) != tuple(train.shape[1:]):
            raise ValueError(f"samples have shape {samples.shape[1:]} per image but training images have {tuple(train.shape[1:])}")
    lpca_k = check_positive_int(lpca_k, "lpca_k")
    if lpca_k > len(train) - 1:
        raise ValueError(f"lpca_k={lpca_k} must be <= n_train - 1 = {len(train) - 1}; lower it for this small training set")
    copy_k = check_positive_int(copy_k, "copy_k")


# --- the audit ----------------------------------------------------------------------------------
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
    sampling_steps: int = 50,
    flipd_t0: float = 0.1,
    flipd_trace: str = "hutchinson",
    flipd_probes: int = 8,
    nb_t0: float = 0.05,
    nb_scores: int | None = None,
    nb_threshold: str | float = "percentile",
    nb_max_dim: int = 1024,
    jacobian_percentile: float = 10.0,
    copy_k: int = 5,
    exact_threshold: float = 0.3,
    near_threshold: float = 0.5,
    cos_threshold: float = 0.97,
    embedder: Any = None,
    search: str = "auto",
    lpca_k: int = 100,
    lpca_tau: str | float = "fo",
    lpca_radius: str | float | None = 0.0,
    lpca_radius_percentile: float = 10.0,
    lid_star_train: np.ndarray | None = None,
    mmh_od_margin: float = 0.5,
    mmh_dd_threshold: float = 0.5,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
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
    sampling_steps : int, default=50
        Heun steps of the probability-flow ODE (to t=1e-3, then Tweedie denoising).
    flipd_t0 : float, default=0.1
        FLIPD time (see the module docstring for the choice).
    flipd_trace : {"hutchinson", "exact"}, default="hutchinson"
    flipd_probes : int, default=8
        Rademacher probes for the Hutchinson trace.
    nb_t0 : float, default=0.05
    nb_scores : int or None, default=None
        Noisy copies per point for the normal bundle (None: 4d, the paper's recommendation).
    nb_threshold : {"percentile", "gap"} or float, default="percentile"
        Rank rule of :func:`lidmem.estimators.normal_bundle`; the paper's global 10th-percentile
        rule. (On the digits UNet the per-point "gap" rule returns d - 1 everywhere: the score
        columns share one dominant direction, Tweedie's denoising offset, whenever the model
        does not denoise back to the sample itself.)
    nb_max_dim : int, default=1024
        Skip the normal bundle (NaN column) when the image has more values ``d`` than this.
    jacobian_percentile : float, default=10.0
        tau of the Jacobian rank: this percentile of all singular values (the paper's rule).
    copy_k, exact_threshold, near_threshold, cos_threshold, embedder, search
        Copy detection (:func:`lidmem.memorization.copy_detection.find_copies`).
    lpca_k : int, default=100
        Neighbours of local PCA for LID_* (must be <= n_train - 1).
    lpca_tau : {"fo", "percentile"} or float, default="fo"
        Threshold rule of local PCA (:class:`lidmem.estimators.LocalPCA`, same default):
        Fukunaga-Olsen per neighbourhood, or the paper's global 10th percentile.
    lpca_radius, lpca_radius_percentile : default=0.0, 10.0
        Neighbourhood restriction of local PCA (same defaults as :class:`LocalPCA`): ``0.0``
        restricts a neighbourhood to exact duplicates when there are any (so duplicated training
        images get LID_* = 0); ``"percentile"`` is the paper's rule (points within the 10th
        percentile of all pairwise training distances). On the 8x8 digits that radius (4.8 in
        [-1, 1] units) is more than twice the typical nearest-neighbour distance and merges
        distinct digits with the planted duplicates (0% of them get LID_* = 0).
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

    Returns
    -------
    AuditResult
    """
    import pandas as pd

    from ..estimators import flipd_map, jacobian_rank, local_pca, normal_bundle
    from .complexity import png_length
    from .copy_detection import find_copies
    from .metrics import detection_metrics
    from .mmh import classify_mmh

    timings: dict[str, float] = {}
    tr = train if isinstance(train, TrainingImages) else TrainingImages(np.asarray(train, np.float32), [str(i) for i in range(len(train))])
    if kind is None:
        kind = "generator" if hasattr(model, "latent_dim") else "score_model"
    check_audit_inputs(model, kind, tr.images, samples, lpca_k=lpca_k, copy_k=copy_k)
    if len(tr.ids) != len(tr.images):
        raise ValueError(f"train has {len(tr.images)} images but {len(tr.ids)} ids")
    if samples is None:
        num_samples = check_positive_int(num_samples, "num_samples")
    elif sample_ids is not None and len(sample_ids) != len(samples):
        raise ValueError(f"samples has {len(samples)} images but sample_ids has {len(sample_ids)} entries")

    t = time.perf_counter()
    z = None
    if samples is None:
        x_np, z = _generate(model, kind, num_samples, steps=sampling_steps, seed=seed, batch_size=batch_size, progress=progress)
        ids = [f"s{i:05d}" for i in range(len(x_np))]
        sample_source = "generated"
    else:
        x_np = np.asarray(samples, dtype=np.float32)
        ids = list(sample_ids) if sample_ids is not None else [f"s{i:05d}" for i in range(len(x_np))]
        sample_source = "given"
    timings["samples_s"] = time.perf_counter() - t
    n = len(x_np)

    t = time.perf_counter()
    matches = find_copies(x_np, tr.images, k=copy_k, embedder=embedder, exact_threshold=exact_threshold,
                          near_threshold=near_threshold, cos_threshold=cos_threshold, search=search)
    timings["copy_detection_s"] = time.perf_counter() - t

    x_t = torch.from_numpy(x_np)
    if kind == "score_model" and _is_latent(model):  # LID_theta in latent space (docs/models.md)
        x_t = z if z is not None else torch.cat([model.encode(x_t[sl]) for sl in chunk_slices(n, batch_size)])
    d = int(np.prod(x_t.shape[1:]))
    nan = np.full(n, np.nan)
    lid_flipd, lid_nb, lid_jac, maps = nan.copy(), nan.copy(), None, None
    t = time.perf_counter()
    if kind == "score_model":
        # the memorization maps are FLIPD's summands: their sum is FLIPD at no extra cost
        maps = flipd_map(model, x_t, t0=flipd_t0, trace=flipd_trace, n_probes=flipd_probes, seed=seed,
                         batch_size=None, progress=progress).numpy()
        lid_flipd = maps.reshape(n, -1).sum(1, dtype=np.float64)
        timings["flipd_s"] = time.perf_counter() - t
        if d <= nb_max_dim:
            t = time.perf_counter()
            lid_nb = normal_bundle(model, x_t, t0=nb_t0, n_scores=nb_scores, seed=seed, threshold=nb_threshold,
                                   progress=progress).double().numpy()
            timings["normal_bundle_s"] = time.perf_counter() - t
        primary, primary_name = lid_flipd, "lid_theta_flipd"
    else:
        lid_jac = jacobian_rank(model, z, percentile=jacobian_percentile, progress=progress).double().numpy()
        timings["jacobian_rank_s"] = time.perf_counter() - t
        primary, primary_name = lid_jac, "lid_theta_jacobian"
    png = png_length(x_np)
    lid_png = primary / png

    t = time.perf_counter()
    if lid_star_train is None:
        lid_star_train = local_pca(tr.images.reshape(len(tr.images), -1), None, k=lpca_k, tau=lpca_tau, radius=lpca_radius,
                                   radius_percentile=lpca_radius_percentile, seed=seed, progress=progress).numpy()
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
            "num_samples": num_samples if samples is None else None, "sampling_steps": sampling_steps,
            "sampler": "probability-flow ODE, Heun, t 1 -> 1e-3, Tweedie denoise" if kind == "score_model" else "G(z), z ~ N(0, I)",
            "flipd_t0": flipd_t0, "flipd_trace": flipd_trace, "flipd_probes": flipd_probes,
            "nb_t0": nb_t0, "nb_scores": nb_scores, "nb_threshold": nb_threshold, "nb_max_dim": nb_max_dim, "jacobian_percentile": jacobian_percentile,
            "lpca_k": lpca_k, "lpca_tau": lpca_tau, "lpca_radius": lpca_radius, "lpca_radius_percentile": lpca_radius_percentile, "seed": seed, "copy_detection": {**matches.settings, **matches.thresholds},
        },
        "mmh": _mmh_summary(mmh),
        "copy_label_counts": {lab: int((matches.labels == lab).sum()) for lab in ("exact_copy", "near_copy", "none")},
        "mmh_class_counts": {str(k): int(v) for k, v in df["mmh_class"].value_counts().items()},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    table = []
    for positive, lab in (("copy (exact or near)", matches.labels != "none"), ("exact_copy", matches.labels == "exact_copy")):
        for col in _LOW_IS_COPY:
            if col not in df or not np.isfinite(df[col].to_numpy(dtype=float)).all():
                continue
            row: dict[str, Any] = {"positive": positive, "score": col, "direction": "low = copy"}
            if lab.all() or (~lab).all():
                row.update(auroc=None, tpr_at_1pct_fpr=None, n_positive=int(lab.sum()), n_negative=int((~lab).sum()),
                           note="only one class among the samples")
            else:
                res = detection_metrics(col, lab, df[col].to_numpy(dtype=float), higher_is_positive=False)
                row.update(auroc=res.auroc, tpr_at_1pct_fpr=res.tpr_at_1pct_fpr, n_positive=res.n_positive, n_negative=res.n_negative)
            table.append(row)
    summary["detection"] = table
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


def _mmh_summary(mmh: Any) -> dict[str, Any]:
    return {"lid_theta": "primary_lid_theta", **mmh.thresholds()}


def write_audit_report(result: AuditResult, path: str | Path, *, n_grid: int = 24) -> Path:
    """Write ``report.html``: detection table, LID histograms per copy label (as the paper's
    Figure 5), and a grid of the most memorized samples (lowest calibrated l2) beside their
    nearest training images."""
    import pandas as pd

    from ..reports.figures import histograms_by_label, match_grid
    from ..reports.html import Section, figure_to_html, table_to_html, write_html_report

    df, s = result.samples, result.summary
    sections = []
    det = pd.DataFrame(s.get("detection", []))
    sections.append(Section(
        "Detection of copies by LID",
        table_to_html(det) if len(det) else "<p>No detection table: the samples hold only one copy label.</p>",
        note="AUROC and TPR at 1% FPR of each score (low = copy) against the copy labels from copy detection.",
    ))
    counts = pd.DataFrame([{"copy_label": k, "n": v} for k, v in s["copy_label_counts"].items()])
    mmh = pd.DataFrame([{"mmh_class": k, "n": v} for k, v in s["mmh_class_counts"].items()])
    sections.append(Section("Copy labels and MMH classes", table_to_html(counts) + table_to_html(mmh),
                            note=f"Thresholds: {s['settings']['copy_detection']}; MMH: {s['mmh']}"))
    if "planted_duplicates" in s:
        pdup = pd.DataFrame([{"check": k, "value": v} for k, v in s["planted_duplicates"].items()])
        sections.append(Section("Planted duplicates", table_to_html(pdup)))
    cols = ["lid_theta_flipd", "lid_theta_nb", "lid_theta_jacobian", "lid_theta_png", "lid_star"]
    sections.append(Section("LID_theta and LID_* per copy label",
                            figure_to_html(histograms_by_label(df, cols), alt="histograms of LID per copy label"),
                            note="As the paper's Figure 5: copies should have low LID_theta; LID_* of duplicated training images is 0."))
    order = np.argsort(df["calibrated_l2"].to_numpy())[:n_grid]
    primary = s["primary_lid_theta"]
    caps = [f"{df['sample_id'].iat[i]} cl2={df['calibrated_l2'].iat[i]:.2f} {primary.replace('lid_theta_', '')}={df[primary].iat[i]:.1f}" for i in order]
    grid = match_grid(result.sample_images[order], result.train_images[df["nn_train_index"].to_numpy()[order]], caps)
    sections.append(Section(f"The {len(order)} most memorized samples", figure_to_html(grid, alt="most memorized samples"),
                            note="Odd rows: generated samples, lowest calibrated l2 first; even rows: their nearest training images."))
    if result.maps is not None and result.maps.ndim == 4:
        from ..estimators import to_pixel_map
        from ..reports.maps import map_grid

        px = to_pixel_map(result.maps[order], result.sample_images.shape[1:], mode="bilinear").numpy()
        grid = map_grid(result.sample_images[order], px, result.train_images[df["nn_train_index"].to_numpy()[order]], caps)
        sections.append(Section("Where they are memorized: FLIPD maps", figure_to_html(grid, alt="memorization maps"),
                                note="Rows: sample, its FLIPD map (per-pixel summands of eq. 6, summed over channels; latent maps "
                                     "upsampled to pixels; dark = low LID = pinned by the model), its nearest training image. "
                                     "Maps in maps.npy (model input shape)."))
    sections.append(Section("Settings", f"<pre>{_html_escape(json.dumps(_jsonable(s['settings']), indent=2))}</pre>"))
    title = f"lidmem memorization audit ({s['model_kind']}, {s['n_samples']} samples)"
    return write_html_report(path, title, sections, subtitle=f"timings (s): {s['timings_s']}")


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def shipped_digits_checkpoints() -> dict[str, Path]:
    """Paths of the shipped digits checkpoints (``"unet"``, ``"generator"``), from scripts/train_digits.py."""
    from importlib.resources import files

    root = Path(str(files("lidmem") / "weights"))
    paths = {"unet": root / "digits_unet.safetensors", "generator": root / "digits_generator.safetensors"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ValueError(f"shipped digits checkpoints are missing: {missing}; reinstall lidmem or run scripts/train_digits.py")
    return paths


def digits_demo(
    out_dir: str | Path | None = None,
    *,
    num_samples: int = 300,
    sampling_steps: int = 30,
    nb_scores: int = 64,
    generator: bool = True,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, AuditResult]:
    """The paper's image audit at small scale, from the shipped digits checkpoints.

    LID_* uses local PCA with its defaults (Fukunaga-Olsen tau, neighbourhoods restricted to
    exact duplicates, ``lpca_radius=0.0``): on the 8x8 digits the paper's radius (10th
    percentile of all pairwise distances, 4.8 in [-1, 1] units) is more than twice the typical
    nearest-neighbour distance, so it would merge distinct digits with the planted duplicates.

    Audits the diffusion UNet (``"unet"``) and, when ``generator=True``, the VAE decoder
    (``"generator"``, Jacobian-rank LID_theta) against the planted-duplicates digits
    (:func:`lidmem.data.images.load_digits_with_duplicates`). The normal bundle uses
    ``nb_scores=64`` (= d) noisy copies instead of the paper's 4d to fit the 3-minute budget on
    2 CPU cores. With ``out_dir``, each result is
    written to ``out_dir/<name>/`` (samples.parquet, summary.json, report.html).
    """
    ckpts = shipped_digits_checkpoints()
    tr = load_training_images("digits")
    results: dict[str, AuditResult] = {}
    model, kind = load_audit_model(ckpts["unet"])
    check_audit_inputs(model, kind, tr.images)
    results["unet"] = audit_memorization(model, tr, kind=kind, num_samples=num_samples, sampling_steps=sampling_steps,
                                         nb_scores=nb_scores, lpca_radius=0.0, seed=seed, progress=progress)
    if generator:
        gen, gkind = load_audit_model(ckpts["generator"])
        results["generator"] = audit_memorization(gen, tr, kind=gkind, num_samples=num_samples, lpca_radius=0.0, seed=seed,
                                                  lid_star_train=results["unet"].lid_star_train, progress=progress)
    if out_dir is not None:
        for name, res in results.items():
            res.write(Path(out_dir) / name)
    return results
