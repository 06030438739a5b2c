"""Self-contained HTML reports: one file, figures embedded as base64 PNG, no external assets.

Generic API (reused by every lidmem report)::

    from lidmem.reports.html import Section, write_html_report, figure_to_html, table_to_html
    sections = [Section("Detection", table_to_html(df)), Section("Histograms", figure_to_html(fig))]
    write_html_report("report.html", "My audit", sections)

matplotlib is imported only inside :func:`figure_to_html` callers' code (figures are built by
:mod:`lidmem.reports.figures` with the Agg backend).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Section", "figure_to_html", "png_to_html", "image_to_html", "table_to_html", "format_value", "settings_table",
    "render_html_report", "write_html_report",
]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.92em}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
img.px{image-rendering:pixelated;image-rendering:crisp-edges;border:1px solid #999;vertical-align:middle}
td.txt,th.txt{text-align:left;max-width:22em}td.img,th.img{text-align:center}figure{margin:.6em 0}figcaption{color:#555;font-size:.9em}
.scroll{overflow-x:auto}
"""


@dataclass
class Section:
    """One report section: a heading, HTML body, and an optional note under it (plain text)."""

    title: str
    body: str
    note: str | None = None


def png_to_html(png: bytes, *, alt: str = "figure") -> str:
    """An ``<img>`` tag embedding PNG bytes as base64."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def image_to_html(image: Any, *, scale: int = 8, alt: str = "image", value_range: tuple[float, float] = (-1.0, 1.0)) -> str:
    """One image ``(c, h, w)`` (c = 1 or 3, values in ``value_range``) as an embedded PNG shown
    ``scale`` times its size with crisp pixels (small images stay readable)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (c, h, w) with c in (1, 3); got {arr.shape}")
    lo, hi = value_range
    px = np.clip((arr - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)
    pil = Image.fromarray(px[0], mode="L") if px.shape[0] == 1 else Image.fromarray(px.transpose(1, 2, 0), mode="RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    h, w = arr.shape[1:]
    return f'<img class="px" alt="{html.escape(alt)}" width="{w * scale}" height="{h * scale}" src="data:image/png;base64,{data}">'


def format_value(v: Any, *, float_format: str = "{:.3f}") -> str:
    """A value as a table cell: integers without decimals, floats with ``float_format`` (NaN and
    None empty), booleans as yes/no, dicts as ``key: value`` lists, everything else as text."""
    import numpy as np

    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):d}"
    if isinstance(v, (float, np.floating)):
        return "" if v != v else float_format.format(float(v))
    if isinstance(v, dict):
        return ", ".join(f"{k}: {format_value(x, float_format=float_format)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x, float_format=float_format) for x in v)
    return str(v)


def _is_count_column(name: Any) -> bool:
    n = str(name).lower()
    return n == "n" or n.startswith("n_") or n.endswith("_count") or n.endswith("_counts")


def settings_table(settings: dict[str, Any]) -> str:
    """A (nested) settings dict as a two-column HTML table (``a.b`` keys for nested dicts)."""
    rows: list[dict[str, Any]] = []

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                rows.append({"setting": f"{prefix}{k}", "value": format_value(v, float_format="{:g}")})

    walk(settings, "")
    return table_to_html(rows)


def figure_to_html(fig: Any, *, alt: str = "figure", dpi: int = 100) -> str:
    """Render a matplotlib figure to PNG, close it, and return an embedded ``<img>`` tag."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return png_to_html(buf.getvalue(), alt=alt)


def table_to_html(table: Any, *, float_format: str = "{:.3f}", headers: dict[str, str] | None = None, raw_columns: tuple[str, ...] = ()) -> str:
    """A pandas DataFrame (or a list of dict rows) as an HTML table.

    Values go through :func:`format_value` and are escaped; count columns (``n``, ``n_*``,
    ``*_count``) are shown as integers even when pandas stored them as floats. ``headers``
    renames columns for display; ``raw_columns`` hold HTML inserted as is (e.g. images).
    """
    import numpy as np
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    headers = headers or {}

    def fmt(col: Any, v: Any) -> str:
        if col in raw_columns:
            return str(v)
        if _is_count_column(col) and isinstance(v, (float, np.floating)) and v == v and float(v).is_integer():
            v = int(v)
        return html.escape(format_value(v, float_format=float_format))

    def is_text(c: Any) -> bool:
        col = df[c]
        return c not in raw_columns and not pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and any(
            isinstance(v, str) for v in col)

    cls = {c: ' class="txt"' if is_text(c) else (' class="img"' if c in raw_columns else "") for c in df.columns}
    head = "".join(f"<th{cls[c]}>{html.escape(str(headers.get(c, c)))}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td{cls[c]}>{fmt(c, v)}</td>" for c, v in zip(df.columns, row)) + "</tr>" for row in df.itertuples(index=False)
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def render_html_report(title: str, sections: list[Section], *, subtitle: str | None = None) -> str:
    """The full HTML document as a string."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f"<p class='note'>{html.escape(subtitle)}</p>")
    for s in sections:
        if not isinstance(s, Section):
            raise TypeError(f"sections must hold lidmem.reports.html.Section objects; got {type(s).__name__}")
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            parts.append(f"<p class='note'>{html.escape(s.note)}</p>")
        parts.append(s.body)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html_report(path: str | Path, title: str, sections: list[Section], *, subtitle: str | None = None) -> Path:
    """Write a self-contained HTML report to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html_report(title, sections, subtitle=subtitle), encoding="utf-8")
    return path
