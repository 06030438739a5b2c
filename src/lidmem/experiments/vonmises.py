"""The paper's von Mises experiment (Sec. 4.1, Fig. 4): OD-Mem and DD-Mem in one 2-D model.

Data: 100 training points from a mixture of 3 von Mises distributions (kappa = 4, means at
0, 120 and 240 degrees) on the unit circle (LID_* = 1) plus 15% point mass at the origin
(LID_* = 0), drawn by :func:`lidmem.data.manifolds.von_mises_mixture` with ``seed=42``. The paper
notes that "by chance a single point x_0 sits isolated in a low-density region of the circle";
the seed was chosen for that (searched over seeds 0-199 by the angular gap to the nearest other
circle point): seed 42's most isolated point has a gap of 0.54 rad on both sides, the next one
only 0.14 rad.

Model: an :class:`~lidmem.diffusion.mlp.MLPScoreNet` (128 x 3, SiLU, sinusoidal + log time
embedding, 32 random Fourier input features of scale 1) trained for 8,000 steps by denoising
score matching under the VP-SDE with epsilon prediction (:func:`train_vonmises_model`; the shipped checkpoint
``lidmem/weights/vonmises.safetensors`` was made by ``scripts/train_vonmises.py`` with the same
function and defaults).

Why Fourier features and 8,000 steps (measured on this data, FLIPD at the training points):
a plain MLP (no Fourier features) learns the point mass and the circle (FLIPD -0.03 / 1.0 after
20k steps) but never overfits the isolated point (FLIPD 0.89 there). Fourier features of scale
2-10 make the MLP memorise training points all over the circle (median FLIPD on the circle 0.1-0.5,
many OD-Mem points). Scale 1 sits between: it can resolve the 0.54 rad hole around the isolated
point but not the 0.03 rad spacing of the dense parts, so the model overfits exactly the isolated
point (samples copy it: 11 of 1000 samples lie within 0.02 of it). Training longer (10k, 12k
steps) lets the next most isolated points drift towards OD-Mem too.

Analysis (:func:`run_vonmises`): samples by the probability-flow ODE; LID_theta = FLIPD (exact
trace, d = 2) at every sample and at every training point (measured *at* the point, as the MMH
asks); LID_* = local PCA at every training point; MMH class of every training point
(:func:`lidmem.memorization.mmh.classify_mmh`). :func:`write_vonmises` writes the files.

Local PCA settings and why: ``k=10`` neighbours (n = 100, so the paper's k = 100 is the whole
data set; the 15 duplicates at the origin exceed k, so their neighbourhoods are pure duplicates);
``tau="fo"`` (Fukunaga-Olsen, a variance counts if it exceeds 5% of the neighbourhood's largest)
because the paper's global 10th-percentile tau is meant for high-dimensional data: in 2-D it
counts the small curvature variance normal to the circle and calls ~80% of the circle points
2-dimensional; ``radius=0.0`` restricts neighbourhoods to exact duplicates (the paper's rule
(ii) with its percentile radius shrinks neighbourhoods on the dense parts of the circle to one or
two points).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_positive_int, check_t0
from ..data.manifolds import ManifoldSample, von_mises_mixture
from ..diffusion.checkpoint import load_score_model, read_metadata
from ..diffusion.mlp import MLPScoreNet
from ..diffusion.score import ScoreModel
from ..diffusion.sde import VPSDE
from ..diffusion.training import TrainResult, train_score_model
from ..memorization.mmh import MMHResult, classify_mmh

__all__ = [
    "DATA_SEED",
    "TRAIN_SEED",
    "TRAIN_STEPS",
    "vonmises_data",
    "vonmises_network",
    "train_vonmises_model",
    "shipped_checkpoint",
    "angular_isolation",
    "VonMisesResult",
    "run_vonmises",
    "write_vonmises",
]

#: Seed of the 100 training points (chosen so that one circle point is isolated, see module doc).
DATA_SEED = 42
#: Seed of the network initialisation and of the training minibatches/noise.
TRAIN_SEED = 0
#: Training steps of the shipped checkpoint and of ``--retrain``.
TRAIN_STEPS = 8_000
N_TRAIN = 100
KAPPA = 4.0
N_COMPONENTS = 3
POINT_MASS_WEIGHT = 0.15
NETWORK = {"hidden": 128, "depth": 3, "time_embed_dim": 64, "fourier_features": 32, "fourier_scale": 1.0}
TRAINING = {"batch_size": 128, "lr": 1e-3, "ema_decay": 0.999, "t_min": 1e-4, "log_uniform_fraction": 0.5}


def vonmises_data(n: int = N_TRAIN, *, seed: int = DATA_SEED) -> ManifoldSample:
    """The training set: ``n`` points of the von Mises mixture + point mass (``.points`` (n, 2),
    ``.lid`` true LID 1 on the circle / 0 at the origin)."""
    return von_mises_mixture(n, kappa=KAPPA, n_components=N_COMPONENTS, point_mass_weight=POINT_MASS_WEIGHT, seed=seed)


def vonmises_network(*, seed: int = TRAIN_SEED) -> MLPScoreNet:
    """The experiment's MLP, initialised under ``seed`` (the global torch RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPScoreNet(2, **NETWORK)


