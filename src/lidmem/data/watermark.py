"""Planted local memorization: the digits with a fixed "watermark" patch stamped on a share of them.

Used by ``scripts/train_watermark.py`` and ``benchmarks/watermark_maps.py`` to check that
memorization maps (:func:`lidmem.estimators.flipd_map`) find *where* a model copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_positive_int

__all__ = ["WatermarkData", "WATERMARK", "checkerboard", "watermark_mask", "load_digits_with_watermark"]

#: The 3x3 checkerboard stamped on watermarked images (values in [-1, 1]).
WATERMARK: np.ndarray = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=np.float32)


def checkerboard(size: int = 3) -> np.ndarray:
    """The ``(size, size)`` +-1 checkerboard with +1 at the top-left corner (``size=3``: :data:`WATERMARK`)."""
    size = check_positive_int(size, "size")
    i = np.arange(size)
    return np.where((i[:, None] + i[None, :]) % 2 == 0, 1.0, -1.0).astype(np.float32)


@dataclass
class WatermarkData:
    """A training set with a planted patch.

    Attributes
    ----------
    images : ndarray of shape (n, 1, 8, 8), float32
        Digits in [-1, 1] plus per-pixel jitter; watermarked rows carry :data:`WATERMARK` exactly.
    watermarked : ndarray of shape (n,), bool
    mask : ndarray of shape (8, 8), bool
        The patch's pixels.
    recipe : dict
        The settings that produced the set.
    """

    images: np.ndarray
    watermarked: np.ndarray
    mask: np.ndarray
    recipe: dict[str, Any] = field(default_factory=dict)


def watermark_mask(position: tuple[int, int] = (0, 5), side: int = 8, *, size: int = 3) -> np.ndarray:
    """Boolean ``(side, side)`` mask of the ``size x size`` patch whose top-left pixel is ``position``."""
    size = check_positive_int(size, "size")
    r, c = (int(v) for v in position)
    if not (0 <= r <= side - size and 0 <= c <= side - size):
        raise ValueError(f"position={position} must put the {size}x{size} patch inside the {side}x{side} image (0..{side - size})")
    m = np.zeros((side, side), dtype=bool)
    m[r : r + size, c : c + size] = True
    return m


def load_digits_with_watermark(
    *, share: float = 0.3, jitter: float = 0.15, position: tuple[int, int] = (0, 5), size: int = 3, seed: int = 0
) -> WatermarkData:
    """The 1,797 scikit-learn digits (8x8, [-1, 1]) with a checkerboard patch on a share of them.

    Recipe (``rng = numpy.random.default_rng(seed)``): every image gets i.i.d. Gaussian jitter of
    standard deviation ``jitter`` on every pixel (``rng.normal``), then ``round(share * 1797)``
    images drawn with ``rng.choice`` (without replacement) get :func:`checkerboard` (``size``;
    :data:`WATERMARK` for the default 3) written over the
    pixels of :func:`watermark_mask` (exact values, no jitter). The jitter removes the pixels that
    are constant in the digits (the borders are always black): a constant pixel is "memorized" by
    any model that fits the data, so it would compete with the patch (the data-intrinsic
    variance collapse that Kim & Lee, ICML 2026, subtract with a baseline model).

    Parameters
    ----------
    share : float, default=0.3
        Fraction of images that carry the patch, in (0, 1).
    jitter : float, default=0.15
        Standard deviation of the per-pixel noise (>= 0).
    position : (int, int), default=(0, 5)
        Top-left pixel of the patch (the top-right corner by default).
    size : int, default=3
        Side of the square patch, in pixels.
    seed : int, default=0
    """
    from .images import load_digits_images

    if not 0.0 < float(share) < 1.0:
        raise ValueError(f"share={share} must lie in (0, 1)")
    if not float(jitter) >= 0.0:
        raise ValueError(f"jitter={jitter} must be >= 0")
    seed = check_positive_int(seed, "seed", minimum=0)
    mask = watermark_mask(position, size=size)
    base, _ = load_digits_images()
    rng = np.random.default_rng(seed)
    imgs = (base + rng.normal(0.0, float(jitter), size=base.shape)).astype(np.float32)
    n = len(imgs)
    chosen = rng.choice(n, int(round(float(share) * n)), replace=False)
    marked = np.zeros(n, dtype=bool)
    marked[chosen] = True
    r, c = position
    imgs[marked, 0, r : r + size, c : c + size] = checkerboard(size)
    recipe = {"source": "sklearn.datasets.load_digits", "share": float(share), "jitter": float(jitter), "position": [int(r), int(c)], "seed": seed,
              "patch": f"{size}x{size} checkerboard +-1"}
    return WatermarkData(images=imgs, watermarked=marked, mask=mask, recipe=recipe)
