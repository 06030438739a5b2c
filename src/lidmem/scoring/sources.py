"""Data sources read as deterministic, ordered row ranges (the unit of resumable scoring).

Every source exposes its rows in one fixed global order (row ``0 .. n-1``), so that a shard
of rows ``[start, stop)`` means the same images on every machine, in every run:

=============== ================================================================================
kind            what it reads (global order)
=============== ================================================================================
``"folder"``    image files directly inside a folder, sorted by file name
                (:func:`lidmem.data.io.list_images`); id = file name
``"list"``      a text file with one image path per line (relative paths are relative to the
                list file's folder; blank lines and lines starting with ``#`` are skipped);
                id = the line as written
``"parquet"``   one ``.parquet`` file, a folder of them or a glob (files sorted by name, rows in
                file order); schema below
``"webdataset"`` WebDataset shards: one uncompressed ``.tar``, a folder of them or a glob, read
                with the standard library's :mod:`tarfile`; a sample is the group of members
                sharing a key (the path up to the first ``.`` of the base name), its image is
                the member with an image extension; id = the key
``"hf"``        a Hugging Face ``datasets`` data set saved with ``Dataset.save_to_disk``: read
                with ``datasets.load_from_disk`` when ``datasets`` is installed, otherwise
                straight from its Arrow files (``state.json`` lists them) with pyarrow
=============== ================================================================================

Parquet / Arrow schema (``"parquet"`` and ``"hf"``)
---------------------------------------------------
- image column: ``binary`` / ``large_binary`` holding encoded image bytes (PNG, JPEG, ...), or
  a ``struct`` with a ``bytes`` field (the Hugging Face ``Image`` feature); or
- array column: ``list`` / ``fixed_size_list`` of numbers, one flattened sample per row
  (reshaped to ``shape`` when given, else kept as a vector ``(d,)``).
- ``column=None`` picks the first image column, else the first numeric list column.
- ids: ``id_column`` when given, else a column named ``id``, ``key`` or ``__key__`` if one
  exists, else the global row index.
- captions (for ``cfg_norm``): ``caption_column`` when given, else a string column named
  in :data:`lidmem.data.io.CAPTION_COLUMNS` (``caption``, ``prompt``, ``text``, ...; the first
  present, case-insensitive; the rule of ``lidmem t2i`` too) if one exists. WebDataset samples take theirs from a
  ``.txt`` (or ``.caption`` / ``.text``) member with the image's key.

Images are returned as float32 in [0, 1] with shape ``(n, c, h, w)`` (``c`` = 1 for grey,
3 for RGB). ``mode=None`` takes the mode of the data set's first image (grey stays grey,
everything else becomes RGB), decided once per data set so every shard agrees.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import ArgumentError, check_choice, check_positive_int
from ..data.io import IMAGE_SUFFIXES, decode_image, find_caption_column, list_images
from ..data.io import image_mode as _image_mode

__all__ = [
    "SOURCE_KINDS",
    "Shard",
    "Rows",
    "DataSource",
    "ImageFolderSource",
    "ImageListSource",
    "ParquetSource",
    "WebDatasetSource",
    "HFDiskSource",
    "open_source",
    "plan_shards",
    "decode_image",
]

SOURCE_KINDS = ("folder", "list", "parquet", "webdataset", "hf")
_ID_COLUMNS = ("id", "key", "__key__")
_CAPTION_EXTS = ("txt", "caption", "text")


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of a source, number ``index`` (shards are numbered in row order)."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Rows:
    """A block of rows read from a source.

    Attributes
    ----------
    rows : ndarray of shape (n,), int64
        Global row indices.
    ids : list of str
        Sample identifiers (file name, key, id column or the row index).
    data : ndarray of shape (n, ...), float32
        Images ``(n, c, h, w)`` in [0, 1], or vectors ``(n, d)`` / ``(n, *shape)``.
    is_image : bool
        True when ``data`` came from encoded images.
    captions : list of str or None
        One caption per row when the source has them (for text-conditional metrics).
    bad : list of (row, id, reason)
        Rows whose image could not be decoded, when the source skips them
        (``DataSource.skip_bad_images``); their ``data`` is a zero placeholder.
    """

    rows: np.ndarray
    ids: list[str]
    data: np.ndarray
    is_image: bool
    captions: list[str] | None = None
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def plan_shards(n_rows: int, shard_size: int) -> list[Shard]:
    """Split ``range(n_rows)`` into consecutive shards of ``shard_size`` rows (the last may be shorter)."""
    shard_size = check_positive_int(shard_size, "shard_size")
    return [Shard(i, s, min(s + shard_size, n_rows)) for i, s in enumerate(range(0, n_rows, shard_size))]


def _stack_images(
    raws: Sequence[bytes | str | Path | None], ids: Sequence[str], mode: str, where: str, rows: Sequence[int] | None = None,
    *, skip: bool = False,
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Decode and stack images. With ``skip``, an undecodable image (or an empty cell) becomes a
    zero placeholder of the block's image shape and is returned in ``bad`` as ``(row, id, reason)``."""
    rows = list(rows) if rows is not None else list(range(len(raws)))

    def label(i: int) -> str:
        r = raws[i]
        if isinstance(r, (str, Path)):
            return str(r)
        return f"image {ids[i]!r} (row {rows[i]}) of {where}"

    arrays: list[np.ndarray | None] = []
    bad: list[tuple[int, str, str]] = []
    for i, r in enumerate(raws):
        try:
            if r is None:
                raise ValueError(f"{label(i)} is an empty cell")
            arrays.append(decode_image(r, mode, label(i)))
        except ValueError as exc:
            if not skip:
                raise
            arrays.append(None)
            bad.append((int(rows[i]), str(ids[i]), str(exc)))
    good = [(a, name) for a, name in zip(arrays, ids) if a is not None]
    if good:
        first, first_id = good[0][0].shape, good[0][1]
    else:
        raise ValueError(
            f"none of the {len(raws)} images of rows [{rows[0]}, {rows[-1] + 1}) of {where} can be decoded "
            f"(first: {bad[0][2]}); fix them, or lower the batch size so a block holds a readable image"
        )
    for a, name in good:
        if a.shape != first:
            raise ValueError(
                f"images in {where} have mixed sizes: {first_id} is {first[2]}x{first[1]} but {name} is "
                f"{a.shape[2]}x{a.shape[1]}; resize them to one size first"
            )
    return np.stack([a if a is not None else np.zeros(first, np.float32) for a in arrays]), bad