def train_vonmises_model(
    *,
    steps: int = TRAIN_STEPS,
    seed: int = TRAIN_SEED,
    data_seed: int = DATA_SEED,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
) -> TrainResult:
    """Train the experiment's model from scratch (VP-SDE, epsilon prediction, EMA weights).

    This is what ``scripts/train_vonmises.py`` ran to make the shipped checkpoint and what
    ``lidmem demo vonmises --retrain`` runs.

    Returns
    -------
    TrainResult
        ``.model`` is the EMA :class:`~lidmem.diffusion.score.ScoreModel`.
    """
    data = vonmises_data(seed=data_seed)
    extra = {
        "experiment": "vonmises",
        "data": {"generator": "lidmem.data.manifolds.von_mises_mixture", "n": N_TRAIN, "kappa": KAPPA,
                 "n_components": N_COMPONENTS, "point_mass_weight": POINT_MASS_WEIGHT, "seed": data_seed},
    }
    return train_score_model(
        vonmises_network(seed=seed),
        data.points.astype(np.float32),
        VPSDE(),
        prediction="epsilon",
        steps=steps,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=2000,
        resume=resume,
        extra=extra,
        progress=progress,
        **TRAINING,
    )


def shipped_checkpoint() -> Path:
    """Path of the checkpoint that ships inside the package (``lidmem/weights/vonmises.safetensors``)."""
    path = Path(str(resources.files("lidmem") / "weights" / "vonmises.safetensors"))
    if not path.is_file():
        raise FileNotFoundError(f"the shipped von Mises checkpoint is missing ({path}); run scripts/train_vonmises.py or use --retrain")
    return path


