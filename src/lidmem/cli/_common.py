"""Helpers shared by CLI commands: user-facing errors and console output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import sys
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr: styled on a terminal, else as ONE physical line
    (no wrapping at 80 columns, newlines folded) so that logs and ``grep`` see one record."""
    text = " ".join(str(message).split())
    if sys.stderr.isatty():
        console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)
    else:
        sys.stderr.write(f"error: {text}\n")
        sys.stderr.flush()


def _describe(exc: BaseException) -> str:
    """A one-line message for ``exc`` that names the file when the exception knows it."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None) and str(exc.filename) not in str(exc):
        return f"{exc.filename}: no such file or folder"
    reason = getattr(exc, "reason", None)  # urllib.error.URLError
    if reason is not None and type(exc).__name__ == "URLError":
        return f"cannot reach the endpoint: {reason}"
    return str(exc) or type(exc).__name__


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors into a one-line message and exit code 2.

    Caught: ValueError, TypeError (bad arguments and data), OSError (missing, unreadable or
    unwritable files, network errors such as ``URLError``) and EOFError (truncated files).
    Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (ValueError, TypeError, OSError, EOFError) as exc:
        print_error(_describe(exc))
        raise typer.Exit(code=2) from None


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with code 2."""
    print_error(message)
    raise typer.Exit(code=2)


def check_out(out: object, option: str = "--out", *, kind: str = "dir", suffixes: tuple[str, ...] | None = None) -> None:
    """Check an output location first, in every command (see :func:`lidmem._validation.check_output_path`)."""
    from .._validation import check_output_path

    check_output_path(out, option, kind=kind, suffixes=suffixes)


def check_device_option(device: str | None, option: str = "--device") -> None:
    """Check ``--device`` (name and availability) before any model is loaded."""
    if device is not None:
        from .._validation import check_device

        check_device(device, option)


def parse_lpca_tau(text: str, option: str = "--tau") -> str | float:
    """Parse a local-PCA threshold option: ``fo`` | ``percentile`` | a number >= 0
    (as :class:`lidmem.estimators.LocalPCA` takes ``tau``)."""
    if text in ("fo", "percentile"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}={text!r} must be 'fo', 'percentile' or a number >= 0") from None
    if not value >= 0:
        raise ValueError(f"{option}={text!r} must be >= 0")
    return value


def parse_lpca_radius(text: str, option: str = "--radius") -> str | float | None:
    """Parse a local-PCA neighbourhood restriction option: a radius >= 0 (0 = exact duplicates
    only) | ``percentile`` | ``none`` (as :class:`lidmem.estimators.LocalPCA` takes ``radius``)."""
    if text == "percentile":
        return text
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}={text!r} must be a number >= 0 (0 = exact duplicates only), 'percentile' or 'none'") from None
    if not value >= 0:
        raise ValueError(f"{option}={text!r} must be >= 0")
    return value
