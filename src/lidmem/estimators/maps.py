"""Memorization maps: where in an image a model's LID is low (local memorization).

FLIPD (eq. 6) is a sum over coordinates,

    FLIPD(x, t0) = sum_i m_i(x, t0),   m_i = 1 + sigma(t0)^2 (d s_i / d x_i + s_i^2),

evaluated at ``psi(t0) x``. The map of ``x`` is ``m`` reshaped to ``x``'s shape. A coordinate the
model is free to move (locally a full direction of the data) has ``m_i ~ 1``; a coordinate it has
pinned (memorized, or constant in the data) has ``m_i ~ 0`` (for an exact Gaussian score,
``E m = diag(I - sigma^4 (Sigma + sigma^2 I)^-2)`` in the eigenbasis sense; for data on a
coordinate-aligned subspace: 1 on the subspace's coordinates, 0 on the others).

The diagonal ``d s_i / d x_i`` comes from the same computation as FLIPD's trace
(:func:`lidmem.estimators.flipd._eq6_terms`): exactly with ``d`` basis-vector JVPs, or with
Hutchinson's diagonal estimator ``E_v[v * (J v)] = diag J`` (Bekas, Kokiopoulou & Saad, 2007)
with probes ``v`` of ``E[v v^T] = I``. With the same probes the map's sum *is* the Hutchinson
FLIPD. Per-coordinate Hutchinson estimates have variance ``sum_{j != i} J_ij^2`` per probe:
prefer ``trace="exact"`` where ``d`` allows, or many probes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from .._validation import as_model_dtype, check_positive_int, check_t0
from ..defaults import FLIPD_T0, RELATIVE_MAP_SMOOTH
from ..diffusion.score import check_extra_args, time_tensor
from ..utils import chunk_slices
from .flipd import _flipd_curve_impl, _get_sde

__all__ = ["flipd_map", "to_pixel_map", "lowest_pixels", "map_concentration", "relative_map", "score_difference_map"]

#: 1.4826 * MAD estimates the standard deviation of a Gaussian (the robust scale of :func:`relative_map`).
_MAD_TO_SD = 1.4826


def flipd_map(
    model: Any,
    x: Any,
    t0: float = FLIPD_T0,
    *,
    trace: Literal["exact", "hutchinson"] = "exact",
    n_probes: int = 1,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | torch.Generator | None = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    ad: Literal["auto", "forward", "reverse"] = "auto",
    extra_args: Mapping[str, Any] | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """Memorization map of each point: the per-coordinate summands of FLIPD (eq. 6).

    ``map[i].sum() == flipd(model, x, t0, ...)[i]`` with the same arguments (exactly the same
    numbers summed; equal up to float rounding), for the exact trace and for Hutchinson probes
    with the same ``seed`` and ``batch_size``.

    Parameters
    ----------
    model, x, t0, trace, n_probes, probe, seed, batch_size, progress, ad, extra_args, create_graph
        As in :func:`lidmem.estimators.flipd`. ``x`` has shape ``(n, ...)``: pixels for pixel
        models, latents for latent models (:func:`lidmem.models.load_model` folders; use
        :func:`to_pixel_map` to bring the map to pixel resolution).
        ``trace="hutchinson"`` estimates the diagonal with ``n_probes`` probes (``E[v * J v]``).

    Returns
    -------
    Tensor of shape (n, *x.shape[1:])
        ``1 + sigma(t0)^2 (d s_i / d x_i + s_i^2)`` per coordinate, in ``x``'s floating dtype
        (at least float32). About 1 where the model is locally free, about 0 (or below: a
        learned score can overshoot) where it pins the coordinate.

    Examples
    --------
    >>> from lidmem.data.analytic import GaussianMixtureOnSubspaces
    >>> gm = GaussianMixtureOnSubspaces(dims=[2], ambient_dim=4)
    >>> x, _, _ = gm.sample(1, seed=0)
    >>> flipd_map(gm, x, t0=1e-4).shape
    torch.Size([1, 4])
    """
    x = as_model_dtype(x, model)
    t0 = check_t0(t0, "t0")
    terms = _flipd_curve_impl(model, x, [t0], trace, n_probes, probe, seed, batch_size, progress, ad, extra_args,
                              create_graph, per_coordinate=True)[:, 0]
    x = torch.as_tensor(x)
    dtype = torch.promote_types(x.dtype, torch.float32) if x.dtype.is_floating_point else torch.float32
    return terms.reshape(x.shape).to(dtype)


def _check_maps(maps: Any, name: str = "maps") -> torch.Tensor:
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps)
    if m.ndim < 2 or m.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 1, e.g. the output of flipd_map; got {tuple(m.shape)}")
    if not m.dtype.is_floating_point:
        m = m.double()
    return m


def to_pixel_map(maps: Any, image_shape: Sequence[int], *, mode: Literal["nearest", "bilinear"] = "nearest") -> torch.Tensor:
    """Bring maps of shape ``(n, c, h, w)`` to the pixel grid of ``image_shape = (C, H, W)``.

    Convention (latent models): the map is summed over its ``c`` channels (a latent location's
    memorization is the sum of its channels' summands), upsampled to ``(H, W)`` with ``mode``
    (``torch.nn.functional.interpolate``), and divided by the area factor ``(H / h) * (W / w)``,
    so that with ``mode="nearest"`` the pixel map still sums to FLIPD. Pixel models
    (``(h, w) == (H, W)``) only get the channel sum.

    Returns
    -------
    Tensor of shape (n, H, W)
    """
    m = _check_maps(maps)
    if m.ndim != 4:
        raise ValueError(f"maps must have shape (n, c, h, w) to be drawn as images; got {tuple(m.shape)}")
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W); got {tuple(image_shape)}")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode={mode!r} must be 'nearest' or 'bilinear'")
    H, W = int(image_shape[1]), int(image_shape[2])
    s = m.sum(1, keepdim=True)
    h, w = s.shape[-2:]
    if (h, w) == (H, W):
        return s[:, 0]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    up = torch.nn.functional.interpolate(s, size=(H, W), mode=mode, **kw)
    return up[:, 0] * (h * w) / (H * W)


def _spatial(maps: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(n, k)`` values per location (channel sum for images) and the value of a free location."""
    if maps.ndim == 4:
        return maps.sum(1).flatten(1), float(maps.shape[1])
    if maps.ndim == 3:
        return maps.flatten(1), 1.0
    return maps.flatten(1), 1.0


def lowest_pixels(maps: Any, fraction: float = 0.1) -> torch.Tensor:
    """Boolean mask of the ``ceil(fraction * h * w)`` lowest locations of each map.

    ``maps`` of shape ``(n, c, h, w)`` are summed over channels first (mask shape ``(n, h, w)``);
    ``(n, h, w)`` maps are used as is; ``(n, d)`` maps give ``(n, d)``. Ties are broken by
    position (``torch.topk``).
    """
    m = _check_maps(maps)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction={fraction} must lie in (0, 1]")
    flat, _ = _spatial(m)
    k = max(1, math.ceil(float(fraction) * flat.shape[1]))
    idx = torch.topk(flat, k, dim=1, largest=False).indices
    out = torch.zeros_like(flat, dtype=torch.bool)
    out.scatter_(1, idx, True)
    shape = m.shape[:1] + (m.shape[2:] if m.ndim == 4 else m.shape[1:])
    return out.reshape(shape)


def map_concentration(maps: Any, fraction: float = 0.1) -> torch.Tensor:
    """Share of a map's memorization mass carried by its lowest ``fraction`` of locations.

    Memorization mass of a location: ``max(0, c - m)`` with ``m`` the channel-summed map value
    and ``c`` the number of channels (the value of a free location), i.e. how far the location is
    from free. Returns, per map, (mass of the ``ceil(fraction * k)`` lowest locations) / (total
    mass), in [0, 1]: about ``fraction`` when the deficit is spread evenly (no local
    memorization, or the whole image pinned), near 1 when it sits in a small region (a
    watermark, a logo). NaN for a map without mass (everywhere free).

    Returns
    -------
    Tensor of shape (n,), float64
    """
    m = _check_maps(maps).double()
    flat, full = _spatial(m)
    mass = (full - flat).clamp_min(0.0)
    low = lowest_pixels(m, fraction).reshape(flat.shape)
    total = mass.sum(1)
    share = (mass * low).sum(1) / total
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))


