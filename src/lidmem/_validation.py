"""Input validation shared by every public entry point (one boundary, as scikit-learn's
``check_array``). Every error names the argument, quotes the value and suggests a fix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_points",
    "check_t0",
    "check_positive_int",
    "check_probability",
    "check_choice",
    "make_generator",
]


def check_points(
    x: Any,
    name: str = "x",
    *,
    min_samples: int = 1,
    min_ndim: int = 2,
    max_ndim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Validate a batch-first array of points and return it as a floating tensor.

    Parameters
    ----------
    x : array-like of shape (n, ...) 
        Points, batch first. NumPy arrays and lists are converted; tensors keep their device
        unless ``device`` is given.
    name : str
        Argument name used in error messages.
    min_samples : int, default=1
        Minimum number of rows ``n``.
    min_ndim, max_ndim : int
        Allowed tensor ranks (``(n, d)`` is rank 2; images ``(n, c, h, w)`` are rank 4).

    Raises
    ------
    TypeError
        If ``x`` is not array-like.
    ValueError
        If ``x`` has the wrong rank, too few rows, zero features, or non-finite values.
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple)):
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array of shape (n, d); got {type(x).__name__} ({exc})") from exc
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray of shape (n, d); got {type(x).__name__}"
        )
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)):
        raise TypeError(f"{name} must hold real numbers; got dtype {t.dtype}")
    if t.ndim < min_ndim or (max_ndim is not None and t.ndim > max_ndim):
        allowed = f"{min_ndim}" if max_ndim == min_ndim else f"at least {min_ndim}" if max_ndim is None else f"{min_ndim}..{max_ndim}"
        raise ValueError(
            f"{name} must be batch-first with rank {allowed} (e.g. shape (n, d)); got shape {tuple(t.shape)}. "
            "Reshape a single point with x[None] or flatten images with x.reshape(len(x), -1)."
        )
    if t.shape[0] < min_samples:
        raise ValueError(
            f"{name} has {t.shape[0]} sample(s) (shape {tuple(t.shape)}) while a minimum of {min_samples} is required"
        )
    if t.ndim >= 2 and math.prod(t.shape[1:]) == 0:
        raise ValueError(f"{name} has zero features (shape {tuple(t.shape)})")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if dtype is not None:
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or infinite values in {bad} of {t.shape[0]} rows; drop or impute them first")
    return t


def check_t0(t0: Any, name: str = "t0") -> float:
    """Validate a diffusion time in (0, 1] (the SDE time convention of :mod:`lidmem.diffusion`)."""
    try:
        v = float(t0)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a float in (0, 1]; got {t0!r}") from exc
    if not (0.0 < v <= 1.0) or not math.isfinite(v):
        raise ValueError(f"{name}={t0!r} must lie in (0, 1]; try {name}=0.01")
    return v


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Validate an integer ``>= minimum`` (booleans are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return int(value)


def check_probability(value: Any, name: str, *, low: float = 0.0, high: float = 1.0, closed: bool = True) -> float:
    """Validate a float in ``[low, high]`` (or ``(low, high)`` when ``closed=False``)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a float; got {value!r}") from exc
    ok = (low <= v <= high) if closed else (low < v < high)
    if not ok or not math.isfinite(v):
        br = ("[", "]") if closed else ("(", ")")
        raise ValueError(f"{name}={value!r} must lie in {br[0]}{low}, {high}{br[1]}")
    return v


def check_choice(value: Any, name: str, options: tuple[str, ...] | list[str]) -> str:
    """Validate that ``value`` is one of ``options``; the error lists the valid names."""
    if value not in options:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, options))}")
    return value


def make_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator:
    """Map ``None``/int/``torch.Generator`` to a ``torch.Generator`` (scikit-learn's
    ``check_random_state`` for torch). ``None`` draws a fresh non-deterministic seed."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, a torch.Generator or None; got {seed!r}")
        g.manual_seed(int(seed))
    return g
