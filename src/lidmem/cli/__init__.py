"""Command-line interface (``lidmem``)."""
