"""Render report.html files to PNG screenshots with headless Chromium (for docs/screenshots/).

Finds every ``report.html`` under the given folders (or takes the files given), and writes
``<out>/<name>.png`` where ``name`` is the report's path relative to its folder with ``/``
replaced by ``_`` (e.g. ``out/digits/unet/report.html`` -> ``unet.png`` when run on out/digits).
Chromium is Debian's ``chromium`` package (``apt-get install chromium``); without it the script
says so and exits 0 (it is a documentation helper, not a test CI relies on).

Usage::

    lidmem demo digits --out out/digits && lidmem demo text2image --out out/t2i
    python scripts/screenshot_reports.py out/digits out/t2i --out docs/screenshots [--width 1200 --height 3000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(chromium: str, html: Path, png: Path, *, width: int, height: int, timeout: float = 120.0) -> None:
    """Render ``html`` at ``width`` x ``height`` CSS pixels into ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed on {html} (exit {proc.returncode}): {proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="report.html files or folders to search")
    p.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=3000, help="page height rendered (the screenshot is cut there)")
    p.add_argument("--prefix", default="", help="prefix of the PNG names")
    args = p.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("chromium not found (apt-get install chromium); no screenshots taken", file=sys.stderr)
        return 0
    jobs: list[tuple[Path, str]] = []
    for path in args.paths:
        if path.is_dir():
            for html in sorted(path.rglob("report.html")):
                rel = html.parent.relative_to(path)
                name = "_".join(rel.parts) if rel.parts else path.name
                jobs.append((html, name))
        elif path.is_file():
            jobs.append((path, path.parent.name))
        else:
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    if not jobs:
        print("error: no report.html found", file=sys.stderr)
        return 2
    for html, name in jobs:
        png = args.out / f"{args.prefix}{name}.png"
        screenshot(chromium, html, png, width=args.width, height=args.height)
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
