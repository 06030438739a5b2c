"""Synthetic manifolds of known local intrinsic dimension (LID): ground truth for LID estimators.

Every generator returns a :class:`ManifoldSample`: the points, shape ``(n, D)``, together with the
true LID of each point, shape ``(n,)``, and the index of the piece it was drawn from. Pieces are
embedded isometrically into ``R^D`` by a random rotation (and, for affine pieces, a random
offset), so that no estimator can profit from axis-aligned coordinates.

The registry :data:`MANIFOLDS` maps each name to its intrinsic dimension, default ambient
dimension and a description, in the manner of scikit-dimension's ``BenchmarkManifolds``;
:func:`sample_manifold` draws from one by name with explicit parameters. All randomness goes
through the ``seed`` argument (an int or a :class:`numpy.random.Generator`).

Examples
--------
>>> from lidmem.data.manifolds import sample_manifold
>>> s = sample_manifold("sphere", 500, dim=2, ambient_dim=10, seed=0)
>>> s.points.shape, int(s.lid[0])
((500, 10), 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "ManifoldSample",
    "ManifoldInfo",
    "MANIFOLDS",
    "sample_manifold",
    "point_mass",
    "circle",
    "helix",
    "sphere",
    "torus",
    "affine_subspace",
    "union_of_subspaces",
    "von_mises_mixture",
    "random_rotation",
]


@dataclass(frozen=True)
class ManifoldSample:
    """Points on a manifold together with their true local intrinsic dimension.

    Attributes
    ----------
    points : ndarray of shape (n, D), float64
        The sample, batch first.
    lid : ndarray of shape (n,), int64
        True LID of each point (0 for point masses).
    labels : ndarray of shape (n,), int64
        Index of the piece (mixture component) each point was drawn from; all zeros for a
        single connected manifold.
    name : str
        Registry name of the generator.
    """

    points: np.ndarray
    lid: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.points)


class ManifoldInfo(NamedTuple):
    """One row of :data:`MANIFOLDS`: intrinsic dimension (None when the pieces differ or it is
    a parameter), default ambient dimension, description."""

    lid: int | None
    ambient_dim: int
    description: str


MANIFOLDS: dict[str, ManifoldInfo] = {
    "point": ManifoldInfo(0, 2, "point mass: every sample at one random location (LID 0)"),
    "circle": ManifoldInfo(1, 2, "circle of radius `radius`, uniform, rotated into R^D (LID 1)"),
    "helix": ManifoldInfo(1, 3, "three turns of a helix of radius 1 and pitch 1, rotated into R^D (LID 1)"),
    "sphere": ManifoldInfo(None, 3, "unit sphere S^dim, uniform, in R^D with D >= dim + 1 (LID dim; default dim=2)"),
    "torus": ManifoldInfo(2, 3, "ring torus (R=2, r=1) in R^3, area-uniform, rotated into R^D (LID 2)"),
    "subspace": ManifoldInfo(None, 10, "uniform cube [-1, 1]^dim on a random affine dim-plane of R^D (LID dim; default dim=2)"),
    "union": ManifoldInfo(None, 10, "disjoint affine pieces of dimensions `dims` (default 0, 1, 2, 5); LID per piece"),
    "von_mises": ManifoldInfo(
        None, 2, "paper Sec. 4.1: mixture of 3 von Mises (kappa=4) on the unit circle (LID 1) + 15% point mass at the origin (LID 0)"
    ),
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int, a numpy.random.Generator or None; got {seed!r}")
    return np.random.default_rng(seed)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return int(value)


def _check_nonneg(value: object, name: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a float >= 0; got {value!r}") from exc
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r} must be a finite float >= 0")
    return v


def _check_ambient(ambient_dim: int, intrinsic_embed: int, name: str) -> int:
    ambient_dim = _check_int(ambient_dim, "ambient_dim", 1)
    if ambient_dim < intrinsic_embed:
        raise ValueError(
            f"ambient_dim={ambient_dim} is too small for {name}: it lives in R^{intrinsic_embed}; "
            f"use ambient_dim >= {intrinsic_embed}"
        )
    return ambient_dim


def random_rotation(dim: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """A Haar-random orthogonal matrix of shape ``(dim, dim)`` (QR of a Gaussian matrix with
    the signs of R's diagonal fixed)."""
    rng = _rng(seed)
    dim = _check_int(dim, "dim", 1)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))[None, :]


def _embed(x: np.ndarray, ambient_dim: int, rng: np.random.Generator, offset_scale: float = 0.0) -> np.ndarray:
    """Zero-pad ``x`` (n, m) to ``(n, ambient_dim)``, rotate randomly and shift by a random offset."""
    n, m = x.shape
    padded = np.zeros((n, ambient_dim))
    padded[:, :m] = x
    out = padded @ random_rotation(ambient_dim, rng).T
    if offset_scale > 0:
        out = out + offset_scale * rng.standard_normal(ambient_dim)
    return out