def relative_map(
    maps: Any,
    reference: Any,
    *,
    clip: float | None = 2.0,
    min_scale: float = 0.1,
    max_iter: int = 10,
    smooth: float | None = RELATIVE_MAP_SMOOTH,
) -> torch.Tensor:
    """Maps against what the model does on ordinary images: a per-coordinate robust z-score.

    A raw FLIPD map is low wherever the model pins a coordinate, whatever the image: pixels that
    vary little in the data, or the region a model pins on every image it sees (a position bias).
    ``relative_map`` compares each coordinate with the same coordinate of ``reference`` maps
    (the maps, at the same ``t0`` and with the same settings, of images the model treats
    ordinarily: training images, or the audit's non-copy samples)::

        z_i = (m_i - median_i) / max(1.4826 * MAD_i, min_scale * median over i of 1.4826 * MAD_i)

    The median and the median absolute deviation (MAD) are taken over the reference maps, with
    one-sided clipping: reference values below ``median - clip * 1.4826 MAD`` (pinned there:
    memorized in that reference image) are dropped and the two recomputed, until nothing changes
    (at most ``max_iter`` rounds). A minority of memorized images among the references (30% of
    the training images carrying a watermark) would otherwise pull the centre down at the
    memorized pixels, so that images *without* the watermark would read as free there (measured:
    in-patch share 0.02-0.08 against a chance level of 0.14-0.25 without clipping). Clipping the
    low side of an ordinary pixel shifts its centre by the same number of its own scales at every
    pixel, which leaves the ranking of pixels unchanged. Low ``z`` = pinned more than on ordinary
    images there. The scale floor keeps coordinates that every reference pins alike (MAD ~ 0)
    from blowing up.

    ``smooth`` (default :data:`RELATIVE_MAP_SMOOTH` = 0.5 pixels): the z-scores of the maps and
    of the references are then smoothed over the image plane (the last two axes, each channel
    alone) with a Gaussian of that standard deviation (replicated borders, radius
    ``int(4 smooth + 0.5)``, as ``scipy.ndimage.gaussian_filter``), and z-scored once more per
    coordinate against the smoothed references, with the same clipping. A memorized region is
    a patch of neighbouring pinned pixels, while the per-pixel noise of the map is not: the
    smoothing lifts pinned pixels whose own deficit is small (a patch pixel at the image border,
    where ordinary images are half pinned already), and the second z-score keeps the smoothed
    map free of the position bias (pixels at the border have fewer neighbours, hence a wider
    smoothed spread). Measured on two planted watermarks (``benchmarks/watermark_maps.py``,
    docs/maps.md, t0 = 0.1): the share of the lowest 10% pixels inside the patch on generated
    samples that carry it rises from 0.82 / 1.00 to 0.94 / 1.00 (3x3 / 4x4 patch), and on
    images without it the worst window of the patch's size deviates from chance by at most
    0.066 instead of 0.075. ``smooth=None`` (or maps without an image plane, shape ``(n, d)``):
    the plain per-coordinate z-score. Limitation: the clipping acts on single coordinates, so a
    reference's memorized values, when far below the ordinary ones, leak through the smoothing
    into its neighbours' values; wider smoothing leaks more (``tests/test_maps.py``: with
    memorized values 4-16 scales deep the share at chance holds within 0.04 at 0.5 pixels, not
    at 1.0).

    Parameters
    ----------
    maps : array-like of shape (n, ...)
        Maps to compare (:func:`flipd_map` output).
    reference : array-like of shape (m, ...)
        Reference maps, same trailing shape; ``m >= 2`` (a few dozen or more for a stable MAD).
    clip : float or None, default=2.0
        One-sided clipping threshold in robust standard deviations (> 0); None: plain median / MAD.
    min_scale : float, default=0.1
        Floor of the per-coordinate scale, as a share of its median over coordinates (> 0).
    max_iter : int, default=10
        Rounds of clipping at most.
    smooth : float or None, default=RELATIVE_MAP_SMOOTH (0.5)
        Standard deviation in pixels (> 0) of the Gaussian smoothing of the z-scores over the
        last two axes before the second z-score; None: no smoothing. Not applied to ``(n, d)``
        maps (no image plane).

    Returns
    -------
    Tensor of shape (n, ...), float64
        Use with :func:`lowest_pixels` (channels are summed there); not with
        :func:`map_concentration`, whose mass assumes raw maps (free = number of channels).
    """
    m = _check_maps(maps).double()
    ref = _check_maps(reference, "reference").double()
    if ref.shape[1:] != m.shape[1:]:
        raise ValueError(f"reference maps have shape {tuple(ref.shape[1:])} per image but maps have {tuple(m.shape[1:])}; "
                         "compute both with flipd_map on the same model and t0")
    if ref.shape[0] < 2:
        raise ValueError(f"reference needs at least 2 maps to measure a spread; got {ref.shape[0]}")
    if not (isinstance(min_scale, (int, float)) and math.isfinite(min_scale) and min_scale > 0):
        raise ValueError(f"min_scale={min_scale!r} must be a positive float, e.g. 0.1")
    if clip is not None and not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip={clip!r} must be a positive float (robust standard deviations, e.g. 2.0) or None")
    max_iter = check_positive_int(max_iter, "max_iter")
    if smooth is not None and not (isinstance(smooth, (int, float)) and not isinstance(smooth, bool) and math.isfinite(smooth) and smooth > 0):
        raise ValueError(f"smooth={smooth!r} must be a positive float (pixels, e.g. {RELATIVE_MAP_SMOOTH}) or None (no smoothing)")
    center, scale = _robust_center_scale(ref, clip, float(min_scale), max_iter)
    z = (m - center) / scale
    if smooth is None or m.ndim < 3:
        return z
    z_ref = _gaussian_smooth((ref - center) / scale, float(smooth))
    center, scale = _robust_center_scale(z_ref, clip, float(min_scale), max_iter)
    return (_gaussian_smooth(z, float(smooth)) - center) / scale


