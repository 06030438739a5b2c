"""Inputs of the memorization audit read from disk: training images, given samples, duplicate flags.

Images follow lidmem's convention: float arrays ``(n, c, h, w)`` in [-1, 1]. Used by
:func:`lidmem.memorization.audit.audit_memorization` and ``lidmem audit``; every loader raises
ValueError naming the file and the fix before any long work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TrainingImages", "load_training_images", "load_sample_images", "load_duplicate_flags"]


@dataclass
class TrainingImages:
    """Training images ``(n, c, h, w)`` in [-1, 1] with ids, optional planted-duplicate flags."""

    images: np.ndarray
    ids: list[str]
    duplicated: np.ndarray | None = None
    description: dict[str, Any] = field(default_factory=dict)


def load_training_images(source: str | Path) -> TrainingImages:
    """Training images from ``"digits"`` (built-in planted duplicates), a folder of images, or a ``.npy``.

    - ``"digits"``: :func:`lidmem.data.images.load_digits_with_duplicates` (defaults), with flags.
    - a folder: every image file in it (one size; grey or RGB), mapped to [-1, 1]; ids = file stems.
    - ``.npy``: an array ``(n, c, h, w)`` already in [-1, 1]; ids = row numbers.

    Raises ValueError for an empty folder, mixed image sizes, or an unsupported path.
    """
    from .images import check_image_range, load_digits_with_duplicates, read_png_folder
    from .io import load_npy

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
    from .._validation import read_text_file

    for line in read_text_file(path, "text file with one training image id per line").splitlines():
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
    from .images import check_image_range, read_png_folder
    from .io import load_npy

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
