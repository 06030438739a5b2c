"""Image complexity correction (App. C.2 of the paper).

Simple images get low LID_theta whether or not they are memorized. The paper divides LID_theta
by the PNG-compressed length of the image (compression level 9, after Kamkari et al. 2024b) so
that the smallest values point at memorized, not merely simple, images.

Images follow lidmem's convention: float arrays ``(n, c, h, w)`` in [-1, 1] (c = 1 grey, c = 3
RGB), quantised to 8 bits before encoding. The paper used OpenCV's encoder; we use Pillow's
(same zlib deflate at level 9, no extra filtering search), so absolute lengths can differ from
cv2's by a few bytes while their ordering is what matters.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

__all__ = ["png_length", "png_normalized_lid"]


def _as_images(images: Any) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (n, c, h, w) with c in (1, 3); got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("images contain non-finite values")
    return arr


def png_length(images: Any, *, value_range: tuple[float, float] = (-1.0, 1.0), compress_level: int = 9) -> np.ndarray:
    """PNG-compressed size in bytes of each image.

    Parameters
    ----------
    images : array-like of shape (n, c, h, w), c in {1, 3}
        Values in ``value_range`` (clipped), quantised to uint8 before encoding.
    value_range : (float, float), default=(-1.0, 1.0)
        What maps to 0 and 255.
    compress_level : int, default=9
        zlib level 0-9 (the paper: 9).

    Returns
    -------
    ndarray of shape (n,), int64
    """
    from PIL import Image

    arr = _as_images(images)
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range={value_range} must be (low, high) with high > low")
    if not (isinstance(compress_level, (int, np.integer)) and 0 <= compress_level <= 9):
        raise ValueError(f"compress_level={compress_level!r} must be an integer in 0..9; the paper uses 9")
    u8 = np.round(np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
    out = np.empty(len(u8), np.int64)
    for i, img in enumerate(u8):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        buf = io.BytesIO()
        pil.save(buf, format="PNG", compress_level=int(compress_level))
        out[i] = buf.tell()
    return out


def png_normalized_lid(lid_theta: Any, images: Any, *, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """LID_theta divided by the PNG length (bytes) of each image: ``lid_theta / png_length(images)``.

    Parameters
    ----------
    lid_theta : array-like of shape (n,)
    images : array-like of shape (n, c, h, w)

    Returns
    -------
    ndarray of shape (n,), float64 (low = memorized, after the complexity correction)
    """
    lid = np.asarray(lid_theta.detach().cpu() if isinstance(lid_theta, torch.Tensor) else lid_theta, dtype=np.float64).ravel()
    lengths = png_length(images, value_range=value_range)
    if lid.shape[0] != lengths.shape[0]:
        raise ValueError(f"lid_theta has {lid.shape[0]} values but there are {lengths.shape[0]} images")
    return lid / lengths
