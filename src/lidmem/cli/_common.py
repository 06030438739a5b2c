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
