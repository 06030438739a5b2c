"""Small helpers shared across lidmem: broadcasting, chunking, progress bars, thread counts and
the shipped weights."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

__all__ = [
    "held_library_warnings",
    "append_dims", "flatten_batch", "chunk_slices", "progress", "progress_bar", "resolve_device", "set_threads",
    "DEFAULT_THREADS", "shipped_weights",
]

#: Default number of torch intra-op threads of the ``lidmem`` command line (``--threads``).
#: One thread: on a CPU shared with any other busy process, torch's default (one thread per core)
#: makes every parallel kernel wait for the slowest core, and lidmem's small models ran 9-30x
#: slower with 2 threads than with 1 on the 2-core machine under load
#: (``benchmarks/threads_under_load.py``); without load, 2 threads gain at most ~1.5x.
DEFAULT_THREADS = 1

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
    """Yield slices ``[i, i + chunk_size)`` covering ``range(n)``; one slice when ``chunk_size`` is None.

    Every caller passes its ``batch_size`` here, so a size below 1 is refused naming it (the
    backstop of the functions that do not check it themselves; never Python's ``range()`` error)."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        from ._validation import check_positive_int

        check_positive_int(chunk_size, "batch_size")
    if chunk_size is None or chunk_size >= n:
        yield slice(0, n)
        return
    for start in range(0, n, chunk_size):
        yield slice(start, min(start + chunk_size, n))


class _PlainProgress(tqdm):  # type: ignore[misc]
    """tqdm that prints plain lines (``desc: i/total (p%) after mm:ss``) instead of redrawing a
    bar: one every ``mininterval`` seconds, and a last one at the end if any was printed (loops
    shorter than ``mininterval`` print nothing). Readable in log files and CI output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_line: float | None = None
        self._lines = 0
        super().__init__(*args, **kwargs)
        self._last_line = time.monotonic()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:  # noqa: D102 - tqdm API
        if self._last_line is None:  # called from tqdm's constructor
            return True
        finished = self.total is not None and self.n >= self.total
        now = time.monotonic()
        if finished and self._lines and self._last_line != float("inf"):
            due = True
        else:
            due = not finished and now - self._last_line >= self.mininterval
        if not due:
            return True
        self._last_line = float("inf") if finished else now
        self._lines += 1
        total = f"/{self.total} ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        elapsed = self.format_interval(self.format_dict["elapsed"])
        self.fp.write(f"{self.desc or 'progress'}: {self.n}{total} after {elapsed}\n")
        self.fp.flush()
        return True

    def close(self) -> None:  # noqa: D102 - tqdm API
        if not self.disable and self._last_line is not None:
            self.display()
        import io

        self.fp = io.StringIO()  # tqdm's own newline / carriage return at close goes nowhere
        super().close()


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    disable: bool | None = None,
    leave: bool = False,
) -> Any:
    """The one progress-bar factory of lidmem (every loop with a bar goes through it).

    ``disable=None`` (the default): a tqdm bar when stderr is an interactive terminal, otherwise
    plain lines (``desc: i/total (p%) after mm:ss``) at most every 30 s (set
    ``LIDMEM_PROGRESS_INTERVAL`` to change it, ``0`` prints every update), so that logs of long
    jobs run without a terminal still show progress. ``True`` hides it, ``False`` forces a bar.
    Usable as an iterator wrapper or, with ``total=``, manually (``.update(n)``, ``.close()``).
    """
    if disable is True:
        return tqdm(iterable, total=total, desc=desc, disable=True)
    if disable is None and not sys.stderr.isatty():
        interval = float(os.environ.get("LIDMEM_PROGRESS_INTERVAL", "30"))
        return _PlainProgress(iterable, total=total, desc=desc, mininterval=interval, miniters=1, file=sys.stderr, leave=True)
    return tqdm(iterable, total=total, desc=desc, disable=False, leave=leave)


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str | None = None, disable: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a progress bar (:func:`progress_bar`).

    ``disable=None`` (the default) shows a bar on an interactive terminal and periodic plain lines
    otherwise; ``True`` hides it, ``False`` forces a bar.
    """
    return progress_bar(iterable, total=total, desc=desc, disable=disable)


def set_threads(n: int | None = DEFAULT_THREADS) -> int:
    """Set torch's intra-op thread count; returns the count now in effect.

    ``n=None`` or ``0`` keeps torch's default (one thread per core, or ``OMP_NUM_THREADS``).
    See :data:`DEFAULT_THREADS` for why the command line uses 1.
    """
    if n is None or n == 0:
        return torch.get_num_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"threads={n!r} must be an integer >= 1 (or 0 for torch's default); try --threads 1")
    torch.set_num_threads(n)
    return torch.get_num_threads()


def shipped_weights() -> dict[str, Path]:
    """Installed paths of the weights that ship inside the package, by name.

    ``vonmises`` and ``digits_unet`` are lidmem score-model checkpoints (``lidmem mmh --model``,
    ``lidmem audit --model``), ``digits_generator`` a VAE decoder (``lidmem audit --model``),
    ``text2image`` a diffusers pipeline folder (``lidmem t2i ... --model``). Paths that are
    missing from the installation are left out.
    """
    from importlib.resources import files

    root = Path(str(files("lidmem") / "weights"))
    names = {
        "vonmises": root / "vonmises.safetensors",
        "digits_unet": root / "digits_unet.safetensors",
        "digits_generator": root / "digits_generator.safetensors",
        "text2image": root / "text2image",
    }
    return {k: v for k, v in names.items() if v.exists()}


def resolve_device(device: str | torch.device | None, module: torch.nn.Module | None = None) -> torch.device:
    """Return ``device`` (checked: :func:`lidmem._validation.check_device`) or, when None, the
    device of ``module``'s first parameter (CPU if none)."""
    if device is not None:
        from ._validation import check_device

        return check_device(device)
    if module is not None:
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


#: Loggers of the model libraries whose records :func:`held_library_warnings` holds back.
LIBRARY_LOGGERS = ("diffusers", "transformers", "huggingface_hub")


class _Hold(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def held_library_warnings() -> Iterator[None]:
    """Hold back the warnings (``warnings.warn``) and the log records of diffusers, transformers
    and huggingface_hub while a model loads. If loading succeeds they are replayed afterwards,
    as they would have been shown; if it fails they are dropped, so that the error is the one
    message a caller (the CLI's single ``error:`` line) shows, never preceded by library noise."""
    hold = _Hold()
    saved = []
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.propagate))
        lg.handlers = [hold]
        lg.propagate = False
    failed = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
        failed = False
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate
    if not failed:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for record in hold.records:
            logging.getLogger(record.name).handle(record)
