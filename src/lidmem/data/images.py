"""Real images that ship offline: scikit-learn's 8x8 digits and photo tiles, with planted duplicates.

The planted-duplicates recipe (:func:`load_digits_with_duplicates`) is how lidmem makes a
memorization audit measurable against known truth: a few training images are repeated many
times, a diffusion model trained on the result copies them, and local PCA of the training set
gives them LID_* = 0 (Prop. 3.1 of the paper).

Image convention everywhere in lidmem's image tools: float32 arrays of shape ``(n, c, h, w)``
scaled to ``[-1, 1]`` (``-1`` black, ``+1`` white). PNG files are 8-bit; they map to ``[-1, 1]``
by ``x = 2 * v / 255 - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_image_range, check_positive_int

__all__ = [
    "DigitsData",
    "load_digits_images",
    "load_digits_with_duplicates",
    "load_patches_with_duplicates",
    "to_unit_range",
    "from_unit_range",
    "write_png_folder",
    "read_png_folder",
    "check_image_range",
]

DIGITS_LEVELS = 16  # sklearn digits hold integers 0..16 (17 grey levels)


@dataclass
class DigitsData:
    """A training set of images with ids and planted-duplicate flags.

    Attributes
    ----------
    images : ndarray of shape (n, 1, 8, 8), float32 in [-1, 1]
    ids : list of str, length n
        ``"d0123"`` for source image 123 of ``sklearn.datasets.load_digits``; extra copies of a
        duplicated image are ``"d0123-r01"``, ``"d0123-r02"``, ...
    source_index : ndarray of shape (n,), int64
        Index of each row in ``load_digits()``.
    duplicated : ndarray of shape (n,), bool
        True for every row (original and copies) of a planted duplicated image.
    labels : ndarray of shape (n,), int64
        The digit class (0-9).
    recipe : dict
        The settings that produced the set (``n_duplicated``, ``n_copies``, ``seed``, ...).
    """

    images: np.ndarray
    ids: list[str]
    source_index: np.ndarray
    duplicated: np.ndarray
    labels: np.ndarray
    recipe: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def to_unit_range(x: np.ndarray) -> np.ndarray:
    """Map images from [-1, 1] to [0, 1] (clipped)."""
    return np.clip((np.asarray(x, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)


def from_unit_range(x: np.ndarray) -> np.ndarray:
    """Map images from [0, 1] to [-1, 1]."""
    return np.asarray(x, dtype=np.float32) * 2.0 - 1.0


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as ``(images (1797, 1, 8, 8) in [-1, 1], labels (1797,))``.

    Pixel value ``v`` in 0..16 maps to ``2 * v / 16 - 1``. The data ships inside scikit-learn
    (no download).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    imgs = bunch.images.astype(np.float32)[:, None] * (2.0 / DIGITS_LEVELS) - 1.0
    return imgs, bunch.target.astype(np.int64)


def load_digits_with_duplicates(*, n_duplicated: int = 30, n_copies: int = 30, seed: int = 0) -> DigitsData:
    """The digits with ``n_duplicated`` images each appearing ``n_copies`` times (planted memorization).

    Recipe: take all 1,797 digits; draw ``n_duplicated`` distinct source indices with
    ``numpy.random.default_rng(seed).choice(1797, n_duplicated, replace=False)`` (sorted); append
    ``n_copies - 1`` extra copies of each, so each chosen image appears ``n_copies`` times. With the
    defaults the set has 1,797 + 30 * 29 = 2,667 rows, of which 900 (34%) are flagged duplicated.
    Rows are ordered: the 1,797 originals, then the copies grouped by source image.

    Parameters
    ----------
    n_duplicated : int, default=30
        Number of distinct images to duplicate (0 gives the plain digits).
    n_copies : int, default=30
        How many times each duplicated image appears in total (>= 2).
    seed : int, default=0

    Returns
    -------
    DigitsData
    """
    n_duplicated = check_positive_int(n_duplicated, "n_duplicated", minimum=0)
    n_copies = check_positive_int(n_copies, "n_copies", minimum=2)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {seed!r}")
    base, labels = load_digits_images()
    n = len(base)
    if n_duplicated > n:
        raise ValueError(f"n_duplicated={n_duplicated} must be <= {n}, the number of digits")
    chosen = np.sort(np.random.default_rng(int(seed)).choice(n, n_duplicated, replace=False)) if n_duplicated else np.zeros(0, np.int64)
    extra_src = np.repeat(chosen, n_copies - 1)
    src = np.concatenate([np.arange(n), extra_src]).astype(np.int64)
    ids = [f"d{i:04d}" for i in range(n)]
    for s in chosen:
        ids.extend(f"d{s:04d}-r{r:02d}" for r in range(1, n_copies))
    dup = np.isin(src, chosen)
    return DigitsData(
        images=base[src].copy(),
        ids=ids,
        source_index=src,
        duplicated=dup,
        labels=labels[src],
        recipe={
            "dataset": "sklearn.datasets.load_digits",
            "scaling": "2 * v / 16 - 1 (pixel values 0..16 to [-1, 1])",
            "n_duplicated": n_duplicated,
            "n_copies": n_copies,
            "seed": int(seed),
            "duplicated_source_indices": [int(s) for s in chosen],
        },
    )


def load_patches_with_duplicates(
    *, size: int = 16, n_images: int = 400, n_duplicated: int = 10, n_copies: int = 20, seed: int = 0,
    channels: int = 1, downsample: int = 2,
) -> DigitsData:
    """Photo patches with planted duplicates: a second planted data set, of another image size.

    Recipe: the two photos that ship inside scikit-learn (``load_sample_images``: china.jpg and
    flower.jpg, 427x640 RGB) are converted to grey (mean of the channels; ``channels=3`` keeps
    RGB), downsampled ``downsample`` x by block averaging, and cut into non-overlapping
    ``size x size`` tiles (520 tiles for ``size=16`` and for ``size=32, downsample=1``);
    ``n_images`` tiles are drawn with ``default_rng(seed)`` and then ``n_duplicated`` of them get
    ``n_copies - 1`` extra copies (as in :func:`load_digits_with_duplicates`). Pixel value ``v``
    in 0..255 maps to ``2 v / 255 - 1``. With the defaults: 400 + 10 * 19 = 590 rows of shape
    ``(1, 16, 16)``, 200 (34%) duplicated. The RGB set of the training benchmarks is
    ``load_patches_with_duplicates(size=32, channels=3, downsample=1)``: 590 rows ``(3, 32, 32)``.

    Parameters
    ----------
    size : int, default=16
        Tile side ``s`` (pixels after downsampling).
    n_images, n_duplicated, n_copies, seed : int
        Distinct tiles, how many of them are duplicated, total appearances of each, and the seed.
    channels : {1, 3}, default=1
        1: grey (mean of R, G, B); 3: RGB.
    downsample : int, default=2
        Block-average factor applied to the photos before tiling (1: full resolution).

    Returns
    -------
    DigitsData
        ``images`` of shape ``(n, channels, size, size)``; ``labels`` holds the photo
        (0 china, 1 flower); ``source_index`` the tile number.
    """
    from sklearn.datasets import load_sample_images

    size = check_positive_int(size, "size", minimum=4)
    n_images = check_positive_int(n_images, "n_images", minimum=2)
    n_duplicated = check_positive_int(n_duplicated, "n_duplicated", minimum=0)
    n_copies = check_positive_int(n_copies, "n_copies", minimum=2)
    downsample = check_positive_int(downsample, "downsample")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels={channels!r} must be 1 (grey) or 3 (RGB)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {seed!r}")
    tiles, photo = [], []
    f = downsample
    for k, img in enumerate(load_sample_images().images):
        g = np.asarray(img, dtype=np.float64)
        g = g.mean(axis=2, keepdims=True) if channels == 1 else g  # (h, w, c)
        h, w = (g.shape[0] // f) * f, (g.shape[1] // f) * f
        g = g[:h, :w].reshape(h // f, f, w // f, f, channels).mean(axis=(1, 3))
        for i in range(0, g.shape[0] - size + 1, size):
            for j in range(0, g.shape[1] - size + 1, size):
                tiles.append(g[i:i + size, j:j + size].transpose(2, 0, 1))
                photo.append(k)
    if not tiles:
        raise ValueError(f"size={size} with downsample={downsample} leaves no tile of the 427x640 photos; use a smaller size or downsample")
    all_tiles = (np.stack(tiles) * (2.0 / 255.0) - 1.0).astype(np.float32)
    if n_images > len(all_tiles):
        raise ValueError(f"n_images={n_images} must be <= {len(all_tiles)}, the number of {size}x{size} tiles (downsample={downsample})")
    if n_duplicated > n_images:
        raise ValueError(f"n_duplicated={n_duplicated} must be <= n_images={n_images}")
    rng = np.random.default_rng(int(seed))
    picked = np.sort(rng.choice(len(all_tiles), n_images, replace=False))
    chosen = np.sort(rng.choice(n_images, n_duplicated, replace=False)) if n_duplicated else np.zeros(0, np.int64)
    rows = np.concatenate([np.arange(n_images), np.repeat(chosen, n_copies - 1)]).astype(np.int64)
    ids = [f"p{picked[i]:04d}" for i in range(n_images)]
    for c in chosen:
        ids.extend(f"p{picked[c]:04d}-r{r:02d}" for r in range(1, n_copies))
    return DigitsData(
        images=all_tiles[picked[rows]].copy(),
        ids=ids,
        source_index=picked[rows],
        duplicated=np.isin(rows, chosen),
        labels=np.asarray(photo, dtype=np.int64)[picked[rows]],
        recipe={
            "dataset": f"sklearn.datasets.load_sample_images (china.jpg, flower.jpg), {'grey' if channels == 1 else 'RGB'}, "
                       f"{downsample}x downsampled, tiles",
            "scaling": "2 * v / 255 - 1",
            "size": size,
            "channels": int(channels),
            "downsample": int(downsample),
            "n_images": n_images,
            "n_duplicated": n_duplicated,
            "n_copies": n_copies,
            "seed": int(seed),
            "duplicated_tiles": [int(picked[c]) for c in chosen],
        },
    )


def write_png_folder(images: np.ndarray, folder: str | Path, *, names: list[str] | None = None) -> list[Path]:
    """Write images ``(n, c, h, w)`` in [-1, 1] as 8-bit PNGs (grey for c=1, RGB for c=3).

    Files are named ``names[i] + ".png"`` (default ``"{i:05d}.png"``). Returns the paths.
    """
    from PIL import Image

    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (n, 1 or 3, h, w); got {arr.shape}")
    if names is not None and len(names) != len(arr):
        raise ValueError(f"names has {len(names)} entries but there are {len(arr)} images")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    u8 = np.round(to_unit_range(arr) * 255.0).astype(np.uint8)
    paths = []
    for i, img in enumerate(u8):
        p = folder / f"{names[i] if names is not None else f'{i:05d}'}.png"
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(p)
        paths.append(p)
    return paths


def read_png_folder(folder: str | Path, *, mode: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Read a folder of images as ``(images (n, c, h, w) in [-1, 1], ids)``; ids are file stems.

    Raises ValueError for a folder without images or with images of mixed sizes (see
    :func:`lidmem.data.io.load_image_folder`).
    """
    from .io import load_image_folder

    imgs, names = load_image_folder(folder, mode=mode)
    return imgs, [Path(n).stem for n in names]