def _finish(points: np.ndarray, lid: np.ndarray, labels: np.ndarray, name: str, noise: float, rng: np.random.Generator) -> ManifoldSample:
    if noise > 0:
        points = points + noise * rng.standard_normal(points.shape)
    return ManifoldSample(
        points=np.ascontiguousarray(points, dtype=np.float64),
        lid=np.asarray(lid, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64),
        name=name,
    )


# --------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------
def point_mass(n: int, *, ambient_dim: int = 2, noise: float = 0.0, seed: int | np.random.Generator | None = 0) -> ManifoldSample:
    """``n`` copies of one random point of ``R^D`` (LID 0 everywhere).

    Parameters
    ----------
    n : int
        Number of samples.
    ambient_dim : int, default=2
        Ambient dimension ``D``.
    noise : float, default=0.0
        Standard deviation of isotropic Gaussian noise added to every coordinate (the true LID
        reported stays the noiseless one).
    seed : int or numpy.random.Generator, default=0
    """
    n = _check_int(n, "n", 1)
    ambient_dim = _check_ambient(ambient_dim, 1, "point")
    rng = _rng(seed)
    noise = _check_nonneg(noise, "noise")
    x = np.repeat(rng.standard_normal((1, ambient_dim)), n, axis=0)
    return _finish(x, np.zeros(n), np.zeros(n), "point", noise, rng)


def circle(
    n: int, *, ambient_dim: int = 2, radius: float = 1.0, noise: float = 0.0, seed: int | np.random.Generator | None = 0
) -> ManifoldSample:
    """Uniform sample of a circle of radius ``radius`` centred at the origin, rotated into ``R^D``
    (LID 1). Parameters as :func:`point_mass`; ``ambient_dim >= 2``."""
    n = _check_int(n, "n", 1)
    ambient_dim = _check_ambient(ambient_dim, 2, "circle")
    radius = _check_nonneg(radius, "radius")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    x = radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return _finish(_embed(x, ambient_dim, rng), np.ones(n), np.zeros(n), "circle", noise, rng)


def helix(n: int, *, ambient_dim: int = 3, noise: float = 0.0, seed: int | np.random.Generator | None = 0) -> ManifoldSample:
    """Three turns of the helix ``(cos s, sin s, s / (2 pi))``, uniform in arc length, rotated into
    ``R^D`` (LID 1). ``ambient_dim >= 3``."""
    n = _check_int(n, "n", 1)
    ambient_dim = _check_ambient(ambient_dim, 3, "helix")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    s = rng.uniform(0, 6 * np.pi, n)
    x = np.stack([np.cos(s), np.sin(s), s / (2 * np.pi)], axis=1)
    return _finish(_embed(x, ambient_dim, rng), np.ones(n), np.zeros(n), "helix", noise, rng)


def sphere(
    n: int, *, dim: int = 2, ambient_dim: int | None = None, noise: float = 0.0, seed: int | np.random.Generator | None = 0
) -> ManifoldSample:
    """Uniform sample of the unit sphere ``S^dim`` (normalised Gaussians), rotated into ``R^D``
    (LID ``dim``). ``ambient_dim`` defaults to ``dim + 1`` and must be at least that."""
    n = _check_int(n, "n", 1)
    dim = _check_int(dim, "dim", 1)
    ambient_dim = _check_ambient(dim + 1 if ambient_dim is None else ambient_dim, dim + 1, f"sphere S^{dim}")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    g = rng.standard_normal((n, dim + 1))
    x = g / np.linalg.norm(g, axis=1, keepdims=True)
    return _finish(_embed(x, ambient_dim, rng), np.full(n, dim), np.zeros(n), "sphere", noise, rng)


def torus(n: int, *, ambient_dim: int = 3, noise: float = 0.0, seed: int | np.random.Generator | None = 0) -> ManifoldSample:
    """Area-uniform sample of the ring torus with radii R=2, r=1 in ``R^3`` (rejection sampling of
    the tube angle), rotated into ``R^D`` (LID 2). ``ambient_dim >= 3``."""
    n = _check_int(n, "n", 1)
    ambient_dim = _check_ambient(ambient_dim, 3, "torus")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    big, small = 2.0, 1.0
    phis: list[np.ndarray] = []
    have = 0
    while have < n:  # area element is proportional to R + r cos(phi)
        phi = rng.uniform(0, 2 * np.pi, 2 * n)
        keep = rng.uniform(0, big + small, 2 * n) < big + small * np.cos(phi)
        phis.append(phi[keep])
        have += int(keep.sum())
    phi = np.concatenate(phis)[:n]
    theta = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([(big + small * np.cos(phi)) * np.cos(theta), (big + small * np.cos(phi)) * np.sin(theta), small * np.sin(phi)], axis=1)
    return _finish(_embed(x, ambient_dim, rng), np.full(n, 2), np.zeros(n), "torus", noise, rng)


