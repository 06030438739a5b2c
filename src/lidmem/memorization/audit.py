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

Choice of FLIPD's ``t0``: the default ``flipd_t0="auto"`` sets the noise length
``sigma(t0) / psi(t0) * sqrt(d)`` to twice the training set's median nearest-neighbour gap
(:func:`lidmem.estimators.t0.t0_from_training_data`; label-free). Measured by
``benchmarks/t0_transfer.py`` (docs/t0.md): t0 = 0.146 on the digits UNet (AUROC 0.998, as the
former fixed default 0.1) and 0.027 on 16x16 photo patches (AUROC 0.863 against 0.839 at 0.1;
no t0 reaches 0.95 on that undertrained model, whose samples mostly leave the data range).
Every audit also reports FLIPD's AUROC at the times of ``flipd_t0_sweep`` (summary
``flipd_t0_sweep``), so a poor choice shows. FLIPD of a UNet can be negative (footnote 4 of the
paper).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import check_positive_int, check_t0
from ..utils import chunk_slices

__all__ = [
    "SAMPLE_COLUMNS",
    "AuditResult",
    "TrainingImages",
    "load_audit_model",
    "load_training_images",
    "load_sample_images",
    "load_duplicate_flags",
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
#: Extra FLIPD times of the audit's t0 sweep (summary["flipd_t0_sweep"]).
FLIPD_T0_SWEEP: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
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
        """Write ``samples.parquet``, ``samples.npy``, ``summary.json`` and (optionally) ``report.html``.

        ``samples.npy`` holds the audited images ``(n, c, h, w)`` in [-1, 1], row ``i`` being
        ``samples.parquet``'s row ``i``; re-score them with ``lidmem audit --samples samples.npy``.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"samples": out / "samples.parquet", "sample_images": out / "samples.npy", "summary": out / "summary.json"}
        self.samples.to_parquet(paths["samples"], index=False)
        np.save(paths["sample_images"], np.asarray(self.sample_images, dtype=np.float32))
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
    from ..data.images import check_image_range, load_digits_with_duplicates, read_png_folder
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
        check_image_range(arr, f"training images {path}")
        return TrainingImages(arr, [str(i) for i in range(len(arr))], None, {"source": str(path)})
    raise ValueError(f"training data {source!s} is neither 'digits', a folder of images, nor an existing .npy file")


def load_duplicate_flags(path: str | Path, ids: list[str]) -> np.ndarray:
    """Duplicate flags ``(len(ids),)`` from a text file naming the duplicated training images.

    One entry per line: an image id (a file stem of the training folder, as in
    ``samples.parquet``'s ``nn_train_id``) or a row index ``0 .. n-1`` when no id has that name.
    Blank lines and lines starting with ``#`` are skipped. Flag every copy of a duplicated image
    (all rows that hold it), as :func:`lidmem.data.images.load_digits_with_duplicates` does.

    Raises ValueError naming the first entries that match no id and no index, or for an empty list.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"duplicates file {path} does not exist; give a text file with one training image id per line")
    lookup = {name: i for i, name in enumerate(ids)}
    flags = np.zeros(len(ids), dtype=bool)
    bad = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry in lookup:
            flags[lookup[entry]] = True
        elif entry.isdigit() and int(entry) < len(ids):
            flags[int(entry)] = True
        else:
            bad.append(entry)
    if bad:
        raise ValueError(
            f"duplicates file {path}: {len(bad)} entries match no training image id or row index 0..{len(ids) - 1}, "
            f"e.g. {bad[:3]}; ids are file stems such as {ids[:2]}"
        )
    if not flags.any():
        raise ValueError(f"duplicates file {path} names no training image; list one id per line")
    return flags


def load_sample_images(source: str | Path) -> tuple[np.ndarray, list[str]]:
    """Given samples: a folder of images (ids = file stems) or a ``.npy`` ``(n, c, h, w)`` in [-1, 1]."""
    from ..data.images import check_image_range, read_png_folder
    from ..data.io import load_npy

    path = Path(source)
    if path.is_dir():
        return read_png_folder(path)
    if path.suffix.lower() == ".npy" and path.is_file():
        arr = load_npy(path, "samples").astype(np.float32)
        if arr.ndim != 4:
            raise ValueError(f"{path} holds an array of shape {arr.shape}; samples must have shape (n, c, h, w) in [-1, 1]")
        check_image_range(arr, f"samples {path}")
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
    flipd_t0: float | str = "auto",
    flipd_t0_sweep: Sequence[float] | None = FLIPD_T0_SWEEP,
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
    sampling_steps : int, default=50
        Heun steps of the probability-flow ODE (to t=1e-3, then Tweedie denoising).
    flipd_t0 : float or "auto", default="auto"
        FLIPD time (see the module docstring for the choice). ``"auto"``:
        :func:`lidmem.estimators.t0.t0_from_training_data` (noise length = twice the training
        set's median nearest-neighbour gap; label-free; docs/t0.md). The summary's
        ``settings.flipd_t0_used`` holds the value used.
    flipd_t0_sweep : sequence of float or None, default=FLIPD_T0_SWEEP
        Extra times at which FLIPD is also computed (probes shared with ``flipd_t0``); the
        summary's ``flipd_t0_sweep`` gives AUROC / TPR@1%FPR of each against the copy labels, so a
        poorly chosen ``t0`` shows. Costs one FLIPD evaluation per time; None or ``()`` skips it.
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
        Skip the normal bundle (NaN column) when the image has more values ``d`` than this (0:
        always skip). Its cost is ``nb_scores`` (4d) network calls and an SVD of a
        ``nb_scores x d`` matrix per sample, infeasible on CPU beyond a few hundred values.
        Capping ``nb_scores`` at ``k < d`` instead bounds the estimate below by ``d - k``: a copy
        (rank ``d``) reads as ``d - k`` at best, so LID_NB only ranks samples within ``[d - k, d]``.
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
    log : callable or None
        Called with one line per stage (start, end, counts, seconds), e.g. ``print`` to stderr:
        progress for logs that are not a terminal. None: silent.

    Returns
    -------
    AuditResult
    """
    import pandas as pd

    from ..estimators import flipd_curve, flipd_map, jacobian_rank, local_pca, normal_bundle
    from .complexity import png_length
    from .copy_detection import find_copies
    from .metrics import detection_metrics
    from .mmh import classify_mmh

    timings: dict[str, float] = {}
    say = log if log is not None else (lambda msg: None)
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

    if isinstance(flipd_t0, str) and flipd_t0 != "auto":
        raise ValueError(f"flipd_t0={flipd_t0!r} must be a float in (0, 1] or 'auto'")
    sweep = [check_t0(v, "flipd_t0_sweep") for v in (flipd_t0_sweep or ())]

    t = time.perf_counter()
    z = None
    if samples is None:
        say(f"generating {num_samples} samples ({kind}) ...")
        x_np, z = _generate(model, kind, num_samples, steps=sampling_steps, seed=seed, batch_size=batch_size, progress=progress)
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
    if kind == "score_model":
        if flipd_t0 == "auto":
            from ..estimators.t0 import t0_from_training_data

            train_t0 = tr.images
            if _is_latent(model):  # the noise scale is matched in the space FLIPD runs in: encode (<= 2000 images)
                pick = np.random.default_rng(seed).permutation(len(train_t0))[:2000]
                enc = torch.from_numpy(np.ascontiguousarray(train_t0[np.sort(pick)]))
                train_t0 = torch.cat([model.encode(enc[sl]) for sl in chunk_slices(len(enc), batch_size)]).numpy()
            t0_used = t0_from_training_data(model.sde, train_t0, seed=seed)
        else:
            t0_used = check_t0(flipd_t0, "flipd_t0")
        others = [v for v in sweep if v != t0_used]
        say(f"FLIPD at t0 = {t0_used:.4g}" + (f" (+ {len(others)} sweep times)" if others else "") + " ...")
        # the memorization maps are FLIPD's summands: their sum is FLIPD at no extra cost
        maps = flipd_map(model, x_t, t0=t0_used, trace=flipd_trace, n_probes=flipd_probes, seed=seed,
                         batch_size=None, progress=progress).numpy()
        lid_flipd = maps.reshape(n, -1).sum(1, dtype=np.float64)
        swept = {t0_used: lid_flipd}
        if others:
            curve = flipd_curve(model, x_t, others, trace=flipd_trace, n_probes=flipd_probes, seed=seed,
                                batch_size=None, progress=progress).double().numpy()
            swept.update({v: curve[:, i] for i, v in enumerate(others)})
        sweep_curve = {v: swept[v] for v in sweep}
        timings["flipd_s"] = time.perf_counter() - t
        say(f"FLIPD: {timings['flipd_s']:.1f} s")
        if d <= nb_max_dim:
            t = time.perf_counter()
            say(f"normal bundle ({nb_scores if nb_scores is not None else 4 * d} scores per sample) ...")
            lid_nb = normal_bundle(model, x_t, t0=nb_t0, n_scores=nb_scores, seed=seed, threshold=nb_threshold,
                                   progress=progress).double().numpy()
            timings["normal_bundle_s"] = time.perf_counter() - t
            say(f"normal bundle: {timings['normal_bundle_s']:.1f} s")
        else:
            say(f"normal bundle skipped: d = {d} > nb_max_dim = {nb_max_dim}")
        primary, primary_name = lid_flipd, "lid_theta_flipd"
    else:
        say("Jacobian rank ...")
        lid_jac = jacobian_rank(model, z, "percentile", percentile=jacobian_percentile, progress=progress).double().numpy()
        timings["jacobian_rank_s"] = time.perf_counter() - t
        primary, primary_name = lid_jac, "lid_theta_jacobian"
    png = png_length(x_np)
    lid_png = primary / png

    t = time.perf_counter()
    say("local PCA of the training set (LID_*) ...")
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
            "flipd_t0": flipd_t0, "flipd_t0_used": t0_used, "flipd_t0_sweep": sweep, "flipd_trace": flipd_trace, "flipd_probes": flipd_probes,
            "nb_t0": nb_t0, "nb_scores": nb_scores, "nb_threshold": nb_threshold, "nb_max_dim": nb_max_dim, "jacobian_percentile": jacobian_percentile,
            "lpca_k": lpca_k, "lpca_tau": lpca_tau, "lpca_radius": lpca_radius, "lpca_radius_percentile": lpca_radius_percentile, "seed": seed, "copy_detection": {**matches.settings, **matches.thresholds},
        },
        "mmh": _mmh_summary(mmh),
        "copy_label_counts": {lab: int((matches.labels == lab).sum()) for lab in ("exact_copy", "near_copy", "none")},
        "mmh_class_counts": {str(k): int(v) for k, v in df["mmh_class"].value_counts().items()},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "samples_out_of_range": out_of_range,
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
    if sweep_curve:
        summary["flipd_t0_sweep"] = _t0_sweep_table(sweep_curve, matches.labels)
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


def _t0_sweep_table(curves: dict[float, np.ndarray], labels: np.ndarray) -> list[dict[str, Any]]:
    """AUROC / TPR@1%FPR of FLIPD (low = copy) at each sweep time, against exact-or-near copies."""
    from .metrics import detection_metrics

    lab = labels != "none"
    rows = []
    for t0, c in sorted(curves.items()):
        row: dict[str, Any] = {"t0": t0, "median_flipd_copies": float(np.median(c[lab])) if lab.any() else None,
                               "median_flipd_others": float(np.median(c[~lab])) if (~lab).any() else None}
        if lab.all() or (~lab).all():
            row.update(auroc=None, tpr_at_1pct_fpr=None)
        else:
            res = detection_metrics("lid_theta_flipd", lab, c, higher_is_positive=False)
            row.update(auroc=res.auroc, tpr_at_1pct_fpr=res.tpr_at_1pct_fpr)
        rows.append(row)
    return rows


def _mmh_summary(mmh: Any) -> dict[str, Any]:
    return {"lid_theta": "primary_lid_theta", **mmh.thresholds()}


_PLANTED_NAMES = {
    "n_train_rows_duplicated": "training rows that are planted duplicates",
    "n_distinct_duplicated": "distinct planted images",
    "n_exact_copies": "exact copies among the samples",
    "exact_copies_of_planted": "exact copies of a planted image",
    "distinct_planted_reproduced": "distinct planted images reproduced",
    "samples_matched_to_planted": "samples whose nearest training image is planted",
    "lid_star_zero_frac_duplicated_train": "share of duplicated training images with LID_* = 0",
    "lid_star_positive_frac_other_train": "share of other training images with LID_* > 0",
}

_SCORE_NAMES = {
    "lid_theta_flipd": "LID_theta, FLIPD", "lid_theta_nb": "LID_theta, normal bundle", "lid_theta_png": "FLIPD / PNG length",
    "lid_theta_jacobian": "LID_theta, Jacobian rank", "lid_star": "LID_* of the matched training image",
}


def _timings_text(timings: dict[str, Any]) -> str:
    parts = [f"{k.removesuffix('_s').replace('_', ' ')} {float(v):.1f} s" for k, v in timings.items()]
    return "run time: " + ", ".join(parts) if parts else ""


def write_audit_report(result: AuditResult, path: str | Path, *, n_grid: int = 24) -> Path:
    """Write ``report.html``: headline counts, the detection table, LID histograms per copy label
    (as the paper's Figure 5), the samples closest to a training image beside their matches, and
    the settings."""
    import pandas as pd

    from ..reports.figures import histograms_by_label, match_grid
    from ..reports.html import Section, figure_to_html, format_value, settings_table, table_to_html, write_html_report

    df, s = result.samples, result.summary
    counts = s["copy_label_counts"]
    n_copies = int(counts.get("exact_copy", 0)) + int(counts.get("near_copy", 0))
    primary = s["primary_lid_theta"]
    sections = []
    mmh_counts = s.get("mmh_class_counts", {})
    headline = [
        {"quantity": "samples", "value": int(s["n_samples"])},
        {"quantity": "training images", "value": int(s["n_train"])},
        {"quantity": "exact copies", "value": int(counts.get("exact_copy", 0))},
        {"quantity": "near copies", "value": int(counts.get("near_copy", 0))},
        {"quantity": "no copy", "value": int(counts.get("none", 0))},
    ] + [{"quantity": f"MMH class {k}", "value": int(v)} for k, v in mmh_counts.items()]
    cd = s["settings"]["copy_detection"]
    sections.append(Section(
        "Summary", table_to_html(headline),
        note=(f"Copy labels: exact copy if calibrated l2 < {format_value(cd.get('exact_threshold'))}, near copy if calibrated "
              f"l2 < {format_value(cd.get('near_threshold'))} or embedding cosine > {format_value(cd.get('cos_threshold'))} "
              f"(k = {cd.get('k')} neighbours). Primary LID_theta: {_SCORE_NAMES.get(primary, primary)}."),
    ))
    det = pd.DataFrame(s.get("detection", []))
    if len(det) and "auroc" in det and det["auroc"].notna().any():
        det = det[det["auroc"].notna()]
        det = det.assign(score=det["score"].map(lambda c: _SCORE_NAMES.get(c, c)))
        keep = [c for c in ("positive", "score", "auroc", "tpr_at_1pct_fpr", "n_positive", "n_negative", "note") if c in det]
        body = table_to_html(det[keep], headers={"positive": "positive class", "auroc": "AUROC", "tpr_at_1pct_fpr": "TPR at 1% FPR",
                                                 "n_positive": "n positive", "n_negative": "n negative"})
    else:
        body = "<p>No detection table: every sample has the same copy label (no copies to detect).</p>"
    sections.append(Section("Detection of copies by LID", body,
                            note="Each score ranks samples with low values first (low = copy); AUROC and TPR at 1% FPR against the copy labels."))
    mmh = s.get("mmh", {})
    mmh_note = (f"MMH rule: {mmh.get('rule', '')}." if mmh.get("rule") else "")
    if mmh.get("comparable") is False:
        mmh_note += (f" Not comparable: on samples with LID_* > {format_value(mmh.get('dd_threshold'), float_format='{:g}')} the median of "
                     f"LID_theta - LID_* is {float(mmh['scale_offset']):+.2f} (|.| > od_margin = {format_value(mmh.get('od_margin'), float_format='{:g}')}), "
                     f"so the classes reflect the two estimators' scales; read them as a ranking.")
    if mmh_counts:
        sections.append(Section("MMH classes", table_to_html([{"MMH class": k, "n": int(v)} for k, v in mmh_counts.items()]), note=mmh_note or None))
    if "planted_duplicates" in s:
        rows = []
        for k, v in s["planted_duplicates"].items():
            shown = f"{100.0 * v:.0f}%" if k.endswith("_frac_duplicated_train") or k.endswith("_frac_other_train") else format_value(v)
            rows.append({"check": _PLANTED_NAMES.get(k, k.replace("_", " ")), "value": shown})
        sections.append(Section("Planted duplicates", table_to_html(rows)))
    cols = ["lid_theta_flipd", "lid_theta_nb", "lid_theta_jacobian", "lid_theta_png", "lid_star"]
    sections.append(Section("LID_theta and LID_* per copy label",
                            figure_to_html(histograms_by_label(df, cols), alt="histograms of LID per copy label"),
                            note="As the paper's Figure 5 (densities per label): copies should have low LID_theta; LID_* of duplicated training images is 0."))
    order = np.argsort(df["calibrated_l2"].to_numpy())[:n_grid]
    short = primary.replace("lid_theta_", "")
    caps = [f"#{df['sample_id'].iat[i]}\ncl2 {df['calibrated_l2'].iat[i]:.2f}\n{short} {df[primary].iat[i]:.1f}" for i in order]
    grid = match_grid(result.sample_images[order], result.train_images[df["nn_train_index"].to_numpy()[order]], caps)
    if n_copies:
        title = f"The {len(order)} samples closest to a training image ({n_copies} copies in all)"
    else:
        title = f"The {len(order)} samples closest to a training image (none is a copy)"
    sections.append(Section(title, figure_to_html(grid, alt="samples closest to a training image"),
                            note=f"Top of each pair: a sample (id, calibrated l2, {_SCORE_NAMES.get(primary, primary)}), lowest calibrated l2 first; "
                                 "below it: its nearest training image."))
    if result.maps is not None and result.maps.ndim == 4:
        from ..estimators import to_pixel_map
        from ..reports.maps import map_grid

        px = to_pixel_map(result.maps[order], result.sample_images.shape[1:], mode="bilinear").numpy()
        grid = map_grid(result.sample_images[order], px, result.train_images[df["nn_train_index"].to_numpy()[order]], caps)
        sections.append(Section("Where they are memorized: FLIPD maps", figure_to_html(grid, alt="memorization maps"),
                                note="Rows: sample, its FLIPD map (per-pixel summands of eq. 6, summed over channels; latent maps "
                                     "upsampled to pixels; dark = low LID = pinned by the model), its nearest training image. "
                                     "Maps in maps.npy (model input shape)."))
    sections.append(Section("Settings", settings_table(_jsonable(s["settings"]))))
    kind = {"score_model": "diffusion model", "generator": "generator"}.get(s["model_kind"], s["model_kind"])
    title = f"Memorization audit of a {kind} ({s['n_samples']} samples)"
    return write_html_report(path, title, sections, subtitle=_timings_text(s.get("timings_s", {})))


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def shipped_digits_checkpoints() -> dict[str, Path]:
    """Paths of the shipped digits checkpoints: ``"unet"`` and ``"vae"`` (the VAE decoder) from
    scripts/train_digits.py, ``"generator"`` (the memorizing IMLE generator of the demo's generator
    report) from scripts/train_digits_gan.py."""
    from importlib.resources import files

    root = Path(str(files("lidmem") / "weights"))
    paths = {"unet": root / "digits_unet.safetensors", "vae": root / "digits_generator.safetensors",
             "generator": root / "digits_imle.safetensors"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ValueError(f"shipped digits checkpoints are missing: {missing}; reinstall lidmem or run scripts/train_digits.py "
                         "and scripts/train_digits_gan.py")
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

    Audits the diffusion UNet (``"unet"``) and, when ``generator=True``, a generator
    (``"generator"``, Jacobian-rank LID_theta with the paper's global 10th-percentile threshold):
    the IMLE generator of scripts/train_digits_gan.py, which reproduces planted duplicates (an MLP
    GAN and the VAE decoder of scripts/train_digits.py reproduce none; see docs/audit.md). Its
    summary gets ``"jacobian_rank_auroc"`` (copies vs other samples, low rank = copy). Both are
    audited against the planted-duplicates digits
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
        res = audit_memorization(gen, tr, kind=gkind, num_samples=num_samples, lpca_radius=0.0, seed=seed,
                                 lid_star_train=results["unet"].lid_star_train, progress=progress)
        row = next((r for r in res.summary["detection"] if r["positive"] == "copy (exact or near)" and r["score"] == "lid_theta_jacobian"), None)
        res.summary["jacobian_rank_auroc"] = None if row is None else row["auroc"]
        res.summary["generator_checkpoint"] = {"file": ckpts["generator"].name, **getattr(gen, "metadata", {}).get("extra", {}).get("training", {})}
        results["generator"] = res
    if out_dir is not None:
        for name, res in results.items():
            res.write(Path(out_dir) / name)
    return results
