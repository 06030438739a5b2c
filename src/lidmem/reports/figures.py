"""matplotlib figures for memorization reports (Agg backend; figures are returned, not shown)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["histograms_by_label", "match_grid"]

_COLORS = {"exact_copy": "#d62728", "near_copy": "#ff7f0e", "none": "#1f77b4"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def histograms_by_label(df: Any, columns: list[str], *, label_column: str = "copy_label", bins: int = 30) -> Any:
    """One panel per column: histograms of its values per label (as the paper's Figure 5).

    Columns that are entirely NaN are skipped. Returns a matplotlib Figure.
    """
    plt = _plt()
    cols = [c for c in columns if c in df and np.isfinite(df[c].to_numpy(dtype=float)).any()]
    fig, axes = plt.subplots(1, max(len(cols), 1), figsize=(4.2 * max(len(cols), 1), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        vals = df[col].to_numpy(dtype=float)
        finite = vals[np.isfinite(vals)]
        edges = np.histogram_bin_edges(finite, bins=bins) if finite.size and np.ptp(finite) > 0 else bins
        for lab in sorted(df[label_column].unique(), key=lambda s: list(_COLORS).index(s) if s in _COLORS else 99):
            v = vals[(df[label_column] == lab).to_numpy() & np.isfinite(vals)]
            if v.size:
                ax.hist(v, bins=edges, alpha=0.55, label=f"{lab} (n={v.size})", color=_COLORS.get(lab), density=True)
        ax.set_title(col)
        ax.set_xlabel(col)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _to_display(img: np.ndarray) -> np.ndarray:
    img = np.clip((np.asarray(img, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def match_grid(samples: np.ndarray, matches: np.ndarray, captions: list[str], *, ncols: int = 8) -> Any:
    """Pairs of rows: generated samples (top) above their nearest training images (bottom).

    ``samples`` and ``matches`` have shape ``(m, c, h, w)`` in [-1, 1]; ``captions`` has ``m``
    strings shown above each sample. Returns a matplotlib Figure.
    """
    plt = _plt()
    m = len(samples)
    ncols = max(1, min(ncols, m))
    nrows = 2 * int(np.ceil(m / ncols)) if m else 2
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    grey = samples.shape[1] == 1 if m else True
    for i in range(m):
        r, c = 2 * (i // ncols), i % ncols
        axes[r, c].imshow(_to_display(samples[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r, c].set_title(captions[i], fontsize=6)
        axes[r + 1, c].imshow(_to_display(matches[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r + 1, c].set_title("train match", fontsize=6)
    fig.tight_layout()
    return fig
