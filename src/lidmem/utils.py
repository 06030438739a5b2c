"""Small helpers shared across lidmem: broadcasting, chunking and progress bars."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from tqdm.auto import tqdm

__all__ = ["append_dims", "flatten_batch", "chunk_slices", "progress", "resolve_device"]

T = TypeVar("T")


def append_dims(x: torch.Tensor, target_ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``target_ndim`` dimensions.

    Broadcasts a per-sample scalar of shape ``(n,)`` against a batch of shape ``(n, ...)``
    without hard-coding the data's rank.

    Raises
    ------
    ValueError
        If ``x`` already has more dimensions than ``target_ndim``.
    """
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_ndim is {target_ndim}, which is less")
    return x[(...,) + (None,) * missing]


def flatten_batch(x: torch.Tensor) -> torch.Tensor:
    """Flatten ``(n, ...)`` to ``(n, d)`` with ``d = prod(shape[1:])``."""
    return x.reshape(x.shape[0], -1)


def chunk_slices(n: int, chunk_size: int | None) -> Iterator[slice]:
    """Yield slices ``[i, i + chunk_size)`` covering ``range(n)``; one slice when ``chunk_size`` is None."""
    if chunk_size is None or chunk_size >= n:
        yield slice(0, n)
        return
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str | None = None, disable: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar.

    ``disable=None`` (the default) shows the bar only on an interactive terminal, as tqdm does;
    ``True`` hides it, ``False`` forces it.
    """
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False)


def resolve_device(device: str | torch.device | None, module: torch.nn.Module | None = None) -> torch.device:
    """Return ``device`` or, when None, the device of ``module``'s first parameter (CPU if none)."""
    if device is not None:
        return torch.device(device)
    if module is not None:
        for p in module.parameters():
            return p.device
    return torch.device("cpu")
