"""Reading data sets from disk: arrays (.npy, .csv, .parquet) and folders of images."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import ArgumentError

__all__ = [
    "IMAGE_SUFFIXES", "CAPTION_COLUMNS", "load_points", "load_npy", "load_image_folder", "list_images", "open_image",
    "convert_image", "decode_image", "image_mode", "find_caption_column",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Caption column names, in order of preference, matched case-insensitively by
#: :func:`find_caption_column` (``lidmem score``'s tables and ``lidmem t2i``'s prompt / caption tables).
CAPTION_COLUMNS: tuple[str, ...] = ("caption", "prompt", "text", "captions", "prompts")
#: PIL modes decoded as one grey channel; every other mode becomes RGB.
GREY_MODES: tuple[str, ...] = ("L", "1", "I", "I;16", "F", "LA")


def find_caption_column(columns: Sequence[Any], column: str | None = None, where: str = "table", *, required: bool = True) -> Any:
    """The caption column among ``columns``: ``column`` (exact, else case-insensitive) or the first
    of :data:`CAPTION_COLUMNS` present (case-insensitive). The one rule of ``lidmem score`` and
    ``lidmem t2i``: a table with both ``text`` and ``prompt`` columns reads ``prompt``.

    Returns the column as spelled in ``columns``; None when none is found and ``required`` is False.
    Raises ValueError naming ``where`` and its columns for an unknown ``column`` or, when
    ``required``, a table without a caption column.
    """
    cols = list(columns)
    lower = {str(c).strip().lower(): c for c in reversed(cols)}  # first spelling wins
    names = [str(c) for c in cols]
    if column is not None:
        if column in cols:
            return column
        if column.lower() in lower:
            return lower[column.lower()]
        raise ValueError(f"column={column!r} is not in {where}; its columns are {names}")
    found = next((lower[c] for c in CAPTION_COLUMNS if c in lower), None)
    if found is None and required:
        raise ValueError(f"{where} has no caption column (looked for {', '.join(CAPTION_COLUMNS)}); its columns are {names}; pass column=")
    return found


def image_mode(raw: bytes | str | Path, name: str | None = None) -> str:
    """``"L"`` for a grey image (:data:`GREY_MODES`), else ``"RGB"``; reads the header only."""
    label = name if name is not None else ("image bytes" if isinstance(raw, (bytes, bytearray, memoryview)) else str(raw))
    src = io.BytesIO(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    with open_image(src, label) as im:
        return "L" if im.mode in GREY_MODES else "RGB"


def decode_image(raw: bytes | str | Path, mode: str | None = None, name: str | None = None) -> np.ndarray:
    """Decode one image (bytes or a path) to float32 ``(c, h, w)`` in [0, 1] in PIL ``mode``
    (``"L"`` or ``"RGB"``; None: :func:`image_mode`). The one decoder of ``lidmem score`` and
    ``lidmem t2i``; map to lidmem's [-1, 1] with ``2 x - 1``.

    A file that is not an image or is truncated raises ValueError naming ``name`` (default:
    the path, or "image bytes").
    """
    label = name if name is not None else ("image bytes" if isinstance(raw, (bytes, bytearray, memoryview)) else str(raw))
    src = io.BytesIO(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    with open_image(src, label) as im:
        a = np.asarray(convert_image(im, mode or ("L" if im.mode in GREY_MODES else "RGB"), label), dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def open_image(src: str | Path | Any, name: str | None = None) -> Any:
    """Open an image with PIL (header only; pixels are read by :func:`convert_image`).

    ``src`` is a path or a binary file object; ``name`` (default: the path) names it in errors.
    A file that is not an image raises ValueError naming it, never PIL's own traceback.
    """
    from PIL import Image, UnidentifiedImageError

    label = name if name is not None else str(src)
    try:
        return Image.open(src)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{label} is not a readable image ({_first_line(exc)}); fix or remove it") from None


def convert_image(im: Any, mode: str, name: str | Path) -> Any:
    """``im.convert(mode)`` (decodes the pixels); a truncated or corrupt file raises ValueError naming it."""
    try:
        return im.convert(mode)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{name} is a corrupt or truncated image ({_first_line(exc)}); fix or remove it") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_npy(path: str | Path, what: str = "data set") -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` with errors that name the file (empty, truncated,
    not a .npy, object arrays that would need pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is an empty file (0 bytes)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{what} {path} is not a readable .npy array ({_first_line(exc)})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{what} {path} is an .npz archive, not one .npy array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{what} {path} holds dtype {arr.dtype}; a numeric array is needed")
    return arr


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
    files = list_images(folder)
    arrays = []
    first_size = None
    for f in files:
        with open_image(f) as im:
            if mode is None:
                mode = "L" if im.mode in ("L", "1", "I", "I;16", "F") else "RGB"
            im = convert_image(im, mode, f)
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


_DTYPE_KINDS = {"c": "complex numbers", "U": "text", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans", "V": "records"}


def load_points(path: str | Path, *, columns: list[str] | None = None) -> np.ndarray:
    """Load a data set as float array of shape ``(n, d)`` (images are flattened).

    Supports ``.npy`` (any rank, batch first), ``.csv`` (a header row is allowed),
    ``.parquet`` and a folder of images. A table must hold only numeric columns, or
    ``columns`` must name the ones to use: a non-numeric column is never dropped silently
    (that would compute LID in fewer dimensions than the data has). NaN or infinite values are
    refused with the number of rows holding them.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data path {path} does not exist")
    if path.is_dir():
        if columns is not None:
            raise ValueError(f"columns apply to .csv and .parquet tables, not to the folder {path}")
        imgs, _ = load_image_folder(path)
        return imgs.reshape(len(imgs), -1)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        try:
            df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text (byte at offset {exc.start}); save the table as UTF-8 CSV") from None
        except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{path} is not a readable {suffix[1:]} table ({_first_line(exc)})") from None
        if columns is not None:
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise ArgumentError(f"columns {missing} are not in {path}; its columns: {', '.join(map(str, df.columns))}", argument="columns")
            df = df[list(columns)]
        non_numeric = [str(c) for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
        if non_numeric:
            raise ValueError(
                f"{path} has non-numeric columns {non_numeric[:5]}{' ...' if len(non_numeric) > 5 else ''}; "
                "choose the numeric ones with --columns a,b,c (columns=[...]) or clean the table"
            )
        arr = df.to_numpy()
        if arr.shape[1] == 0:
            raise ValueError(f"{path} has no columns")
    elif columns is not None:
        raise ValueError(f"columns apply to .csv and .parquet tables, not to {path.name}")
    elif suffix == ".npy":
        arr = load_npy(path)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError(f"data set {path} is empty (shape {arr.shape})")
        if arr.ndim == 1:
            arr = arr[:, None]
        arr = arr.reshape(len(arr), -1)
    else:
        raise ValueError(f"unsupported data file {path.name!r}; use .npy, .csv, .parquet or a folder of images")
    if arr.shape[0] == 0:
        raise ValueError(f"data set {path} is empty")
    if arr.dtype.kind not in "biuf":  # complex parts would be dropped with a warning, strings would fail later
        raise ValueError(f"data set {path} holds {arr.dtype} values ({_DTYPE_KINDS.get(arr.dtype.kind, 'not real numbers')}); "
                         "lidmem needs real numbers: store e.g. the real and imaginary parts as separate columns")
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
    bad = ~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
    if bad.any():
        raise ValueError(f"data set {path} has NaN or infinite values in {int(bad.sum())} of {len(arr)} rows (first: row {int(np.argmax(bad))}); drop or impute them first")
    return arr