def affine_subspace(
    n: int,
    *,
    dim: int = 2,
    ambient_dim: int = 10,
    scale: float = 1.0,
    noise: float = 0.0,
    seed: int | np.random.Generator | None = 0,
) -> ManifoldSample:
    """Uniform sample of the cube ``[-scale, scale]^dim`` placed on a random affine ``dim``-plane of
    ``R^D`` (random rotation and a standard-normal offset). LID ``dim``; ``dim=0`` is a point mass."""
    n = _check_int(n, "n", 1)
    dim = _check_int(dim, "dim", 0)
    ambient_dim = _check_ambient(ambient_dim, max(dim, 1), f"a {dim}-dimensional subspace")
    scale = _check_nonneg(scale, "scale")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    x = rng.uniform(-scale, scale, (n, dim)) if dim > 0 else np.zeros((n, 1))
    return _finish(_embed(x, ambient_dim, rng, offset_scale=1.0), np.full(n, dim), np.zeros(n), "subspace", noise, rng)


def union_of_subspaces(
    n: int,
    *,
    dims: tuple[int, ...] = (0, 1, 2, 5),
    ambient_dim: int = 10,
    separation: float = 10.0,
    weights: tuple[float, ...] | None = None,
    noise: float = 0.0,
    seed: int | np.random.Generator | None = 0,
) -> ManifoldSample:
    """Disjoint union of affine pieces of different dimensions (cubes ``[-1, 1]^d`` on random
    ``d``-planes), their centres ``separation`` apart along distinct random directions, so that
    every point's neighbourhood lies in its own piece. A piece with ``d = 0`` is a point mass.

    Parameters
    ----------
    n : int
        Total number of samples, split between the pieces by ``weights`` (equal by default).
    dims : tuple of int, default=(0, 1, 2, 5)
        Dimension of each piece; ``labels`` index into it.
    ambient_dim : int, default=10
        Must be ``>= max(dims)`` and ``>= len(dims)``.
    separation : float, default=10.0
        Distance scale between piece centres (pieces have diameter ``2 sqrt(d)``).
    weights : tuple of float, optional
        Mixture weights (normalised); counts are ``round(n * w)`` with the remainder on the last piece.
    """
    n = _check_int(n, "n", 1)
    if len(dims) == 0:
        raise ValueError("dims must name at least one piece, e.g. dims=(0, 1, 2, 5)")
    dims = tuple(_check_int(d, "dims[i]", 0) for d in dims)
    ambient_dim = _check_ambient(ambient_dim, max(max(dims), len(dims), 1), f"union of pieces {dims}")
    separation = _check_nonneg(separation, "separation")
    noise = _check_nonneg(noise, "noise")
    if weights is None:
        w = np.full(len(dims), 1.0 / len(dims))
    else:
        if len(weights) != len(dims):
            raise ValueError(f"weights has {len(weights)} entries but dims has {len(dims)}; give one weight per piece")
        w = np.asarray(weights, dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights={weights} must be non-negative with a positive sum")
        w = w / w.sum()
    counts = np.floor(n * w).astype(int)
    counts[-1] += n - counts.sum()
    rng = _rng(seed)
    centres = separation * random_rotation(ambient_dim, rng)[: len(dims)]  # orthogonal directions
    pts, lids, labels = [], [], []
    for i, (d, c) in enumerate(zip(dims, counts)):
        x = rng.uniform(-1, 1, (c, d)) if d > 0 else np.zeros((c, 1))
        pts.append(_embed(x, ambient_dim, rng) + centres[i])
        lids.append(np.full(c, d))
        labels.append(np.full(c, i))
    return _finish(np.concatenate(pts), np.concatenate(lids), np.concatenate(labels), "union", noise, rng)


def von_mises_mixture(
    n: int,
    *,
    kappa: float = 4.0,
    n_components: int = 3,
    point_mass_weight: float = 0.15,
    seed: int | np.random.Generator | None = 0,
) -> ManifoldSample:
    """The paper's toy data (Sec. 4.1, Fig. 4): a mixture of ``n_components`` von Mises
    distributions on the unit circle of ``R^2`` (LID 1) plus a point mass at the origin (LID 0).

    Component means are equally spaced angles ``2 pi j / n_components`` (j = 0, 1, ...), all with
    concentration ``kappa`` and equal weight. The number of points at the origin is
    ``round(point_mass_weight * n)`` (deterministic, so small data sets always contain the point
    mass); ``labels`` is 0 for the origin and ``j + 1`` for component ``j``. The circle points come
    first, then the origin points.

    Parameters
    ----------
    n : int
        Number of samples (the paper uses 100 training points).
    kappa : float, default=4.0
        von Mises concentration.
    n_components : int, default=3
    point_mass_weight : float, default=0.15
        Fraction of the samples at the origin, in [0, 1].
    seed : int or numpy.random.Generator, default=0
    """
    n = _check_int(n, "n", 1)
    kappa = _check_nonneg(kappa, "kappa")
    n_components = _check_int(n_components, "n_components", 1)
    point_mass_weight = _check_nonneg(point_mass_weight, "point_mass_weight")
    if point_mass_weight > 1:
        raise ValueError(f"point_mass_weight={point_mass_weight} must lie in [0, 1]")
    rng = _rng(seed)
    n_origin = int(round(point_mass_weight * n))
    n_circle = n - n_origin
    comp = rng.integers(0, n_components, n_circle)
    theta = rng.vonmises(2 * np.pi * comp / n_components, kappa) if n_circle else np.zeros(0)
    circle_pts = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    points = np.concatenate([circle_pts, np.zeros((n_origin, 2))])
    lid = np.concatenate([np.ones(n_circle), np.zeros(n_origin)])
    labels = np.concatenate([comp + 1, np.zeros(n_origin)])
    return _finish(points, lid, labels, "von_mises", 0.0, rng)


def sample_manifold(
    name: str,
    n: int,
    *,
    dim: int | None = None,
    ambient_dim: int | None = None,
    noise: float = 0.0,
    seed: int | np.random.Generator | None = 0,
) -> ManifoldSample:
    """Draw ``n`` points from the manifold called ``name`` in :data:`MANIFOLDS`.

    Parameters
    ----------
    name : {"point", "circle", "helix", "sphere", "torus", "subspace", "union", "von_mises"}
    n : int
        Number of samples.
    dim : int, optional
        Intrinsic dimension, only for ``"sphere"`` (default 2) and ``"subspace"`` (default 2);
        other names raise if it is given. Use the named generators for the remaining options
        (e.g. :func:`union_of_subspaces` ``dims=``, :func:`von_mises_mixture` ``kappa=``).
    ambient_dim : int, optional
        Ambient dimension ``D``; defaults to ``MANIFOLDS[name].ambient_dim`` (``dim + 1`` for the
        sphere). Not accepted for ``"von_mises"`` (always 2-D).
    noise : float, default=0.0
        Isotropic Gaussian noise added to the points (not for ``"von_mises"``).
    seed : int or numpy.random.Generator, default=0

    Returns
    -------
    ManifoldSample
        ``points`` (n, D), true ``lid`` (n,), ``labels`` (n,).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid names) or a parameter the manifold
        does not take.
    """
    if name not in MANIFOLDS:
        raise ValueError(f"name={name!r} is not a known manifold; choose one of {', '.join(map(repr, MANIFOLDS))}")
    if dim is not None and name not in ("sphere", "subspace"):
        raise ValueError(f"dim={dim} is only a parameter of 'sphere' and 'subspace'; {name!r} has a fixed dimension")
    if name == "von_mises":
        if ambient_dim not in (None, 2) or noise:
            raise ValueError("'von_mises' is the paper's 2-D data set: it takes neither ambient_dim nor noise; use von_mises_mixture()")
        return von_mises_mixture(n, seed=seed)
    D = MANIFOLDS[name].ambient_dim if ambient_dim is None else ambient_dim
    if name == "point":
        return point_mass(n, ambient_dim=D, noise=noise, seed=seed)
    if name == "circle":
        return circle(n, ambient_dim=D, noise=noise, seed=seed)
    if name == "helix":
        return helix(n, ambient_dim=D, noise=noise, seed=seed)
    if name == "sphere":
        k = 2 if dim is None else dim
        return sphere(n, dim=k, ambient_dim=ambient_dim, noise=noise, seed=seed)
    if name == "torus":
        return torus(n, ambient_dim=D, noise=noise, seed=seed)
    if name == "subspace":
        return affine_subspace(n, dim=2 if dim is None else dim, ambient_dim=D, noise=noise, seed=seed)
    if name == "union":
        return union_of_subspaces(n, ambient_dim=D, noise=noise, seed=seed)
    raise AssertionError(f"unhandled manifold {name!r}")  # pragma: no cover - MANIFOLDS and this switch agree
