"""Reading data sets from disk: arrays (.npy, .csv, .parquet) and folders of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "load_points", "load_image_folder", "list_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder`` (by file name, for deterministic order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"folder {folder} contains no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image_folder(folder: str | Path, *, mode: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Load every image in ``folder`` as float32 in [-1, 1], shape ``(n, c, h, w)``.

    lidmem's image convention (README, Conventions): 8-bit value ``v`` maps to ``2 v / 255 - 1``
    (-1 black, +1 white), the range the shipped models were trained on. (It used to return
    [0, 1]; :func:`lidmem.data.images.to_unit_range` maps back.)

    ``mode`` converts with PIL (``"L"`` grey, ``"RGB"``); by default the first image's mode
    decides (grey stays grey, everything else becomes RGB). All images must share one size;
    otherwise a ValueError names two files of different sizes.

    Returns
    -------
    images : ndarray of shape (n, c, h, w)
    names : list of str
        File names in the same order.
    """
    from PIL import Image

    files = list_images(folder)
    arrays = []
    first_size = None
    for f in files:
        with Image.open(f) as im:
            if mode is None:
                mode = "L" if im.mode in ("L", "1", "I", "I;16", "F") else "RGB"
            im = im.convert(mode)
            if first_size is None:
                first_size = (im.size, f.name)
            elif im.size != first_size[0]:
                raise ValueError(
                    f"images in {folder} have mixed sizes: {first_size[1]} is {first_size[0][0]}x{first_size[0][1]} "
                    f"but {f.name} is {im.size[0]}x{im.size[1]}; resize them to one size first"
                )
            a = np.asarray(im, dtype=np.float32) * (2.0 / 255.0) - 1.0
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(arrays), [f.name for f in files]


def load_points(path: str | Path) -> np.ndarray:
    """Load a data set as float array of shape ``(n, d)`` (images are flattened).

    Supports ``.npy`` (any rank, batch first), ``.csv`` (numeric columns; a header row is
    allowed), ``.parquet`` (numeric columns) and a folder of images.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data path {path} does not exist")
    if path.is_dir():
        imgs, _ = load_image_folder(path)
        return imgs.reshape(len(imgs), -1)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError(f"data set {path} is empty (shape {arr.shape})")
        if arr.ndim == 1:
            arr = arr[:, None]
        arr = arr.reshape(len(arr), -1)
    elif suffix in (".csv", ".parquet"):
        import pandas as pd

        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        num = df.select_dtypes(include="number")
        if num.shape[1] == 0:
            raise ValueError(f"{path} has no numeric columns")
        arr = num.to_numpy()
    else:
        raise ValueError(f"unsupported data file {path.name!r}; use .npy, .csv, .parquet or a folder of images")
    if arr.shape[0] == 0:
        raise ValueError(f"data set {path} is empty")
    return arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
