"""Helpers shared by CLI commands: user-facing errors and console output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

console = Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn ValueError/TypeError/FileNotFoundError from the library into a one-line message and exit code 2."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with code 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


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