def _json_file(path: Path) -> dict:
    """A JSON object file; a broken one is a ValueError naming the file."""
    from .._validation import parse_json_text

    value = parse_json_text(path.read_bytes(), str(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def _fingerprint(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


class DataSource(ABC):
    """An ordered, random-access collection of samples (see the module docstring).

    Subclasses implement ``__len__``, :meth:`read` and :meth:`describe`; sources hold only an
    index (paths, offsets, row counts), never the decoded data, so memory stays bounded by the
    rows requested.
    """

    kind: str = ""
    #: skip rows whose image cannot be decoded (recorded in ``Rows.bad``) instead of raising
    skip_bad_images: bool = False

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, start: int, stop: int) -> Rows:
        """Rows ``[start, stop)`` in global order."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able description: kind, path, number of rows and a fingerprint of the files."""

    def shard_fingerprint(self, start: int, stop: int) -> str:
        """Fingerprint of the stored data behind rows ``[start, stop)`` (file names and sizes).

        Recorded in each finished shard and compared on resume, so that replacing one file (say
        a corrupt image) only affects the shards that read it. The default covers the whole
        source; sources whose files map to rows override it.
        """
        desc = self.describe()
        if "content" in desc or "fingerprint" in desc:
            return str(desc.get("content", desc.get("fingerprint")))
        # a user-defined source that describes itself without a fingerprint: its whole description
        import json

        return _fingerprint([json.dumps(desc, sort_keys=True, default=str)])

    def shards(self, shard_size: int) -> list[Shard]:
        """The source's rows split into shards of ``shard_size`` (:func:`plan_shards`)."""
        return plan_shards(len(self), shard_size)

    def _check_range(self, start: int, stop: int) -> None:
        n = len(self)
        if not (0 <= start <= stop <= n):
            raise ValueError(f"row range [{start}, {stop}) is outside the source's {n} rows")


class _ImagePathSource(DataSource):
    """Shared code of the folder and list-file sources: a list of image paths."""

    def __init__(self, paths: list[Path], ids: list[str], where: str, mode: str | None) -> None:
        if not paths:
            raise ValueError(f"{where} lists no images")
        self._paths = paths
        self._ids = ids
        self._where = where
        if mode is None:
            try:
                mode = _image_mode(paths[0])
            except ValueError as exc:
                raise ValueError(f"{exc} (the first image decides the colour mode; mode='L' or 'RGB', --mode, skips that)") from None
        self.mode = check_choice(mode, "mode", ("L", "RGB"))

    def __len__(self) -> int:
        return len(self._paths)

    def read(self, start: int, stop: int) -> Rows:
        self._check_range(start, stop)
        ids = self._ids[start:stop]
        data, bad = _stack_images(self._paths[start:stop], ids, self.mode, self._where, range(start, stop),
                                  skip=self.skip_bad_images)
        return Rows(np.arange(start, stop, dtype=np.int64), list(ids), data, True, bad=bad)

    def describe(self) -> dict[str, Any]:
        # the layout (ids in order); file contents are fingerprinted per shard (shard_fingerprint)
        return {"kind": self.kind, "path": self._where, "n_rows": len(self), "mode": self.mode, "fingerprint": _fingerprint(self._ids)}

    def shard_fingerprint(self, start: int, stop: int) -> str:
        return _fingerprint([f"{i}\t{p.stat().st_size}" for p, i in zip(self._paths[start:stop], self._ids[start:stop])])


class ImageFolderSource(_ImagePathSource):
    """Image files directly inside ``folder``, sorted by name; ids are the file names."""

    kind = "folder"

    def __init__(self, folder: str | Path, *, mode: str | None = None) -> None:
        files = list_images(folder)
        super().__init__(files, [f.name for f in files], str(Path(folder).resolve()), mode)


class ImageListSource(_ImagePathSource):
    """Images listed one per line in a text file; relative paths resolve against its folder."""

    kind = "list"

    def __init__(self, list_file: str | Path, *, mode: str | None = None) -> None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise ValueError(f"list file {list_file} does not exist")
        ids, paths = [], []
        from .._validation import read_text_file

        for line in read_text_file(list_file, "list file with one image path per line").splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            p = Path(entry)
            p = p if p.is_absolute() else list_file.parent / p
            if not p.is_file():
                raise ValueError(f"{list_file} lists {entry!r}, which is not a file ({p})")
            ids.append(entry)
            paths.append(p)
        super().__init__(paths, ids, str(list_file.resolve()), mode)


def _expand_files(path: str | Path, suffix: str, what: str) -> list[Path]:
    s = str(path)
    if any(ch in s for ch in "*?["):
        files = sorted(Path(p) for p in _glob.glob(s))
    elif Path(s).is_dir():
        files = sorted(p for p in Path(s).iterdir() if p.is_file() and p.name.endswith(suffix))
    elif Path(s).is_file():
        files = [Path(s)]
    else:
        raise ValueError(f"{what} path {s!r} does not exist")
    if not files:
        raise ValueError(f"no {suffix} files found at {s!r}")
    return files


class _ArrowTableSource(DataSource):
    """Shared decoding of Arrow tables (Parquet files, Hugging Face Arrow files)."""

    def _setup_columns(
        self, schema: Any, column: str | None, id_column: str | None, shape: Sequence[int] | None, where: str, caption_column: str | None = None
    ) -> None:
        import pyarrow as pa

        names = list(schema.names)

        def is_image(field: Any) -> bool:
            t = field.type
            if pa.types.is_binary(t) or pa.types.is_large_binary(t):
                return True
            return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0

        def is_array(field: Any) -> bool:
            t = field.type
            return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and (
                pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
            )

        if column is None:
            cands = [f.name for f in schema if is_image(f)] or [f.name for f in schema if is_array(f)]
            if not cands:
                raise ValueError(
                    f"{where} has no image column (binary, or struct with 'bytes') and no numeric list column; "
                    f"columns: {', '.join(f'{f.name}: {f.type}' for f in schema)}"
                )
            column = cands[0]
        elif column not in names:
            raise ValueError(f"column={column!r} is not in {where}; columns: {', '.join(names)}")
        field = schema.field(column)
        if is_image(field):
            self._is_image = True
        elif is_array(field):
            self._is_image = False
        else:
            raise ValueError(f"column {column!r} of {where} has type {field.type}; it must hold image bytes or a list of numbers")
        if id_column is None:
            id_column = next((c for c in _ID_COLUMNS if c in names), None)
        elif id_column not in names:
            raise ValueError(f"id_column={id_column!r} is not in {where}; columns: {', '.join(names)}")
        if caption_column is None:
            text_names = [c for c in names if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)]
            caption_column = find_caption_column(text_names, None, where, required=False)
        elif caption_column not in names:
            raise ValueError(f"caption_column={caption_column!r} is not in {where}; columns: {', '.join(names)}")
        self.column = column
        self.id_column = id_column
        self.caption_column = caption_column
        self.shape = tuple(int(s) for s in shape) if shape is not None else None

    @staticmethod
    def _image_bytes(col: Any) -> list[bytes]:
        import pyarrow as pa

        if pa.types.is_struct(col.type):
            col = col.combine_chunks().field("bytes") if isinstance(col, pa.ChunkedArray) else col.field("bytes")
        return [b for b in col.to_pylist()]

    def _decode(self, table: Any, start: int, where: str) -> Rows:
        n = table.num_rows
        rows = np.arange(start, start + n, dtype=np.int64)
        if self.id_column is not None:
            ids = [str(v) for v in table.column(self.id_column).to_pylist()]
        else:
            ids = [str(r) for r in rows]
        captions = [str(c) for c in table.column(self.caption_column).to_pylist()] if self.caption_column else None
        col = table.column(self.column)
        bad: list[tuple[int, str, str]] = []
        if self._is_image:
            raws = self._image_bytes(col)
            if not self.skip_bad_images and any(b is None for b in raws):
                raise ValueError(f"{where} has empty image cells in column {self.column!r} (rows {start}..{start + n - 1})")
            data, bad = _stack_images(raws, ids, self.mode, where, rows.tolist(), skip=self.skip_bad_images)
        else:
            values = col.to_pylist()
            try:
                data = np.asarray(values, dtype=np.float32)
            except ValueError as exc:
                raise ValueError(f"column {self.column!r} of {where} holds lists of different lengths; every row must be one flattened sample") from exc
            if self.shape is not None:
                if int(np.prod(self.shape)) != data.shape[1]:
                    raise ValueError(f"shape={self.shape} has {int(np.prod(self.shape))} values but rows of {self.column!r} have {data.shape[1]}")
                data = data.reshape(n, *self.shape)
        return Rows(rows, ids, data, self._is_image, captions, bad)


class ParquetSource(_ArrowTableSource):
    """Parquet shards (one file, a folder or a glob); rows in file-name order, then file order.

    Only the row groups overlapping a requested range are read, so memory is bounded by the
    row-group size (write Parquet with row groups of a few thousand rows).
    """

    kind = "parquet"

    def __init__(
        self,
        path: str | Path,
        *,
        column: str | None = None,
        id_column: str | None = None,
        shape: Sequence[int] | None = None,
        mode: str | None = None,
        caption_column: str | None = None,
    ) -> None:
        import pyarrow.parquet as pq

        self._where = str(path)
        self._files = _expand_files(path, ".parquet", "parquet")
        self._meta = [pq.ParquetFile(f).metadata for f in self._files]
        schema = pq.ParquetFile(self._files[0]).schema_arrow
        self._setup_columns(schema, column, id_column, shape, self._where, caption_column)
        # (file index, row group index, global start, n rows) for every row group
        self._groups: list[tuple[int, int, int, int]] = []
        offset = 0
        for fi, meta in enumerate(self._meta):
            for gi in range(meta.num_row_groups):
                nr = meta.row_group(gi).num_rows
                self._groups.append((fi, gi, offset, nr))
                offset += nr
        self._n = offset
        if self._n == 0:
            raise ValueError(f"parquet data {self._where} has no rows")
        self.mode = check_choice(mode, "mode", ("L", "RGB")) if mode is not None else None
        if self._is_image and self.mode is None:
            self.mode = _image_mode(self._image_bytes(self._read_table(0, 1).column(self.column))[0], f"the image of row 0 of {self._where}")

    def __len__(self) -> int:
        return self._n

    def _read_table(self, start: int, stop: int) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = [self.column] + [c for c in (self.id_column, self.caption_column) if c]
        parts = []
        for fi, gi, g0, nr in self._groups:
            if g0 + nr <= start or g0 >= stop:
                continue
            t = pq.ParquetFile(self._files[fi]).read_row_group(gi, columns=cols)
            lo, hi = max(start, g0) - g0, min(stop, g0 + nr) - g0
            parts.append(t.slice(lo, hi - lo))
        return pa.concat_tables(parts)

    def read(self, start: int, stop: int) -> Rows:
        self._check_range(start, stop)
        return self._decode(self._read_table(start, stop), start, self._where)

    def shard_fingerprint(self, start: int, stop: int) -> str:
        files = sorted({fi for fi, _, g0, nr in self._groups if g0 < stop and g0 + nr > start})
        return _fingerprint([f"{self._files[fi].name}\t{self._files[fi].stat().st_size}" for fi in files])

    def describe(self) -> dict[str, Any]:
        lines = [f"{f.name}\t{m.num_rows}" for f, m in zip(self._files, self._meta)]
        return {
            "kind": self.kind,
            "path": str(Path(self._where).resolve()) if "*" not in self._where else self._where,
            "n_rows": self._n,
            "column": self.column,
            "id_column": self.id_column,
            "caption_column": self.caption_column,
            "shape": list(self.shape) if self.shape else None,
            "mode": self.mode,
            "fingerprint": _fingerprint(lines),
        }


class WebDatasetSource(DataSource):
    """WebDataset ``.tar`` shards read with :mod:`tarfile` (no extra dependency).

    Opening indexes the tar headers (name, data offset, size) once; reading seeks straight to
    the image bytes. Only uncompressed tars are supported (``.tar.gz`` cannot be seeked).
    """

    kind = "webdataset"

    def __init__(self, path: str | Path, *, mode: str | None = None) -> None:
        self._where = str(path)
        self._files = _expand_files(path, ".tar", "webdataset")
        self._index: list[tuple[int, int, int, str]] = []  # (file, offset, size, key)
        self._captions: dict[str, tuple[int, int, int]] = {}  # key -> (file, offset, size) of its .txt
        image_ext = {s.lstrip(".") for s in IMAGE_SUFFIXES}
        for fi, f in enumerate(self._files):
            try:
                tf = tarfile.open(f, mode="r:")
            except tarfile.ReadError as exc:
                raise ValueError(f"{f} is not an uncompressed tar file ({exc}); decompress it or repack it with `tar cf`") from exc
            with tf:
                seen: set[str] = set()
                for m in tf:
                    if not m.isfile():
                        continue
                    d, _, base = m.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    key = f"{d}/{stem}" if d else stem
                    if dot and ext.lower() in _CAPTION_EXTS:
                        self._captions.setdefault(key, (fi, m.offset_data, m.size))
                        continue
                    if not dot or ext.lower() not in image_ext and ext.lower().rsplit(".", 1)[-1] not in image_ext:
                        continue
                    if key in seen:
                        raise ValueError(f"{f} holds two images for key {key!r}; one image per sample is supported")
                    seen.add(key)
                    self._index.append((fi, m.offset_data, m.size, key))
        if not self._index:
            raise ValueError(f"no images found in the tar shards at {self._where!r} (looked for {', '.join(sorted(image_ext))})")
        self.mode = check_choice(mode, "mode", ("L", "RGB")) if mode is not None else _image_mode(self._raw(0), f"image {self._index[0][3]!r} of {self._where}")

    def __len__(self) -> int:
        return len(self._index)

    def _raw(self, i: int) -> bytes:
        fi, off, size, _ = self._index[i]
        with open(self._files[fi], "rb") as fh:
            fh.seek(off)
            return fh.read(size)

    def read(self, start: int, stop: int) -> Rows:
        self._check_range(start, stop)
        ids = [k for _, _, _, k in self._index[start:stop]]
        raws = []
        handles: dict[int, Any] = {}
        try:
            for fi, off, size, _ in self._index[start:stop]:
                fh = handles.get(fi) or handles.setdefault(fi, open(self._files[fi], "rb"))
                fh.seek(off)
                raws.append(fh.read(size))
        finally:
            for fh in handles.values():
                fh.close()
        data, bad = _stack_images(raws, ids, self.mode, self._where, list(range(start, stop)), skip=self.skip_bad_images)
        captions = None
        if self._captions:
            missing = [k for k in ids if k not in self._captions]
            if missing:
                raise ValueError(f"samples {missing[:3]} in {self._where} have no .txt caption while others do")
            captions = []
            for k in ids:
                fi, off, size = self._captions[k]
                with open(self._files[fi], "rb") as fh:
                    fh.seek(off)
                    raw = fh.read(size)
                try:
                    captions.append(raw.decode("utf-8").strip())
                except UnicodeDecodeError:
                    raise ValueError(f"{self._files[fi]}: the caption of sample {k!r} is not UTF-8 text") from None
        return Rows(np.arange(start, stop, dtype=np.int64), ids, data, True, captions, bad)

    def shard_fingerprint(self, start: int, stop: int) -> str:
        lines = [f"{key}\t{size}\t{self._captions.get(key, (0, 0, -1))[2]}" for _, _, size, key in self._index[start:stop]]
        return _fingerprint(lines)

    def describe(self) -> dict[str, Any]:
        lines = [f"{f.name}" for f in self._files] + [key for _, _, _, key in self._index]
        return {
            "kind": self.kind,
            "path": str(Path(self._where).resolve()) if "*" not in self._where else self._where,
            "n_rows": len(self),
            "mode": self.mode,
            "fingerprint": _fingerprint(lines),
        }


class HFDiskSource(_ArrowTableSource):
    """A Hugging Face ``datasets.Dataset`` saved with ``save_to_disk``.

    Uses ``datasets.load_from_disk`` when the ``datasets`` package is installed; without it the
    same folder is read with pyarrow alone (``state.json`` lists the Arrow stream files, which
    are memory-mapped). Pass a split's folder, not a ``DatasetDict``'s root.
    """

    kind = "hf"

    def __init__(
        self,
        path: str | Path,
        *,
        column: str | None = None,
        id_column: str | None = None,
        shape: Sequence[int] | None = None,
        mode: str | None = None,
        caption_column: str | None = None,
    ) -> None:
        root = Path(path)
        if (root / "dataset_dict.json").is_file():
            splits = _json_file(root / "dataset_dict.json").get("splits", [])
            raise ValueError(f"{root} holds a DatasetDict with splits {splits}; pass one split's folder, e.g. {root / (splits[0] if splits else 'train')}")
        if not (root / "state.json").is_file():
            raise ValueError(f"{root} is not a data set saved with datasets' save_to_disk (no state.json)")
        self._root = root
        try:
            import datasets  # noqa: F401

            self.backend = "datasets"
        except ImportError:
            self.backend = "pyarrow"
        if self.backend == "datasets":
            import datasets

            ds = datasets.load_from_disk(str(root))
            if not isinstance(ds, datasets.Dataset):
                raise ValueError(f"{root} loads as {type(ds).__name__}; pass one split's folder")
            self._ds = ds.with_format("arrow")
            self._n = len(ds)
            schema = ds.data.schema
        else:
            import pyarrow as pa

            state = _json_file(root / "state.json")
            files = [root / f["filename"] for f in state.get("_data_files", [])]
            if not files:
                raise ValueError(f"{root}/state.json lists no data files")
            if state.get("_indices_data_files"):
                raise ValueError(
                    f"{root} stores an indices mapping (a select/shuffle not flattened); install `datasets` to read it, "
                    "or save it again after ds.flatten_indices()"
                )
            self._tables = [pa.ipc.open_stream(pa.memory_map(str(f), "r")).read_all() for f in files]
            self._starts = np.cumsum([0] + [t.num_rows for t in self._tables])
            self._n = int(self._starts[-1])
            schema = self._tables[0].schema
        if self._n == 0:
            raise ValueError(f"data set {root} has no rows")
        self._setup_columns(schema, column, id_column, shape, str(root), caption_column)
        self.mode = check_choice(mode, "mode", ("L", "RGB")) if mode is not None else None
        if self._is_image and self.mode is None:
            self.mode = _image_mode(self._image_bytes(self._table(0, 1).column(self.column))[0], f"the image of row 0 of {root}")

    def __len__(self) -> int:
        return self._n

    def _table(self, start: int, stop: int) -> Any:
        import pyarrow as pa

        if self.backend == "datasets":
            return self._ds[start:stop]
        parts = []
        for t, t0 in zip(self._tables, self._starts[:-1]):
            t0 = int(t0)
            if t0 + t.num_rows <= start or t0 >= stop:
                continue
            lo, hi = max(start, t0) - t0, min(stop, t0 + t.num_rows) - t0
            parts.append(t.slice(lo, hi - lo))
        return pa.concat_tables(parts)

    def read(self, start: int, stop: int) -> Rows:
        self._check_range(start, stop)
        return self._decode(self._table(start, stop), start, str(self._root))

    def describe(self) -> dict[str, Any]:
        files = sorted(p for p in self._root.iterdir() if p.suffix in (".arrow", ".json"))
        lines = [f.name for f in files if f.suffix == ".arrow"]
        content = [f"{f.name}\t{f.stat().st_size}" for f in files if f.suffix == ".arrow"]
        return {
            "content": _fingerprint(content),
            "kind": self.kind,
            "path": str(self._root.resolve()),
            "n_rows": self._n,
            "column": self.column,
            "id_column": self.id_column,
            "caption_column": self.caption_column,
            "shape": list(self.shape) if self.shape else None,
            "mode": self.mode,
            "fingerprint": _fingerprint(lines),
        }


def _detect_kind(path: str) -> str:
    if any(ch in path for ch in "*?["):
        if path.endswith(".parquet"):
            return "parquet"
        if path.endswith(".tar"):
            return "webdataset"
        raise ValueError(f"cannot tell the kind of data for glob {path!r}; pass kind='parquet' or kind='webdataset'")
    p = Path(path)
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return "hf"
        names = [q.name for q in p.iterdir() if q.is_file()]
        if any(n.endswith(".parquet") for n in names):
            return "parquet"
        if any(n.endswith(".tar") for n in names):
            return "webdataset"
        return "folder"
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            return "parquet"
        if suffix == ".tar":
            return "webdataset"
        if suffix in (".txt", ".lst", ".list"):
            return "list"
        raise ValueError(f"cannot tell the kind of data of {p.name!r}; pass kind= one of {', '.join(SOURCE_KINDS)}")
    raise ValueError(f"data path {path!r} does not exist")


def open_source(
    data: str | Path | DataSource,
    *,
    kind: str | None = None,
    column: str | None = None,
    id_column: str | None = None,
    shape: Sequence[int] | None = None,
    mode: str | None = None,
    caption_column: str | None = None,
) -> DataSource:
    """Open ``data`` as a :class:`DataSource` (kind detected from the path unless given).

    Parameters
    ----------
    data : str, Path or DataSource
        A folder of images, a list file (``.txt``), a ``.parquet`` file / folder / glob, a
        WebDataset ``.tar`` / folder / glob, or a folder written by ``Dataset.save_to_disk``.
        A :class:`DataSource` is returned unchanged.
    kind : {"folder", "list", "parquet", "webdataset", "hf"}, optional
        Overrides detection. Detection order for a folder: ``state.json`` -> hf, any
        ``.parquet`` -> parquet, any ``.tar`` -> webdataset, else a folder of images.
    column, id_column, shape, caption_column
        Parquet / Hugging Face only (see the module docstring).
    mode : {"L", "RGB"}, optional
        Colour mode images are converted to; default: that of the first image.
    """
    if isinstance(data, DataSource):
        return data
    if not isinstance(data, (str, Path)):
        raise TypeError(f"data must be a path or a DataSource; got {type(data).__name__}")
    path = str(data)
    kind = _detect_kind(path) if kind is None else check_choice(kind, "kind", SOURCE_KINDS)
    given = [(n, v) for n, v in (("column", column), ("id_column", id_column), ("shape", shape), ("caption_column", caption_column)) if v is not None]
    if kind in ("folder", "list", "webdataset") and given:
        raise ArgumentError(f"{given[0][0]}={given[0][1]!r} applies to parquet and hf data only, not to {path} (kind={kind!r}); "
                            "column, id_column, shape and caption_column read tables", argument=given[0][0])
    if kind == "folder":
        return ImageFolderSource(path, mode=mode)
    if kind == "list":
        return ImageListSource(path, mode=mode)
    if kind == "parquet":
        return ParquetSource(path, column=column, id_column=id_column, shape=shape, mode=mode, caption_column=caption_column)
    if kind == "webdataset":
        return WebDatasetSource(path, mode=mode)
    return HFDiskSource(path, column=column, id_column=id_column, shape=shape, mode=mode, caption_column=caption_column)
