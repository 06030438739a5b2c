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

__all__ = ["Section", "figure_to_html", "png_to_html", "table_to_html", "render_html_report", "write_html_report"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.92em}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
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


def figure_to_html(fig: Any, *, alt: str = "figure", dpi: int = 100) -> str:
    """Render a matplotlib figure to PNG, close it, and return an embedded ``<img>`` tag."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return png_to_html(buf.getvalue(), alt=alt)


def table_to_html(table: Any, *, float_format: str = "{:.3f}") -> str:
    """A pandas DataFrame (or a list of dict rows) as an HTML table, values escaped."""
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else float_format.format(v)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


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
