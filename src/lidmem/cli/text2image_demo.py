"""CLI: (not implemented yet)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, demo_app: typer.Typer) -> None:
    """Add this module's commands to the lidmem app (or to lidmem demo)."""
