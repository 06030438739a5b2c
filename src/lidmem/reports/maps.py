"""Figure of memorization maps beside their samples and nearest training images."""

from __future__ import annotations

from typing import Any

import numpy as np

from .figures import _plt, _to_display

__all__ = ["map_grid"]


def map_grid(samples: np.ndarray, maps: np.ndarray, matches: np.ndarray, captions: list[str], *, ncols: int = 8) -> Any:
    """Triples of rows: generated samples, their memorization maps, their nearest training images.

    ``samples`` and ``matches`` have shape ``(m, c, h, w)`` in [-1, 1]; ``maps`` has shape
    ``(m, h, w)`` at pixel resolution (:func:`lidmem.estimators.to_pixel_map`). Maps are drawn
    with one colour scale per map from its minimum (dark: low LID, memorized) to its maximum
    (light). Returns a matplotlib Figure.
    """
    plt = _plt()
    m = len(samples)
    ncols = max(1, min(ncols, m))
    nrows = 3 * int(np.ceil(m / ncols)) if m else 3
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    grey = samples.shape[1] == 1 if m else True
    for i in range(m):
        r, c = 3 * (i // ncols), i % ncols
        axes[r, c].imshow(_to_display(samples[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r, c].set_title(captions[i], fontsize=6)
        axes[r + 1, c].imshow(np.asarray(maps[i], dtype=np.float64), cmap="magma")
        axes[r + 1, c].set_title(f"map min {float(np.min(maps[i])):.2f}", fontsize=6)
        axes[r + 2, c].imshow(_to_display(matches[i]), cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r + 2, c].set_title("train match", fontsize=6)
    fig.tight_layout()
    return fig