def angular_isolation(points: np.ndarray, *, radius: float = 0.25, circle_tol: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """How isolated each point is on the unit circle.

    Parameters
    ----------
    points : ndarray of shape (n, 2)
    radius : float, default=0.25
        Angular radius (radians) of the neighbourhood counted.
    circle_tol : float, default=0.1
        Points with ``| |x| - 1 | > circle_tol`` are not on the circle (NaN results).

    Returns
    -------
    n_neighbours : ndarray of shape (n,), float64
        Number of *other* circle points within angular distance ``radius`` (NaN off the circle).
    gap : ndarray of shape (n,), float64
        Angular distance (radians) to the nearest other circle point (NaN off the circle).
    """
    pts = np.asarray(points, dtype=np.float64)
    on = np.abs(np.linalg.norm(pts, axis=1) - 1.0) <= circle_tol
    theta = np.arctan2(pts[:, 1], pts[:, 0])
    n_nb = np.full(len(pts), np.nan)
    gap = np.full(len(pts), np.nan)
    idx = np.flatnonzero(on)
    if len(idx) > 1:
        diff = np.abs((theta[idx, None] - theta[None, idx] + np.pi) % (2 * np.pi) - np.pi)
        np.fill_diagonal(diff, np.inf)
        n_nb[idx] = (diff <= radius).sum(axis=1)
        gap[idx] = diff.min(axis=1)
    return n_nb, gap


@dataclass
class VonMisesResult:
    """Everything :func:`run_vonmises` measured.

    Attributes
    ----------
    train_points : ndarray of shape (100, 2)
    true_lid : ndarray of shape (100,)
        Ground-truth LID of each training point (1 on the circle, 0 at the origin).
    lid_star : ndarray of shape (100,)
        Local PCA LID_* of each training point.
    lid_theta_train : ndarray of shape (100,)
        FLIPD at each training point.
    mmh : MMHResult
        MMH class of each training point, with the thresholds.
    n_neighbours, gap : ndarray of shape (100,)
        Angular isolation of each training point (:func:`angular_isolation`; NaN at the origin).
    samples : ndarray of shape (n_samples, 2)
    lid_theta_samples : ndarray of shape (n_samples,)
        FLIPD at each sample.
    settings : dict
        Everything needed to reproduce the numbers (seeds, t0, sampler, local PCA, thresholds).
    summary : dict
        Headline numbers (see :func:`run_vonmises`).
    """

    train_points: np.ndarray
    true_lid: np.ndarray
    lid_star: np.ndarray
    lid_theta_train: np.ndarray
    mmh: MMHResult
    n_neighbours: np.ndarray
    gap: np.ndarray
    samples: np.ndarray
    lid_theta_samples: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def run_vonmises(
    model: ScoreModel | str | Path | None = None,
    *,
    data_seed: int = DATA_SEED,
    n_samples: int = 1000,
    sample_steps: int = 100,
    sample_seed: int = 1,
    t0: float = 0.005,
    k: int = 10,
    od_margin: float = 0.5,
    dd_threshold: float = 0.5,
    isolation_radius: float = 0.25,
    progress: bool | None = None,
) -> VonMisesResult:
    """Run the analysis of the experiment (no files written; see :func:`write_vonmises`).

    Parameters
    ----------
    model : ScoreModel, path or None
        The trained model; a path loads a lidmem checkpoint; None loads the shipped one.
    data_seed : int, default=42
        Seed of the training set (must be the one the model was trained on).
    n_samples : int, default=1000
        Generated samples (probability-flow ODE, Heun, ``sample_steps`` steps to t = 1e-3, then
        Tweedie denoising).
    sample_seed : int, default=1
    t0 : float, default=0.005
        FLIPD time. At t0 = 0.005 the VP-SDE noise is sigma(t0) = 0.027: far below the 0.54 rad
        gap around the isolated training point, comparable to the spacing of training points on
        the dense parts of the circle (median nearest-neighbour gap 0.03 rad). A model that
        memorised the isolated point gives FLIPD ~ 0 there and ~ 1 on the rest of the circle. At
        t0 = 0.01 (sigma = 0.045) the shipped model gives the same picture but the points next
        in isolation come within 0.1 of the OD-Mem threshold; at t0 <= 0.003 FLIPD gets noisy.
    k : int, default=10
        Local PCA neighbours (see the module docstring).
    od_margin, dd_threshold : float, default=0.5
        MMH thresholds (:func:`~lidmem.memorization.mmh.classify_mmh`).
    isolation_radius : float, default=0.25
        Angular radius (rad) for counting neighbours on the circle.

    Returns
    -------
    VonMisesResult
        ``summary`` holds: median FLIPD of samples within 0.1 of the origin and of the circle,
        class counts, the od_mem/dd_mem training points with their isolation, timings.
    """
    from ..diffusion.sampling import sample_ode
    from ..estimators import flipd, local_pca

    t0 = check_t0(t0)
    n_samples = check_positive_int(n_samples, "n_samples")
    start = time.perf_counter()
    ckpt_desc: str
    if model is None or isinstance(model, (str, Path)):
        path = shipped_checkpoint() if model is None else Path(model)
        meta = read_metadata(path)
        model = load_score_model(path)
        ckpt_desc = str(path)
        train_steps = meta.get("extra", {}).get("training", {}).get("steps")
    elif isinstance(model, ScoreModel):
        ckpt_desc = "in-memory model"
        train_steps = getattr(model, "metadata", {}).get("extra", {}).get("training", {}).get("steps") if hasattr(model, "metadata") else None
    else:
        raise TypeError(f"model must be a ScoreModel, a checkpoint path or None (shipped weights); got {type(model).__name__}")
    model = model.eval()
    data = vonmises_data(seed=data_seed)
    x_train = torch.as_tensor(data.points, dtype=torch.float32)

    t_sample = time.perf_counter()
    samples = sample_ode(model, (n_samples, 2), steps=sample_steps, t_end=1e-3, method="heun", denoise=True, seed=sample_seed, progress=progress)
    t_sample = time.perf_counter() - t_sample
    t_flipd = time.perf_counter()
    lid_theta_samples = flipd(model, samples, t0=t0, trace="exact", progress=progress).double().numpy()
    lid_theta_train = flipd(model, x_train, t0=t0, trace="exact", progress=progress).double().numpy()
    t_flipd = time.perf_counter() - t_flipd
    lid_star = local_pca(data.points, k=k, tau="fo", alpha=0.05, radius=0.0).double().numpy()
    mmh = classify_mmh(lid_theta_train, lid_star, od_margin=od_margin, dd_threshold=dd_threshold)
    n_nb, gap = angular_isolation(data.points, radius=isolation_radius)

    s = samples.double().numpy()
    r = np.linalg.norm(s, axis=1)
    near_origin = r < 0.1
    near_circle = np.abs(r - 1.0) < 0.1
    on_circle = data.lid == 1
    at_origin = data.lid == 0
    circle_nb = n_nb[on_circle]
    od_idx = np.flatnonzero(mmh.is_od_mem)
    gap_rank = np.full(len(gap), -1)
    order = np.argsort(-np.where(on_circle, gap, -np.inf))
    gap_rank[order[: on_circle.sum()]] = np.arange(on_circle.sum())

    settings = {
        "checkpoint": ckpt_desc,
        "training_steps": train_steps,
        "data": {"n": N_TRAIN, "kappa": KAPPA, "n_components": N_COMPONENTS, "point_mass_weight": POINT_MASS_WEIGHT, "seed": data_seed},
        "sampler": {"method": "probability-flow ODE, Heun", "steps": sample_steps, "t_end": 1e-3, "spacing": "karras",
                    "denoise": True, "n_samples": n_samples, "seed": sample_seed},
        "flipd": {"t0": t0, "trace": "exact"},
        "local_pca": {"k": k, "tau": "fo", "alpha": 0.05, "radius": 0.0},
        "mmh": mmh.thresholds(),
        "isolation": {"angular_radius": isolation_radius, "circle_tol": 0.1},
    }
    summary = {
        "n_samples_near_origin": int(near_origin.sum()),
        "n_samples_near_circle": int(near_circle.sum()),
        "median_lid_theta_samples_near_origin": _median(lid_theta_samples[near_origin]),
        "median_lid_theta_samples_near_circle": _median(lid_theta_samples[near_circle]),
        "median_lid_theta_train_origin": _median(lid_theta_train[at_origin]),
        "median_lid_theta_train_circle": _median(lid_theta_train[on_circle]),
        "lid_star_counts": {str(int(v)): int((lid_star == v).sum()) for v in np.unique(lid_star)},
        "mmh_counts": mmh.counts(),
        "origin_training_points": int(at_origin.sum()),
        "origin_training_points_dd_mem": int((mmh.is_dd_mem & at_origin).sum()),
        "min_neighbours_on_circle": float(np.min(circle_nb)) if len(circle_nb) else None,
        "od_mem_points": [
            {"index": int(i), "x": float(data.points[i, 0]), "y": float(data.points[i, 1]), "lid_theta": float(lid_theta_train[i]),
             "lid_star": float(lid_star[i]), "n_neighbours": float(n_nb[i]), "gap_rad": float(gap[i]), "isolation_rank": int(gap_rank[i])}
            for i in od_idx
        ],
        "most_isolated_training_point": (
            {"index": int(order[0]), "x": float(data.points[order[0], 0]), "y": float(data.points[order[0], 1]),
             "gap_rad": float(gap[order[0]]), "n_neighbours": float(n_nb[order[0]]), "lid_theta": float(lid_theta_train[order[0]]),
             "mmh_class": str(mmh.mmh_class[order[0]])}
            if on_circle.any() else None
        ),
        "timings_s": {"sampling": round(t_sample, 3), "flipd": round(t_flipd, 3), "total": round(time.perf_counter() - start, 3)},
    }
    return VonMisesResult(
        train_points=data.points,
        true_lid=data.lid,
        lid_star=lid_star,
        lid_theta_train=lid_theta_train,
        mmh=mmh,
        n_neighbours=n_nb,
        gap=gap,
        samples=s,
        lid_theta_samples=lid_theta_samples,
        settings=settings,
        summary=summary,
    )


def _vonmises_density(theta: np.ndarray) -> np.ndarray:
    from scipy.special import i0

    means = 2 * np.pi * np.arange(N_COMPONENTS) / N_COMPONENTS
    dens = np.exp(KAPPA * np.cos(theta[:, None] - means[None])) / (2 * np.pi * i0(KAPPA))
    return (1 - POINT_MASS_WEIGHT) * dens.mean(axis=1)


def plot_vonmises(result: VonMisesResult, path: str | Path, *, dpi: int = 150) -> Path:
    """Figure in the spirit of the paper's Fig. 4: ground truth and training points (top),
    samples coloured by FLIPD (bottom). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, axes = plt.subplots(2, 1, figsize=(5.2, 9.0), constrained_layout=True)
    ax = axes[0]
    theta = np.linspace(-np.pi, np.pi, 721)
    dens = _vonmises_density(theta)
    xy = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    segs = np.stack([xy[:-1], xy[1:]], axis=1)
    lc = LineCollection(segs, cmap="Blues", linewidths=6, norm=plt.Normalize(0, dens.max()))
    lc.set_array(0.5 * (dens[:-1] + dens[1:]))
    ax.add_collection(lc)
    fig.colorbar(lc, ax=ax, shrink=0.7, label="density on the circle (LID$_*$ = 1)")
    ax.scatter([0], [0], s=300, marker="*", color="tab:orange", zorder=3,
               label=f"point mass, weight {POINT_MASS_WEIGHT:.2f} (LID$_*$ = 0)")
    ax.scatter(result.train_points[:, 0], result.train_points[:, 1], s=14, color="black", zorder=4, label="100 training points")
    od = result.mmh.is_od_mem
    if od.any():
        ax.scatter(result.train_points[od, 0], result.train_points[od, 1], s=180, facecolors="none", edgecolors="red", linewidths=2,
                   zorder=5, label="OD-Mem training point")
    ax.set_title("Ground truth: von Mises mixture + point mass")
    ax.legend(loc="lower left", fontsize=7)

    ax = axes[1]
    ax.plot(np.cos(theta), np.sin(theta), color="0.85", lw=1, zorder=1)
    sc = ax.scatter(result.samples[:, 0], result.samples[:, 1], c=np.clip(result.lid_theta_samples, 0, 2), cmap="viridis",
                    vmin=0, vmax=2, s=10, zorder=2)
    cb = fig.colorbar(sc, ax=ax, shrink=0.7, label=f"FLIPD LID$_\\theta$ (t0={result.settings['flipd']['t0']}), clipped to [0, 2]")
    cb.ax.text(0.5, -0.04, "memorized", transform=cb.ax.transAxes, ha="center", va="top", fontsize=7, color="red")
    if od.any():
        ax.scatter(result.train_points[od, 0], result.train_points[od, 1], s=180, facecolors="none", edgecolors="red", linewidths=2,
                   zorder=3, label="OD-Mem: LID$_\\theta$ < LID$_*$")
    ax.scatter([0], [0], s=180, facecolors="none", edgecolors="tab:orange", linewidths=2, zorder=3, label="DD-Mem: LID$_*$ = 0")
    ax.set_title(f"{len(result.samples)} generated samples coloured by LID$_\\theta$")
    ax.legend(loc="lower left", fontsize=7)
    for a in axes:
        a.set_xlabel("$x_1$")
        a.set_ylabel("$x_2$")
        a.set_aspect("equal")
        a.set_xlim(-1.45, 1.45)
        a.set_ylim(-1.45, 1.45)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_vonmises(result: VonMisesResult, out_dir: str | Path, *, figure: bool = True) -> dict[str, Path]:
    """Write ``samples.csv`` (x, y, lid_theta), ``training.csv`` (x, y, lid_star, lid_theta,
    mmh_class), ``summary.json`` (settings + headline numbers) and ``figure.png`` to ``out_dir``.

    Returns the paths by name.
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"samples": out / "samples.csv", "training": out / "training.csv", "summary": out / "summary.json"}
    pd.DataFrame({"x": result.samples[:, 0], "y": result.samples[:, 1], "lid_theta": result.lid_theta_samples}).to_csv(paths["samples"], index=False)
    pd.DataFrame({
        "x": result.train_points[:, 0],
        "y": result.train_points[:, 1],
        "lid_star": result.lid_star,
        "lid_theta": result.lid_theta_train,
        "mmh_class": result.mmh.mmh_class.astype(str),
    }).to_csv(paths["training"], index=False)
    with open(paths["summary"], "w") as fh:
        json.dump({"settings": result.settings, "summary": result.summary}, fh, indent=2, default=_json_default)
    if figure:
        paths["figure"] = plot_vonmises(result, out / "figure.png")
    return paths


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        v = float(obj)
        return None if math.isnan(v) else v
    raise TypeError(f"cannot serialise {type(obj).__name__}")