def _robust_center_scale(ref: torch.Tensor, clip: float | None, min_scale: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate median and floored 1.4826 MAD of ``ref`` (m, ...), with iterated one-sided clipping
    of the values below ``center - clip * scale`` (:func:`relative_map`)."""
    keep = torch.ones_like(ref, dtype=torch.bool)
    for _ in range(max_iter if clip is not None else 1):
        kept = torch.where(keep, ref, torch.nan)
        center = kept.nanmedian(0).values
        scale = _MAD_TO_SD * (kept - center).abs().nanmedian(0).values
        floor = min_scale * float(scale.median())
        if not floor > 0:  # every coordinate pinned alike in the reference: fall back to the mean spread
            floor = min_scale * max(float((ref - center).abs().mean()), 1e-12)
        scale = scale.clamp_min(floor)
        if clip is None:
            break
        new_keep = ref >= center - float(clip) * scale
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return center, scale


def _gaussian_smooth(a: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``a`` (..., h, w) over its last two axes, standard deviation ``sigma``
    pixels, replicated borders, radius ``int(4 sigma + 0.5)`` (``scipy.ndimage.gaussian_filter``
    with ``mode="nearest"`` on those axes)."""
    radius = int(4.0 * sigma + 0.5)
    if radius == 0:
        return a.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=a.dtype, device=a.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    lead, (h, w) = a.shape[:-2], a.shape[-2:]
    x = a.reshape(-1, 1, h, w)
    x = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.reshape(*lead, h, w)


def score_difference_map(
    model: Any,
    baseline: Any,
    x: Any,
    t0: float = FLIPD_T0,
    *,
    batch_size: int = 256,
    extra_args: Mapping[str, Any] | None = None,
    baseline_extra_args: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Per-coordinate squared score difference ``(s_model(x_t, t0) - s_baseline(x_t, t0))^2``.

    The score-difference surrogate of Kim & Lee, "Localizing Memorized Regions in Diffusion
    Models via Coordinate-Wise Curvature Differences" (ICML 2026, arXiv 2605.26756):
    ``Delta s_theta~`` (their Eq. 6) when ``baseline`` is an underfitted (less-trained) checkpoint
    of the same model, ``Delta s_empty`` (their Eq. 5) when ``baseline`` is the same conditional
    model with the unconditional ``baseline_extra_args`` (e.g. the empty prompt). Their code
    (github.com/Gwangho99/mem-curv-diff, ``compute_score_diffs_only``) sums this over the
    latent channels at the last sampling step; here it is evaluated at ``x_t = psi(t0) x`` of
    given images, as FLIPD is, and :func:`to_pixel_map` does the channel sum. High values mean
    memorized (the opposite orientation of :func:`flipd_map`).

    Parameters
    ----------
    model, baseline : score models with ``.sde`` (the same forward process)
    x : array-like of shape (n, ...)
    t0 : float, default=0.05 (:data:`lidmem.defaults.FLIPD_T0`)
    batch_size : int, default=256
    extra_args, baseline_extra_args : mapping or None
        Conditioning of each model (``model(x, t, **extra_args)``); per-point tensors of first
        dimension ``n`` are chunked with ``x``.

    Returns
    -------
    Tensor of shape (n, *x.shape[1:])
    """
    from ..diffusion.score import conditioning_rows

    sde = _get_sde(model)
    _get_sde(baseline)
    x = torch.as_tensor(as_model_dtype(x, model))
    t0 = check_t0(t0, "t0")
    a, b = check_extra_args(extra_args), check_extra_args(baseline_extra_args, "baseline_extra_args")
    psi = float(sde.psi(torch.tensor(t0, dtype=torch.float64)))
    n = x.shape[0]
    out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for sl in chunk_slices(n, int(batch_size)):
            xt = psi * x[sl]
            tt = time_tensor(t0, xt)
            out[sl] = (model(xt, tt, **conditioning_rows(a, n, sl)).double() - baseline(xt, tt, **conditioning_rows(b, n, sl)).double()) ** 2
    return out.to(torch.promote_types(x.dtype, torch.float32))
